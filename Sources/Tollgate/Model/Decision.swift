/// The result of evaluating one limit of a plan for one request.
public struct LimitResult: Sendable, Equatable {
    // Stored narrow and in this order, without padding, so that a result takes 48 bytes rather than 64:
    // a decision holds eight.
    @usableFromInline var storedIndex: Int32

    /// The limit's position in `Plan.limits`; its name, quota and scope are there.
    public var index: Int {
        get { Int(storedIndex) }
        set { storedIndex = Int32(newValue) }
    }
    /// Whether this limit, on its own, admits the request.
    public var admits: Bool
    /// The request costs more than this limit can ever admit.
    public var exceedsCapacity: Bool
    /// Shadow limits are reported but never deny.
    public var shadow: Bool
    /// The limit's quota (capacity or limit per window).
    public var quota: Int64
    /// The window the quota is counted over, in microseconds: the period of a fixed window or calendar
    /// quota (the current one, for months), the sliding window, or a token bucket's time to refill from empty.
    public var windowMicroseconds: Int64
    /// Quota left after this request (if the request was admitted) or now (if it was denied).
    public var remaining: Int64
    /// Microseconds until more than `remaining` is available; 0 when the limit is untouched.
    public var resetAfterMicroseconds: Int64
    /// `retryAfterMicroseconds`, with `never` for nil.
    @usableFromInline var storedRetryAfter: Int64
    @usableFromInline static var never: Int64 { .min }
    /// Microseconds until this limit would admit the same request: 0 if it does now, nil if it never will.
    public var retryAfterMicroseconds: Int64? {
        get { storedRetryAfter == Self.never ? nil : storedRetryAfter }
        set { storedRetryAfter = newValue ?? Self.never }
    }

    @inlinable
    public init(
        index: Int, admits: Bool, exceedsCapacity: Bool, shadow: Bool, quota: Int64, windowMicroseconds: Int64,
        remaining: Int64, resetAfterMicroseconds: Int64, retryAfterMicroseconds: Int64?
    ) {
        storedIndex = Int32(index)
        self.admits = admits
        self.exceedsCapacity = exceedsCapacity
        self.shadow = shadow
        self.quota = quota
        self.windowMicroseconds = windowMicroseconds
        self.remaining = remaining
        self.resetAfterMicroseconds = resetAfterMicroseconds
        storedRetryAfter = retryAfterMicroseconds ?? Self.never
    }
}

extension LimitResult {
    /// The result of limit `index` as `evaluation` says it.
    @inline(__always)
    init(index: Int, spec: LimitSpec, evaluation: Evaluation) {
        self.init(
            index: index, admits: evaluation.admits, exceedsCapacity: evaluation.exceedsCapacity, shadow: spec.shadow,
            quota: spec.capacity, windowMicroseconds: evaluation.window, remaining: evaluation.remaining,
            resetAfterMicroseconds: evaluation.resetAfter,
            retryAfterMicroseconds: evaluation.retryAfter < 0 ? nil : evaluation.retryAfter)
    }
}

/// Whether a request may pass, and what every limit of its plan said about it.
///
/// All or nothing: `isAllowed` is true only when every enforced limit admits; a denied request has
/// consumed nothing from any limit.
public struct Decision: Sendable {
    /// Why a request was refused.
    public enum Denial: Sendable, Equatable {
        /// At least one enforced limit has no room now; retry after `retryAfterMicroseconds`.
        case limited
        /// The cost exceeds an enforced limit's capacity: no wait will help.
        case costExceedsCapacity
        /// The store could not answer and its failure policy is to deny (an HTTP service answers 503).
        case storeUnavailable
    }

    /// Who took the decision.
    public enum Origin: String, Sendable, Equatable {
        /// The store evaluated the limits.
        case store
        /// A recent refusal, remembered in process, answered without asking the store.
        case denyCache
        /// The store failed and the failure policy let the request through unchecked.
        case failOpen
        /// The store failed and the failure policy refused the request.
        case failClosed
        /// The store failed and the in-process limiter decided instead.
        case localFallback
    }

    /// True when the request was admitted (and counted).
    public var isAllowed: Bool { denial == nil }
    /// Why it was refused, or nil when admitted.
    public var denial: Denial?
    /// The earliest delay after which the same request would be admitted; nil when admitted or never.
    public var retryAfterMicroseconds: Int64?
    /// The instant the decision was taken at, in microseconds since the epoch (store time).
    public var instant: Int64
    /// Who took the decision; `.store` unless a cache or a failure policy answered.
    public var origin: Origin = .store

    @usableFromInline var storage: InlineArray<8, LimitResult>
    @usableFromInline var storedCount: Int

    @inlinable
    init(instant: Int64) {
        self.instant = instant
        // All zero bits, the cheapest to write: only the first `storedCount` results are ever read.
        storage = InlineArray(repeating: LimitResult(
            index: 0, admits: false, exceedsCapacity: false, shadow: false, quota: 0, windowMicroseconds: 0,
            remaining: 0, resetAfterMicroseconds: 0, retryAfterMicroseconds: 0))
        storedCount = 0
    }

    /// Assembles a decision from per-limit results (used by stores that evaluate elsewhere, such as Redis).
    /// The verdict follows the all-or-nothing rule over the enforced results.
    public init(instant: Int64, results: some Sequence<LimitResult>) {
        self.init(instant: instant)
        for result in results { append(result) }
        settle()
    }

    mutating func append(_ result: LimitResult) {
        storage[storedCount] = result
        storedCount &+= 1
    }

    /// A decision taken without evaluating any limit: the failure policy's answer.
    public static func unchecked(instant: Int64, origin: Origin, retryAfterMicroseconds: Int64? = nil) -> Decision {
        var decision = Decision(instant: instant)
        decision.origin = origin
        if origin == .failClosed {
            decision.denial = .storeUnavailable
            decision.retryAfterMicroseconds = retryAfterMicroseconds
        }
        return decision
    }

    /// Derives the verdict and retry-after from the per-limit results.
    @inline(__always)
    mutating func settle() {
        var denial: Denial?
        var retry: Int64 = 0
        for i in 0..<storedCount {
            let result = storage[i]
            if result.shadow || result.admits { continue }
            if result.exceedsCapacity {
                denial = .costExceedsCapacity
            } else if denial == nil {
                denial = .limited
            }
            retry = max(retry, result.retryAfterMicroseconds ?? 0)
        }
        self.denial = denial
        retryAfterMicroseconds = denial == .limited ? retry : nil
    }

    /// The per-limit results, in plan order.
    public var results: Results { Results(decision: self) }

    /// The limits that refused the request (enforced ones only).
    public var violated: [LimitResult] { results.filter { !$0.admits && !$0.shadow } }

    /// A random-access view of the per-limit results.
    public struct Results: RandomAccessCollection, Sendable {
        let decision: Decision
        public var startIndex: Int { 0 }
        public var endIndex: Int { decision.storedCount }
        public subscript(position: Int) -> LimitResult { decision.storage[position] }
    }
}
