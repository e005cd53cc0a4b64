import Logging
import Metrics
import NIOCore
import Synchronization
import Tollgate

/// Limits kept in Redis, shared by every gateway and sidecar replica: each check is one `EVALSHA` that
/// evaluates all limits of the request atomically against Redis' own clock.
///
/// When Redis fails or a check runs out of time (the client's `commandTimeout` is the budget), the
/// `failurePolicy` answers: `deny` (the decision is refused with `.storeUnavailable` and a retry-after),
/// `allow` (admitted unchecked) or `local` (an in-process `MemoryStore` decides for the duration). A
/// circuit breaker makes a dead Redis cost at most one failed call per probe interval rather than one per
/// request; it closes again as soon as a probe succeeds. Recent refusals are answered from a bounded
/// in-process deny cache until their retry instant (see `DenyCache`).
///
/// Run `client.run()` in a task for as long as the store is used (the client keeps its connections).
public final class RedisLimitStore: LimitStore {
    /// What the store does when Redis cannot answer in time.
    public enum FailurePolicy: String, Sendable, CaseIterable {
        /// Refuse: the caller answers 503 with `Retry-After`.
        case deny
        /// Let the request through unchecked.
        case allow
        /// Decide in process with the same plans until Redis is back.
        case local
    }

    /// Behaviour on failure and the deny cache.
    ///
    /// | field | default | meaning |
    /// | --- | --- | --- |
    /// | `failurePolicy` | `.deny` | what answers when Redis fails or is too slow |
    /// | `unavailableRetryAfter` | 1 s | the retry-after of a `.deny` answer |
    /// | `breakerFailureThreshold` | 3 | consecutive failures that open the circuit |
    /// | `breakerProbeInterval` | 1 s | while open, one probe per interval; the rest fail at once |
    /// | `denyCache` | true | answer recent refusals in process until their retry instant |
    /// | `denyCacheCapacity` | 100,000 | most refusals remembered |
    /// | `localFallback` | `MemoryStore.Configuration()` | sizing of the `.local` limiter |
    public struct Configuration: Sendable {
        public var failurePolicy: FailurePolicy
        public var unavailableRetryAfter: Duration
        public var breakerFailureThreshold: Int
        public var breakerProbeInterval: Duration
        public var denyCache: Bool
        public var denyCacheCapacity: Int
        public var localFallback: MemoryStore.Configuration

        public init(
            failurePolicy: FailurePolicy = .deny, unavailableRetryAfter: Duration = .seconds(1),
            breakerFailureThreshold: Int = 3, breakerProbeInterval: Duration = .seconds(1), denyCache: Bool = true,
            denyCacheCapacity: Int = 100_000, localFallback: MemoryStore.Configuration = .init()
        ) {
            self.failurePolicy = failurePolicy
            self.unavailableRetryAfter = unavailableRetryAfter
            self.breakerFailureThreshold = breakerFailureThreshold
            self.breakerProbeInterval = breakerProbeInterval
            self.denyCache = denyCache
            self.denyCacheCapacity = denyCacheCapacity
            self.localFallback = localFallback
        }
    }

    public let client: RedisClient
    public let configuration: Configuration
    private let clock: any LimiterClock
    private let logger: Logger
    private let breaker: Mutex<CircuitBreaker>
    private let denyCache: DenyCache?
    private let fallback: MemoryStore
    private let scriptSHA = Mutex<String?>(nil)
    private let limitIDs = Mutex<[ObjectIdentifier: [String]]>([:])
    private let metrics: StoreMetrics

    /// - Parameters:
    ///   - client: the Redis client; its `commandTimeout` is each check's time budget.
    ///   - clock: the local clock for the breaker and the deny cache (decisions use Redis' `TIME`).
    public init(
        client: RedisClient, configuration: Configuration = .init(), clock: any LimiterClock = SystemClock(),
        logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.client = client
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
        breaker = Mutex(
            CircuitBreaker(
                failureThreshold: configuration.breakerFailureThreshold,
                probeInterval: configuration.breakerProbeInterval.microseconds))
        denyCache = configuration.denyCache ? DenyCache(capacity: configuration.denyCacheCapacity) : nil
        fallback = MemoryStore(configuration: configuration.localFallback, clock: clock)
        metrics = StoreMetrics(factory: metricsFactory)
    }

    /// Loads the limit script. Optional: the first check loads it when needed, and a server that forgot
    /// it (restart, `SCRIPT FLUSH`) gets it again on `NOSCRIPT`.
    public func prepare() async throws {
        _ = try await sha()
    }

    private func sha() async throws(RedisClientError) -> String {
        if let sha = scriptSHA.withLock({ $0 }) { return sha }
        let sha = try await client.scriptLoad(LimitScript.source)
        scriptSHA.withLock { $0 = sha }
        return sha
    }

