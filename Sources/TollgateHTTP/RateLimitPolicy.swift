import Tollgate

/// Everything the rate limiter decides with that comes from configuration: the plans, the route rules,
/// what happens to unmatched requests and which headers to send. A value: the sidecar swaps in a new one
/// on reload while requests in flight finish with the old.
public struct RateLimitPolicy: Sendable {
    public let plans: [Plan]
    public let routes: RouteTable
    /// Also send `X-RateLimit-Limit/-Remaining/-Reset`.
    public let legacyHeaders: Bool

    /// Each plan, and its per-scope parts for routes that apply only some of its limits.
    let variants: [String: PlanVariants]

    public init(plans: [Plan], routes: [RouteSettings] = [], unmatched: UnmatchedRoutes = .pass, legacyHeaders: Bool = false) {
        self.plans = plans
        self.routes = RouteTable(routes: routes, unmatched: unmatched)
        self.legacyHeaders = legacyHeaders
        var variants: [String: PlanVariants] = [:]
        for plan in plans { variants[plan.name] = PlanVariants(plan) }
        self.variants = variants
    }

    /// The plans, routes, unmatched rule and header switch of a configuration file.
    public init(configuration: TollgateConfiguration) {
        self.init(
            plans: configuration.plans, routes: configuration.sidecar.routes,
            unmatched: configuration.sidecar.unmatched, legacyHeaders: configuration.sidecar.server.legacyHeaders)
    }

    /// The plan a request is checked against: `name`'s limits narrowed to `selection`. Nil when there is
    /// no such plan; `.some(nil)` when the selection leaves no limit (nothing to check).
    public func plan(named name: String, selection: RouteSettings.LimitSelection = .all) -> Plan?? {
        guard let variants = variants[name] else { return nil }
        switch selection {
        case .all: return .some(variants.all)
        case .key: return .some(variants.key)
        case .organization: return .some(variants.organization)
        case .none: return .some(nil)
        }
    }
}

/// A plan and the plans made of only its per-key or only its organization-wide limits.
///
/// Narrowing by scope, not by limit name, is what keeps counters shared between routes: the stores keep
/// all limits of one scope of a plan together (one entry in memory, keys named after each limit's
/// definition in Redis), so a plan made of exactly those limits counts on the very same counters.
struct PlanVariants: Sendable {
    let all: Plan
    let key: Plan?
    let organization: Plan?

    init(_ plan: Plan) {
        all = plan
        key = Self.narrowed(plan, to: .apiKey)
        organization = Self.narrowed(plan, to: .organization)
    }

    static func narrowed(_ plan: Plan, to scope: LimitScope) -> Plan? {
        let limits = plan.limits.filter { $0.scope == scope }
        if limits.count == plan.limits.count { return plan }
        guard !limits.isEmpty else { return nil }
        return try? Plan(name: plan.name, timeZone: plan.timeZone, limits: limits)
    }
}
