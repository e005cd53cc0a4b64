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
///
/// **Cost of a check.** A plan's command is encoded once (`ScriptInvocation`); a check writes only its
/// keys and cost into the connection's outbound buffer and reads the reply off hiredis' reader without
/// intermediate allocations. `check` runs on its caller's executor (`nonisolated(nonsending)`): a caller
/// that runs on one of the client's event loops (`client.taskExecutor(for:)` as its task executor
/// preference) makes the whole round trip without a thread hop; any other caller pays one hop to the
/// connection's loop and one back.
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
        /// Write counter and bucket state as one packed integer (88 bytes a key instead of 120; see
        /// `LimitKeys`). State is read in either form whatever this says; turn it off while replicas of a
        /// version that only reads the text form still share the Redis.
        public var packedState: Bool

        public init(
            failurePolicy: FailurePolicy = .deny, unavailableRetryAfter: Duration = .seconds(1),
            breakerFailureThreshold: Int = 3, breakerProbeInterval: Duration = .seconds(1), denyCache: Bool = true,
            denyCacheCapacity: Int = 100_000, localFallback: MemoryStore.Configuration = .init(), packedState: Bool = true
        ) {
            self.packedState = packedState
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
    /// True while the breaker is closed with no failure counted: the common case skips its lock.
    private let breakerClean = Atomic<Bool>(true)
    private let scriptSHA = Mutex<String?>(nil)
    /// Each plan's prepared script call, by the identity of its compiled form (held, so never reused).
    private let invocations = Mutex<[ObjectIdentifier: ScriptInvocation]>([:])
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

    nonisolated(nonsending) public func check(_ plan: Plan, partition: Partition, cost: Int) async throws -> Decision {
        try await check(plan, partition: partition, cost: cost, at: nil)
    }

    /// The check, with an explicit instant in microseconds instead of Redis' `TIME` — for tests that
    /// compare stores at the same instants. Production code uses `check(_:partition:cost:)`.
    nonisolated(nonsending) public func check(_ plan: Plan, partition: Partition, cost: Int, at instant: Int64?) async throws(LimiterError) -> Decision {
        guard cost >= 0 else { throw LimiterError(.invalidCost, "cost must be 0 or more, got \(cost)") }
        let sentAt = clock.now()
        let cacheKey = DenyCache.Key(plan: ObjectIdentifier(plan.compiled), partition: partition)
        if let denyCache, instant == nil, var cached = denyCache.lookup(cacheKey, cost: cost, now: sentAt) {
            cached.origin = .denyCache
            metrics.record(cached)
            return cached
        }
        let permission = breakerClean.load(ordering: .acquiring) ? .call : breaker.withLock { $0.permission(now: sentAt) }
        if permission == .refuse {
            metrics.shortCircuits.increment()
            return try fallbackDecision(plan, partition: partition, cost: cost, now: sentAt)
        }
        do {
            let decision = try await evaluate(plan, partition: partition, cost: cost, instant: instant, callerClock: instant ?? sentAt)
            if !breakerClean.load(ordering: .acquiring) {
                breaker.withLock {
                    $0.recordSuccess()
                    breakerClean.store(true, ordering: .releasing)
                }
            }
            metrics.latency.recordNanoseconds(max(0, clock.now() - sentAt) * 1_000)
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
                breakerClean.store(false, ordering: .releasing)
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

    nonisolated(nonsending) private func evaluate(_ plan: Plan, partition: Partition, cost: Int, instant: Int64?, callerClock: Int64) async throws(Failure) -> Decision {
        let hashTag = LimitKeys.hashTag(for: partition)
        // Calendar quotas whose periods the script asked for around another instant (`TOLLGATE_CLOCK`):
        // one more attempt per quota at most, each settling one.
        var anchors: [Int64?]?
        var clockRetries = 0
        while true {
            do {
                let invocation = try await invocation(for: plan)
                let reply = try await client.evalSHA(invocation.sha, source: LimitScript.source) { buffer in
                    invocation.encode(
                        partition: partition, hashTag: hashTag, cost: cost, now: instant, callerClock: callerClock,
                        anchors: anchors, into: &buffer)
                }
                do {
                    return try invocation.decision(from: reply, hashTag: hashTag)
                } catch {
                    throw Failure(kind: .badReply, message: error.message)
                }
            } catch let error as RedisClientError {
                let prefix = error.serverErrorPrefix
                if prefix == "TOLLGATE_CLOCK", let (limit, at) = Self.clockRequest(error.message),
                    plan.compiled.calendars.indices.contains(limit),
                    clockRetries < plan.compiled.calendars.reduce(0, { $0 + ($1 == nil ? 0 : 1) })
                {
                    // Redis' clock, or a quota's stored period (the clock went back past it), is in another
                    // calendar period than the caller's clock: send that quota's periods around it.
                    clockRetries += 1
                    var next = anchors ?? Array(repeating: nil, count: plan.compiled.calendars.count)
                    next[limit] = at
                    anchors = next
                    continue
                }
                if prefix == "TOLLGATE_BADSTATE" {
                    let name = Self.limitName(error.message, plan: plan)
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

    /// The plan's prepared call, made on its first check. (The SHA1 never changes: it is the hash of
    /// `LimitScript.source`.)
    nonisolated(nonsending) private func invocation(for plan: Plan) async throws(RedisClientError) -> ScriptInvocation {
        let id = ObjectIdentifier(plan.compiled)
        if let cached = invocations.withLock({ $0[id] }) { return cached }
        let sha = try await sha()
        let ids = plan.limits.indices.map { LimitKeys.limitID(plan: plan, index: $0) }
        let invocation = ScriptInvocation(plan: plan, limitIDs: ids, sha: sha, packed: configuration.packedState)
        invocations.withLock { table in
            if table.count > 1_024 { table.removeAll() }
            table[id] = invocation
        }
        return invocation
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

    /// The limit (from 0) and the instant of a `TOLLGATE_CLOCK <limit from 1> <instant>` error.
    static func clockRequest(_ message: String) -> (limit: Int, instant: Int64)? {
        guard let range = message.range(of: "TOLLGATE_CLOCK ") else { return nil }
        let fields = message[range.upperBound...].split(separator: " ", maxSplits: 2)
        guard fields.count >= 2, let limit = Int(fields[0]), limit >= 1,
            let instant = Int64(fields[1].prefix { $0.isNumber })
        else { return nil }
        return (limit - 1, instant)
    }

    private static func limitName(_ message: String, plan: Plan) -> String {
        guard let range = message.range(of: "TOLLGATE_BADSTATE "),
            let keyIndex = Int(message[range.upperBound...].prefix { $0.isNumber })
        else { return "(unknown)" }
        // Keys are laid out in plan order, a sliding log taking two.
        var index = 0
        for limit in plan.limits {
            let width = if case .slidingLog = limit.algorithm { 2 } else { 1 }
            if keyIndex <= index + width { return limit.name }
            index += width
        }
        return "(unknown)"
    }

    /// The Lua source of the limit script (for benchmarks that run it with other clients).
    public static var scriptSource: String { LimitScript.source }

    /// The script's ARGV for one check of `plan` at Redis' own clock (for benchmarks that run it with
    /// other clients; KEYS are `LimitKeys`' names).
    public static func scriptArguments(for plan: Plan, cost: Int) -> [String] {
        LimitScript.arguments(plan: plan, cost: cost, now: nil, callerClock: SystemClock().now())
    }

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
    /// Indexed by `Self.index(origin:allowed:)`.
    private let decisions: [Counter]
    private let errorCounters: [String: Counter]
    private static let origins: [Decision.Origin] = [.store, .denyCache, .failOpen, .failClosed, .localFallback]

    init(factory: any MetricsFactory) {
        latency = Timer(label: "tollgate_redis_check_duration_seconds", dimensions: [], factory: factory)
        shortCircuits = Counter(label: "tollgate_redis_short_circuits_total", dimensions: [], factory: factory)
        var decisions: [Counter] = []
        for origin in Self.origins {
            for outcome in ["allowed", "denied"] {
                decisions.append(
                    Counter(
                        label: "tollgate_redis_decisions_total", dimensions: [("origin", origin.rawValue), ("outcome", outcome)],
                        factory: factory))
            }
        }
        self.decisions = decisions
        var errors: [String: Counter] = [:]
        for kind in ["timeout", "connection", "overloaded", "bad_reply", "server"] {
            errors[kind] = Counter(label: "tollgate_redis_errors_total", dimensions: [("kind", kind)], factory: factory)
        }
        errorCounters = errors
    }

    private static func index(origin: Decision.Origin, allowed: Bool) -> Int {
        let base: Int =
            switch origin {
            case .store: 0
            case .denyCache: 2
            case .failOpen: 4
            case .failClosed: 6
            case .localFallback: 8
            }
        return base + (allowed ? 0 : 1)
    }

    func record(_ decision: Decision) {
        decisions[Self.index(origin: decision.origin, allowed: decision.isAllowed)].increment()
    }

    func errors(_ kind: RedisLimitStore.Failure.Kind) -> Counter {
        errorCounters[kind.rawValue]!
    }
}