    public func check(_ plan: Plan, partition: Partition, cost: Int) async throws -> Decision {
        try await check(plan, partition: partition, cost: cost, at: nil)
    }

    /// The check, with an explicit instant in microseconds instead of Redis' `TIME` — for tests that
    /// compare stores at the same instants. Production code uses `check(_:partition:cost:)`.
    public func check(_ plan: Plan, partition: Partition, cost: Int, at instant: Int64?) async throws(LimiterError) -> Decision {
        guard cost >= 0 else { throw LimiterError(.invalidCost, "cost must be 0 or more, got \(cost)") }
        let sentAt = clock.now()
        let cacheKey = DenyCache.Key(plan: ObjectIdentifier(plan.compiled), partition: partition)
        if let denyCache, instant == nil, var cached = denyCache.lookup(cacheKey, cost: cost, now: sentAt) {
            cached.origin = .denyCache
            metrics.record(cached)
            return cached
        }
        let permission = breaker.withLock { $0.permission(now: sentAt) }
        if permission == .refuse {
            metrics.shortCircuits.increment()
            return try fallbackDecision(plan, partition: partition, cost: cost, now: sentAt)
        }
        do {
            let decision = try await evaluate(plan, partition: partition, cost: cost, instant: instant, callerClock: sentAt)
            breaker.withLock { $0.recordSuccess() }
            metrics.latency.recordNanoseconds((clock.now() - sentAt) * 1_000)
            if let denyCache, decision.denial == .limited {
                denyCache.record(cacheKey, cost: cost, sentAt: sentAt, decision: decision)
            }
            metrics.record(decision)
            return decision
        } catch where error.kind == .badReply {
            // Redis answered, so it is healthy: no circuit breaking, but the policy answers this request.
            metrics.errors(error.kind).increment()
            logger.error("Redis limit check got a bad reply", metadata: ["error": "\(error)"])
            return try fallbackDecision(plan, partition: partition, cost: cost, now: clock.now())
        } catch {
            let now = clock.now()
            let opened = breaker.withLock { breaker -> Bool in
                let wasOpen = breaker.isOpen
                breaker.recordFailure(now: now)
                return !wasOpen && breaker.isOpen
            }
            metrics.errors(error.kind).increment()
            if opened {
                logger.warning(
                    "Redis limit store failing; circuit open, failure policy \(configuration.failurePolicy.rawValue) applies",
                    metadata: ["error": "\(error)", "endpoint": "\(client.configuration.endpointDescription)"])
            } else {
                logger.debug("Redis limit check failed", metadata: ["error": "\(error)"])
            }
            return try fallbackDecision(plan, partition: partition, cost: cost, now: now)
        }
    }

    private func fallbackDecision(_ plan: Plan, partition: Partition, cost: Int, now: Int64) throws(LimiterError) -> Decision {
        var decision: Decision
        switch configuration.failurePolicy {
        case .deny:
            decision = .unchecked(
                instant: now, origin: .failClosed, retryAfterMicroseconds: configuration.unavailableRetryAfter.microseconds)
        case .allow:
            decision = .unchecked(instant: now, origin: .failOpen)
        case .local:
            decision = try fallback.checkNow(plan, partition: partition, cost: cost)
            decision.origin = .localFallback
        }
        metrics.record(decision)
        return decision
    }

    /// The store's own failure: what went wrong, without any key in it.
    struct Failure: Error, CustomStringConvertible {
        enum Kind: String { case timeout, connection, overloaded, badReply = "bad_reply", server }
        let kind: Kind
        let message: String
        var description: String { message }
    }

    private func evaluate(_ plan: Plan, partition: Partition, cost: Int, instant: Int64?, callerClock: Int64) async throws(Failure) -> Decision {
        let ids = limitIDs(for: plan)
        let hashTag = LimitKeys.hashTag(partition.organization)
        var invocation = ScriptInvocation(plan: plan, partition: partition, cost: cost, limitIDs: ids, now: instant, callerClock: callerClock)
        var clockRetried = false
        while true {
            do {
                let sha = try await sha()
                let reply = try await client.evalSHA(
                    sha, keys: invocation.keys.map { RedisArgument($0) }, args: invocation.arguments.map { RedisArgument($0) })
                do {
                    return try invocation.decision(from: reply.array?.map { $0.int64 ?? .min }, hashTag: hashTag)
                } catch {
                    throw Failure(kind: .badReply, message: error.message)
                }
            } catch let error as RedisClientError {
                let prefix = error.serverErrorPrefix
                if prefix == "TOLLGATE_CLOCK", !clockRetried, let redisNow = Self.clockInstant(error.message) {
                    // Redis' clock is in another calendar period than ours: send the periods around its now.
                    clockRetried = true
                    invocation = ScriptInvocation(plan: plan, partition: partition, cost: cost, limitIDs: ids, now: instant, callerClock: redisNow)
                    continue
                }
                if prefix == "TOLLGATE_BADSTATE" {
                    let name = Self.limitName(error.message, plan: plan, keys: invocation.keys)
                    throw Failure(
                        kind: .badReply,
                        message: "a Redis key under hash tag {\(hashTag)} for limit \(name) of plan \(plan.name) holds something "
                            + "that is not Tollgate state (another application's data, or a key of the wrong type)")
                }
                throw Failure(kind: Self.kind(of: error), message: "\(error)")
            } catch let error as Failure {
                throw error
            } catch {
                throw Failure(kind: .server, message: "\(error)")
            }
        }
    }

