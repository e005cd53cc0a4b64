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
/// - `tollgate_deny_cache_hits_total`: refusals answered from the deny cache without asking the store.
/// - `tollgate_store_check_duration_seconds`: time of each check, whatever the store (a histogram).
/// - `tollgate_store_errors_total`: checks that threw (answered 503).
/// - `tollgate_refusals_total{reason}`: requests refused before any check: `missing_key`,
///   `malformed_key`, `unknown_key`, `revoked_key`, `expired_key`, `registry_unavailable`,
///   `insufficient_scope`, `other_organization`, `unknown_plan`, `not_found`, `bad_request`, `body_too_large`.
final class RateLimitMetrics: Sendable {
    private let factory: any MetricsFactory
    private let counters = Mutex<[String: Counter]>([:])
    let storeLatency: Timer
    let denyCacheHits: Counter
    let storeErrors: Counter

    init(factory: any MetricsFactory) {
        self.factory = factory
        storeLatency = Timer(label: "tollgate_store_check_duration_seconds", dimensions: [], factory: factory)
        denyCacheHits = Counter(label: "tollgate_deny_cache_hits_total", dimensions: [], factory: factory)
        storeErrors = Counter(label: "tollgate_store_errors_total", dimensions: [], factory: factory)
    }

    /// One counter per label set, made once: the backends' own lookups take a lock and build strings.
    private func counter(_ label: String, _ dimensions: [(String, String)]) -> Counter {
        let key = label + "|" + dimensions.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
        return counters.withLock { table in
            if let counter = table[key] { return counter }
            // A label set per plan, limit and outcome: bounded by the configuration, but a reload that
            // keeps renaming plans would grow it; past this, old series are dropped from the cache only.
            if table.count > 10_000 { table.removeAll() }
            let counter = Counter(label: label, dimensions: dimensions, factory: factory)
            table[key] = counter
            return counter
        }
    }

    func record(_ decision: Decision, plan: Plan) {
        let outcome =
            switch decision.denial {
            case nil: "allowed"
            case .limited: "limited"
            case .costExceedsCapacity: "cost_exceeds_capacity"
            case .storeUnavailable: "store_unavailable"
            }
        counter(
            "tollgate_checks_total",
            [("plan", plan.name), ("outcome", outcome), ("origin", decision.origin.rawValue)]
        ).increment()
        if decision.origin == .denyCache { denyCacheHits.increment() }
        for result in decision.results {
            counter(
                "tollgate_decisions_total",
                [("plan", plan.name), ("limit", plan.limits[result.index].name), ("outcome", result.admits ? "allowed" : "denied")]
            ).increment()
        }
    }

    func refused(_ reason: String) {
        counter("tollgate_refusals_total", [("reason", reason)]).increment()
    }
}

extension Timer {
    /// Records a `Duration` in nanoseconds.
    func record(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
