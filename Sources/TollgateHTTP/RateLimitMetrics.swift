import Metrics
import Synchronization
import Tollgate

/// The rate limiter's metrics (swift-metrics; exported by whatever backend the caller passes or bootstraps).
///
/// - `tollgate_checks_total{plan, outcome, origin}`: every limit check, by plan, its `outcome` (`allowed`,
///   `limited`, `cost_exceeds_capacity`, `store_unavailable`) and `origin`: who answered (`store`,
///   `denyCache`, `failOpen`, `failClosed`, `localFallback` — the store's failure mode at work).
/// - `tollgate_decisions_total{plan, limit, outcome}`: every limit of every check, by whether that limit
///   admitted the request (`allowed`) or not (`denied`); shadow limits included, so a shadow limit's
///   would-be refusals show here before it is enforced.
/// - `tollgate_limit_refusals_total{plan, limit}`: refused requests, by each enforced limit that refused
///   them (a request refused by two limits counts under both).
/// - `tollgate_near_limit_total{plan, limit}`: admitted requests that left an enforced limit with less
///   than 20 % of its quota (as Envoy's `near_limit`): a customer about to be limited.
/// - `tollgate_deny_cache_hits_total`: refusals answered from the deny cache without asking the store.
/// - `tollgate_store_check_duration_seconds`: time of each check, whatever the store (a histogram).
/// - `tollgate_store_errors_total`: checks that threw (answered 503).
/// - `tollgate_refusals_total{reason}`: requests refused before any check: `missing_key`,
///   `malformed_key`, `unknown_key`, `revoked_key`, `expired_key`, `registry_unavailable`,
///   `insufficient_scope`, `other_organization`, `unknown_plan`, `not_found`, `bad_request`, `body_too_large`.
final class RateLimitMetrics: Sendable {
    private let factory: any MetricsFactory
    /// The series of each plan in use, by the identity of its compiled form (which the entry keeps alive).
    private let plans = Mutex<[ObjectIdentifier: PlanSeries]>([:])
    private let refusals = Mutex<[String: Counter]>([:])
    let storeLatency: Timer
    let denyCacheHits: Counter
    let storeErrors: Counter

    init(factory: any MetricsFactory) {
        self.factory = factory
        storeLatency = Timer(label: "tollgate_store_check_duration_seconds", dimensions: [], factory: factory)
        denyCacheHits = Counter(label: "tollgate_deny_cache_hits_total", dimensions: [], factory: factory)
        storeErrors = Counter(label: "tollgate_store_errors_total", dimensions: [], factory: factory)
    }

    static let outcomes = ["allowed", "limited", "cost_exceeds_capacity", "store_unavailable"]
    static let origins: [Decision.Origin] = [.store, .denyCache, .failOpen, .failClosed, .localFallback]

    /// One plan's counters, each made the first time it counts (a series appears once it has happened).
    /// The backends' own lookups take a lock and build strings, so they are made once and kept here.
    private final class PlanSeries {
        let compiled: AnyObject
        /// `tollgate_checks_total`, at `outcome * origins.count + origin`.
        var checks: [Counter?]
        /// `tollgate_decisions_total`, at `limit * 2` (allowed) and `limit * 2 + 1` (denied).
        var decisions: [Counter?]
        /// `tollgate_limit_refusals_total` and `tollgate_near_limit_total`, at the limit's index.
        var refusals: [Counter?]
        var nearLimit: [Counter?]

        init(_ plan: Plan) {
            refusals = Array(repeating: nil, count: plan.limits.count)
            nearLimit = Array(repeating: nil, count: plan.limits.count)
            compiled = plan.compiled
            checks = Array(repeating: nil, count: RateLimitMetrics.outcomes.count * RateLimitMetrics.origins.count)
            decisions = Array(repeating: nil, count: plan.limits.count * 2)
        }

        /// Increments the `label` counter of limit `index`, made on first use.
        func count(_ table: inout [Counter?], _ index: Int, _ label: String, plan: Plan, factory: any MetricsFactory) {
            if table[index] == nil {
                table[index] = Counter(label: label, dimensions: [("plan", plan.name), ("limit", plan.limits[index].name)], factory: factory)
            }
            table[index]!.increment()
        }
    }

    func record(_ decision: Decision, plan: Plan) {
        let outcome =
            switch decision.denial {
            case nil: 0
            case .limited: 1
            case .costExceedsCapacity: 2
            case .storeUnavailable: 3
            }
        let origin = Self.origins.firstIndex(of: decision.origin) ?? 0
        let factory = self.factory
        plans.withLock { plans in
            let id = ObjectIdentifier(plan.compiled)
            let series: PlanSeries
            if let known = plans[id] {
                series = known
            } else {
                // Reloads bring new plans; past this many, the old ones' entries go (their series stay).
                if plans.count >= 1_000 { plans.removeAll() }
                series = PlanSeries(plan)
                plans[id] = series
            }
            let check = outcome * Self.origins.count + origin
            if series.checks[check] == nil {
                series.checks[check] = Counter(
                    label: "tollgate_checks_total",
                    dimensions: [("plan", plan.name), ("outcome", Self.outcomes[outcome]), ("origin", decision.origin.rawValue)],
                    factory: factory)
            }
            series.checks[check]!.increment()
            for result in decision.results {
                let slot = result.index * 2 + (result.admits ? 0 : 1)
                if series.decisions[slot] == nil {
                    series.decisions[slot] = Counter(
                        label: "tollgate_decisions_total",
                        dimensions: [
                            ("plan", plan.name), ("limit", plan.limits[result.index].name),
                            ("outcome", result.admits ? "allowed" : "denied"),
                        ],
                        factory: factory)
                }
                series.decisions[slot]!.increment()
                guard !result.shadow, decision.origin != .failOpen else { continue }
                if !result.admits {
                    series.count(&series.refusals, result.index, "tollgate_limit_refusals_total", plan: plan, factory: factory)
                } else if decision.isAllowed, result.remaining * 5 < result.quota {
                    series.count(&series.nearLimit, result.index, "tollgate_near_limit_total", plan: plan, factory: factory)
                }
            }
        }
        if decision.origin == .denyCache { denyCacheHits.increment() }
    }

    func refused(_ reason: String) {
        let factory = self.factory
        refusals.withLock { table in
            if let counter = table[reason] { return counter }
            let counter = Counter(label: "tollgate_refusals_total", dimensions: [("reason", reason)], factory: factory)
            table[reason] = counter
            return counter
        }.increment()
    }
}

extension Timer {
    /// Records a `Duration` in nanoseconds.
    func record(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
