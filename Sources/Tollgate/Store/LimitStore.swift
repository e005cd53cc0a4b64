/// Where counters live. The in-memory store is the embedded default; the Redis store shares counters
/// between every gateway and sidecar replica.
public protocol LimitStore: Sendable {
    /// Evaluates every limit of `plan` for `partition` and, when all enforced limits admit, consumes
    /// `cost` from each of them atomically. A cost of 0 reads without consuming.
    func check(_ plan: Plan, partition: Partition, cost: Int) async throws -> Decision

    /// Every limit of `plan` for `partition` as it stands, read without consuming and without any
    /// failure policy or cache answering instead of the store: what an operator is shown.
    func usage(_ plan: Plan, partition: Partition) async throws -> Decision

    /// Puts the limits of `plan` at `limits` (indices into `plan.limits`) back to untouched for
    /// `partition`: the next request finds them full. Limits of the organization scope are shared by
    /// every key of the organization.
    func reset(_ plan: Plan, partition: Partition, limits: Set<Int>) async throws
}

extension LimitStore {
    /// A check of cost 0, which reads without consuming.
    public func usage(_ plan: Plan, partition: Partition) async throws -> Decision {
        try await check(plan, partition: partition, cost: 0)
    }

    /// Stores that keep no counters of their own have nothing to reset; others must implement it.
    public func reset(_ plan: Plan, partition: Partition, limits: Set<Int>) async throws {
        throw LimiterError(.unsupported, "this store cannot reset counters")
    }
}

/// A store that decides without suspending (the in-memory store): a caller on an event loop can check
/// in line, without a task.
public protocol SynchronousLimitStore: LimitStore {
    /// `check`, answered at once.
    func checkNow(_ plan: Plan, partition: Partition, cost: Int) throws(LimiterError) -> Decision
}

/// Errors a limiter reports to its caller.
public struct LimiterError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kind of failure, extensible without breaking callers.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        let name: String
        public var description: String { name }
        /// The cost is negative.
        public static let invalidCost = Code(name: "invalidCost")
        /// The store could not answer (connection lost, timeout, overload, bad reply).
        public static let storeUnavailable = Code(name: "storeUnavailable")
        /// The store answered with something that is not a valid state.
        public static let badReply = Code(name: "badReply")
        /// The store does not offer the operation.
        public static let unsupported = Code(name: "unsupported")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