    private static func kind(of error: RedisClientError) -> Failure.Kind {
        switch error.code {
        case .timeout: .timeout
        case .overloaded: .overloaded
        case .serverError: .server
        case .protocolError: .badReply
        default: .connection
        }
    }

    private static func clockInstant(_ message: String) -> Int64? {
        guard let range = message.range(of: "TOLLGATE_CLOCK ") else { return nil }
        return Int64(message[range.upperBound...].prefix { $0.isNumber })
    }

    private static func limitName(_ message: String, plan: Plan, keys: [String]) -> String {
        guard let range = message.range(of: "TOLLGATE_BADSTATE "),
            let keyIndex = Int(message[range.upperBound...].prefix { $0.isNumber })
        else { return "(unknown)" }
        // Keys are laid out in plan order, a sliding log taking two.
        var index = 0
        for (limitIndex, limit) in plan.limits.enumerated() {
            let width = if case .slidingLog = limit.algorithm { 2 } else { 1 }
            if keyIndex <= index + width { return limit.name }
            index += width
            _ = limitIndex
        }
        return "(unknown)"
    }

    private func limitIDs(for plan: Plan) -> [String] {
        let id = ObjectIdentifier(plan.compiled)
        if let cached = limitIDs.withLock({ $0[id] }) { return cached }
        let ids = plan.limits.indices.map { LimitKeys.limitID(plan: plan, index: $0) }
        limitIDs.withLock { table in
            if table.count > 1_024 { table.removeAll() }
            table[id] = ids
        }
        return ids
    }

    /// The Lua source of the limit script (for benchmarks that run it with other clients).
    public static var scriptSource: String { LimitScript.source }

    /// Entries in the deny cache (for tests and monitoring).
    public var denyCacheCount: Int { denyCache?.count ?? 0 }
}

/// The store's metrics (swift-metrics; exported by whatever backend the application bootstraps).
///
/// - `tollgate_redis_decisions_total{origin, outcome}`: every answer, by who gave it
///   (`store`, `denyCache`, `failOpen`, `failClosed`, `localFallback`) and its outcome (`allowed`, `denied`).
/// - `tollgate_redis_errors_total{kind}`: failed calls (`timeout`, `connection`, `overloaded`, `bad_reply`, `server`).
/// - `tollgate_redis_short_circuits_total`: calls refused at once by the open circuit breaker.
/// - `tollgate_redis_check_duration_seconds`: round-trip time of successful checks.
struct StoreMetrics: Sendable {
    let latency: Timer
    let shortCircuits: Counter
    private let decisions: [String: Counter]
    private let errorCounters: [String: Counter]

    init(factory: any MetricsFactory) {
        latency = Timer(label: "tollgate_redis_check_duration_seconds", dimensions: [], factory: factory)
        shortCircuits = Counter(label: "tollgate_redis_short_circuits_total", dimensions: [], factory: factory)
        var decisions: [String: Counter] = [:]
        for origin in ["store", "denyCache", "failOpen", "failClosed", "localFallback"] {
            for outcome in ["allowed", "denied"] {
                decisions[origin + "/" + outcome] = Counter(
                    label: "tollgate_redis_decisions_total", dimensions: [("origin", origin), ("outcome", outcome)],
                    factory: factory)
            }
        }
        self.decisions = decisions
        var errors: [String: Counter] = [:]
        for kind in ["timeout", "connection", "overloaded", "bad_reply", "server"] {
            errors[kind] = Counter(label: "tollgate_redis_errors_total", dimensions: [("kind", kind)], factory: factory)
        }
        errorCounters = errors
    }

    func record(_ decision: Decision) {
        decisions[decision.origin.rawValue + "/" + (decision.isAllowed ? "allowed" : "denied")]?.increment()
    }

    func errors(_ kind: RedisLimitStore.Failure.Kind) -> Counter {
        errorCounters[kind.rawValue]!
    }
}
