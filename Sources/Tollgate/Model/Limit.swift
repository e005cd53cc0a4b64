/// Whose usage a limit counts: each API key on its own, or all keys of an organization together.
public enum LimitScope: String, Sendable, Hashable, CaseIterable {
    case apiKey = "key"
    case organization = "organization"
}

/// A calendar period for quotas that reset at calendar boundaries in the plan's time zone.
public enum CalendarUnit: String, Sendable, Hashable, CaseIterable {
    case minute, hour, day, week, month
}

/// The counting rule of one limit and its numbers.
public enum LimitAlgorithm: Sendable, Hashable {
    /// A bucket of `capacity` tokens refilled continuously at `refillTokens` per `refillPeriod` microseconds.
    case tokenBucket(capacity: Int64, refillTokens: Int64, refillPeriod: Int64)
    /// Exactly the cost admitted during the last `window` microseconds may not exceed `limit`.
    case slidingLog(limit: Int64, window: Int64)
    /// The weighted two-window estimate: previous window's count scaled by its overlap, plus the current one.
    case slidingCounter(limit: Int64, window: Int64)
    /// At most `limit` per window of `window` microseconds, windows aligned to the Unix epoch.
    case fixedWindow(limit: Int64, window: Int64)
    /// At most `limit` per calendar unit, aligned to the plan's time zone.
    case calendar(limit: Int64, unit: CalendarUnit)

    /// The configuration name of the algorithm.
    public var kind: String {
        switch self {
        case .tokenBucket: "token_bucket"
        case .slidingLog: "sliding_log"
        case .slidingCounter: "sliding_window"
        case .fixedWindow: "fixed_window"
        case .calendar: "calendar"
        }
    }

    /// The most a single request may cost and still pass on an untouched limit.
    public var capacity: Int64 {
        switch self {
        case .tokenBucket(let capacity, _, _): capacity
        case .slidingLog(let limit, _), .slidingCounter(let limit, _), .fixedWindow(let limit, _),
            .calendar(let limit, _):
            limit
        }
    }
}

/// One named limit of a plan.
public struct Limit: Sendable, Hashable {
    /// The policy name shown in `RateLimit-Policy` and in denials; unique within its plan.
    public var name: String
    /// How the limit counts.
    public var algorithm: LimitAlgorithm
    /// Whose usage it counts.
    public var scope: LimitScope
    /// A shadow limit is evaluated and reported but never denies.
    public var shadow: Bool

    public init(name: String, algorithm: LimitAlgorithm, scope: LimitScope = .apiKey, shadow: Bool = false) {
        self.name = name
        self.algorithm = algorithm
        self.scope = scope
        self.shadow = shadow
    }

    /// The most a single request may cost.
    public var capacity: Int64 { algorithm.capacity }
}
