import Logging
import Metrics
import NIOCore
import Synchronization
import Tollgate

/// Limits kept in Redis, shared by every gateway and sidecar replica: each check is one `EVALSHA` of a
/// script generated for its plan (`PlanScript`), which decides all limits of the request atomically
/// against Redis' own clock, reading and writing at most one key per scope of the plan.
///
/// When Redis fails or a check runs out of time (the client's `commandTimeout` is the budget), the
/// `failurePolicy` answers: `deny` (the decision is refused with `.storeUnavailable` and a retry-after),
/// `allow` (admitted unchecked) or `local` (an in-process `MemoryStore` decides for the duration). A
/// circuit breaker makes a dead Redis cost at most one failed call per probe interval rather than one per
/// request; it closes again as soon as a probe succeeds. Recent refusals are answered from a bounded
/// in-process deny cache until their retry instant (see `DenyCache`).
///
/// Run the backend's client (`run()`) in a task for as long as the store is used (the client keeps
/// its connections).
///
/// **Redis Sentinel.** With `init(backend: .sentinel(…))` checks go to the primary the sentinels name, followed
/// through failovers (`RedisSentinelClient`).
///
/// **Redis Cluster.** With `init(backend: .cluster(…))` each check goes to the primary serving its organization's
/// hash slot (`RedisClusterClient`); the breaker is per node, so a failed primary costs only the checks
/// of the slots it served, and the group commit's batches, being per key, are per node too.
///
/// **Cost of a check.** A plan's command is encoded once (`PlanCall`); a check writes only its keys and
/// cost into the connection's outbound buffer. The script answers the state it read and its verdict;
/// remaining quota, reset and retry-after are derived here with the in-process arithmetic. `check` runs on its caller's executor (`nonisolated(nonsending)`): a caller
/// that runs on one of the client's event loops (`client.taskExecutor(for:)` as its task executor
/// preference) makes the whole round trip without a thread hop; any other caller pays one hop to the
/// connection's loop and one back.
public final class RedisLimitStore: LimitStore {
    /// What the store does when Redis cannot answer in time (the configuration's type).
    public typealias FailurePolicy = StoreFailurePolicy

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
    /// | `coalesce` | true | checks of the same keys that arrive while a call for them is in flight go together as one call when it returns (`CheckQueues`) |
    /// | `maximumBatch` | 64 | the most checks one such call decides |
    /// | `maximumInFlight` | 1 | calls of the same keys sent before later checks queue (2: a key queues only when two calls are out) |
    public struct Configuration: Sendable {
        public var failurePolicy: FailurePolicy
        public var unavailableRetryAfter: Duration
        public var breakerFailureThreshold: Int
        public var breakerProbeInterval: Duration
        public var denyCache: Bool
        public var denyCacheCapacity: Int
        public var localFallback: MemoryStore.Configuration
        /// Group commit of hot keys: see `CheckQueues`.
        public var coalesce: Bool
        /// The most checks one call decides when coalescing (at least 1).
        public var maximumBatch: Int
        /// Calls of the same keys in flight at once before later checks queue, when coalescing (at
        /// least 1): with 2, a check that finds one call out is sent at once, as without coalescing,
        /// and only a key with two calls out queues.
        public var maximumInFlight: Int
        public init(
            failurePolicy: FailurePolicy = .deny, unavailableRetryAfter: Duration = .seconds(1),
            breakerFailureThreshold: Int = 3, breakerProbeInterval: Duration = .seconds(1), denyCache: Bool = true,
            denyCacheCapacity: Int = 100_000, localFallback: MemoryStore.Configuration = .init(),
            coalesce: Bool = true, maximumBatch: Int = 64, maximumInFlight: Int = 1
        ) {
            self.coalesce = coalesce
            self.maximumBatch = maximumBatch
            self.maximumInFlight = maximumInFlight
            self.failurePolicy = failurePolicy
            self.unavailableRetryAfter = unavailableRetryAfter
            self.breakerFailureThreshold = breakerFailureThreshold
            self.breakerProbeInterval = breakerProbeInterval
            self.denyCache = denyCache
            self.denyCacheCapacity = denyCacheCapacity
            self.localFallback = localFallback
        }
    }

    /// Where the store's calls go.
    public enum Backend: Sendable {
        /// One server (or a pool of connections to it).
        case server(RedisClient)
        /// A Redis Cluster: each check on the primary of its organization's slot.
        case cluster(RedisClusterClient)
        /// The primary that Redis Sentinel names, followed through failovers.
        case sentinel(RedisSentinelClient)
    }

    public let backend: Backend
    /// The client of a single server; nil on a cluster or behind Sentinel.
    public var client: RedisClient? { if case .server(let client) = backend { client } else { nil } }
    public let configuration: Configuration
    let clock: any LimiterClock
    private let logger: Logger
    private let breakers: NodeBreakers
    let denyCache: DenyCache?
    /// Nil when coalescing is off.
    private let queues: CheckQueues?
    /// Tests: sees each coalesced call's partition, costs and decisions, in the order the calls for one
    /// set of keys were made.
    let callObserver = Mutex<(@Sendable (Partition, [Int], [Decision]) -> Void)?>(nil)
    let fallback: MemoryStore
    /// Each plan's prepared script call, by the identity of its compiled form (held, so never reused)
    /// and whether the instant is explicit (tests).
    private let calls = Mutex<[CallKey: PlanCalls]>([:])

    private struct CallKey: Hashable {
        let plan: ObjectIdentifier
        let explicitInstant: Bool
    }

    /// A plan's prepared calls: of the script that is sent the calendar quotas' periods, and of the one
    /// that reads them from their keys, when the plan allows it (`PlanScript.keepsPeriods`), which
    /// checks call first.
    private struct PlanCalls: Sendable {
        let full: PlanCall
        let kept: PlanCall?
    }
    private let metrics: StoreMetrics

    /// A store on one server.
    public convenience init(
        client: RedisClient, configuration: Configuration = .init(), clock: any LimiterClock = SystemClock(),
        logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.init(backend: .server(client), configuration: configuration, clock: clock, logger: logger, metricsFactory: metricsFactory)
    }

    /// - Parameters:
    ///   - backend: one server, a cluster or the primary Sentinel names; its clients' `commandTimeout` is
    ///     each check's time budget.
    ///   - clock: the local clock for the breakers and the deny cache (decisions use Redis' `TIME`).
    public init(
        backend: Backend, configuration: Configuration = .init(), clock: any LimiterClock = SystemClock(),
        logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.backend = backend
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
        breakers = NodeBreakers(
            failureThreshold: configuration.breakerFailureThreshold, probeInterval: configuration.breakerProbeInterval.microseconds)
        denyCache = configuration.denyCache ? DenyCache(capacity: configuration.denyCacheCapacity) : nil
        queues = configuration.coalesce ? CheckQueues(
                maximumBatch: max(1, configuration.maximumBatch), maximumInFlight: max(1, configuration.maximumInFlight)) : nil
        fallback = MemoryStore(configuration: configuration.localFallback, clock: clock)
        metrics = StoreMetrics(factory: metricsFactory)
    }

    /// Loads the scripts of `plans`. Optional: the first check of a plan loads its script, and a server
    /// that forgot it (restart, `SCRIPT FLUSH`, failover) gets it again on `NOSCRIPT`.
    public func prepare(_ plans: [Plan]) async throws {
        for plan in plans { _ = try await calls(for: plan, explicitInstant: false) }
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
        let permission = breakers.allClean ? .call : breakers.permission(node: node(of: partition), now: sentAt)
        if permission == .refuse {
            metrics.shortCircuits.increment()
            return try fallbackDecision(plan, partition: partition, cost: cost, now: sentAt)
        }
        do {
            let decision =
                if let queues, instant == nil {
                    try await coalesced(plan, partition: partition, cost: cost, queues: queues, callerClock: sentAt)
                } else {
                    try await evaluate(plan, partition: partition, cost: cost, instant: instant, callerClock: instant ?? sentAt)
                }
            if !breakers.allClean { breakers.recordSuccess(node: node(of: partition)) }
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
            let failedNode = node(of: partition)
            let opened = breakers.recordFailure(node: failedNode, now: now)
            metrics.errors(error.kind).increment()
            if opened {
                logger.warning(
                    "Redis limit store failing; circuit open, failure policy \(configuration.failurePolicy.rawValue) applies",
                    metadata: ["error": "\(error)", "endpoint": "\(failedNode)"])
            } else {
                logger.debug("Redis limit check failed", metadata: ["error": "\(error)"])
            }
            return try fallbackDecision(plan, partition: partition, cost: cost, now: now)
        }
    }

    /// The node a partition's checks go to, as the breakers name it: the server, or the primary serving
    /// the organization's slot on a cluster (`unserved` while none does).
    private func node(of partition: Partition) -> String {
        switch backend {
        case .server(let client): client.configuration.endpointDescription
        case .sentinel(let sentinel): sentinel.primaryAddress?.description ?? "unresolved"
        case .cluster(let cluster): cluster.primary(forHashTag: LimitKeys.hashTag(for: partition))?.description ?? "unserved"
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

    nonisolated(nonsending) func evaluate(_ plan: Plan, partition: Partition, cost: Int, instant: Int64?, callerClock: Int64) async throws(Failure) -> Decision {
        try await roundTrip(plan, partition: partition, costs: CollectionOfOne(cost), instant: instant, callerClock: callerClock) {
            (call, reply, hashTag) throws(LimiterError) in try call.decision(from: reply, cost: cost, hashTag: hashTag)
        }
    }

    /// One call deciding `costs` in order (a batch of checks of the same keys).
    nonisolated(nonsending) private func evaluate(_ plan: Plan, partition: Partition, costs: [Int], callerClock: Int64) async throws(Failure) -> [Decision] {
        try await roundTrip(plan, partition: partition, costs: costs, instant: nil, callerClock: callerClock) {
            (call, reply, hashTag) throws(LimiterError) in try call.decisions(from: reply, costs: costs, hashTag: hashTag)
        }
    }

    /// Sends one call of `plan`'s script for `costs` and reads its reply with `read`: asks again for a
    /// calendar quota's period when the script says its instant lies in another, and turns every error
    /// into the store's own `Failure`.
    nonisolated(nonsending) private func roundTrip<Answer>(
        _ plan: Plan, partition: Partition, costs: some Collection<Int>, instant: Int64?, callerClock: Int64,
        read: (PlanCall, RedisReply, String) throws(LimiterError) -> Answer
    ) async throws(Failure) -> Answer {
        let hashTag = LimitKeys.hashTag(for: partition)
        // Calendar quotas whose periods the script asked for around another instant (`TOLLGATE_CLOCK`):
        // at most two more attempts per quota.
        var anchors: [Int64?]?
        var clockRetries = 0
        // The script that reads calendar periods from their keys first, while it can (`PlanScript`).
        var keptPeriods = true
        while true {
            do {
                let calls = try await calls(for: plan, explicitInstant: instant != nil)
                let call = (keptPeriods ? calls.kept : nil) ?? calls.full
                // A local function, not a closure value: passed as a non-escaping argument, it allocates nothing.
                func encode(_ buffer: inout ByteBuffer) {
                    call.encode(
                        partition: partition, hashTag: hashTag, costs: costs, now: instant, callerClock: callerClock,
                        anchors: anchors, into: &buffer)
                }
                let reply =
                    switch backend {
                    case .server(let client): try await client.evalSHA(call.sha, source: call.script.source, encode: encode)
                    case .sentinel(let sentinel): try await sentinel.evalSHA(call.sha, source: call.script.source, encode: encode)
                    case .cluster(let cluster):
                        try await cluster.evalSHA(
                            call.sha, source: call.script.source, slot: cluster.slot(forHashTag: hashTag), encode: encode)
                    }
                if call.needsPeriods(reply) {
                    keptPeriods = false
                    continue
                }
                do {
                    return try read(call, reply, hashTag)
                } catch {
                    throw Failure(kind: .badReply, message: error.message)
                }
            } catch let error as RedisClientError {
                let prefix = error.serverErrorPrefix
                if prefix == "TOLLGATE_CLOCK", let (limit, at) = Self.clockRequest(error.message),
                    plan.compiled.calendars.indices.contains(limit),
                    // Two per quota: its stored period, then the one that holds Redis' clock.
                    clockRetries < 2 * plan.compiled.calendars.reduce(0, { $0 + ($1 == nil ? 0 : 1) })
                {
                    // Redis' clock, or a quota's stored period (the clock went back past it), is in another
                    // calendar period than the caller's clock: send that quota's periods around it.
                    clockRetries += 1
                    var next = anchors ?? Array(repeating: nil, count: plan.compiled.calendars.count)
                    next[limit] = at
                    anchors = next
                    continue
                }
                if prefix == "TOLLGATE_BADSTATE" || prefix == "WRONGTYPE" {
                    let cached = calls.withLock { $0[CallKey(plan: ObjectIdentifier(plan.compiled), explicitInstant: instant != nil)]?.full }
                    let what = prefix == "WRONGTYPE" ? "one of the keys" : cached?.describeKey(Self.keyIndex(error.message)) ?? "(unknown)"
                    throw Failure(
                        kind: .badReply,
                        message: "a Redis key under hash tag {\(hashTag)} for \(what) of plan \(plan.name) holds something "
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

    /// A check through the group commit of its keys (`CheckQueues`): sent at once when no call for its
    /// keys is in flight, else decided with the checks that queued behind that call, in one call.
    nonisolated(nonsending) private func coalesced(
        _ plan: Plan, partition: Partition, cost: Int, queues: CheckQueues, callerClock: Int64
    ) async throws(Failure) -> Decision {
        let key = CheckQueues.Key(plan: ObjectIdentifier(plan.compiled), partition: partition)
        var others: [CheckQueues.Waiter] = []
        if !queues.claim(key) {
            let queuedAt = clock.now()
            switch await queues.wait(key, cost: cost, now: queuedAt) {
            case .decision(let decision): return decision
            case .failure(let failure): throw failure
            case .lead(let waiting):
                others = waiting
                metrics.queueWait.recordNanoseconds(max(0, clock.now() - queuedAt) * 1_000)
            }
        }
        // This check leads the next call for its keys: its own, then the others', in arrival order.
        metrics.batchSize.record(1 + others.count)
        let own: Result<Decision, Failure>
        if others.isEmpty {
            do {
                let decision = try await evaluate(plan, partition: partition, cost: cost, instant: nil, callerClock: callerClock)
                own = .success(decision)
                if let observe = callObserver.withLock({ $0 }) { observe(partition, [cost], [decision]) }
            } catch {
                own = .failure(error)
            }
        } else {
            let sentAt = clock.now()
            for waiter in others { metrics.queueWait.recordNanoseconds(max(0, sentAt - waiter.queuedAt) * 1_000) }
            let costs = [cost] + others.map(\.cost)
            do {
                let decisions = try await evaluate(plan, partition: partition, costs: costs, callerClock: callerClock)
                own = .success(decisions[0])
                for (waiter, decision) in zip(others, decisions.dropFirst()) { waiter.continuation.resume(returning: .decision(decision)) }
                if let observe = callObserver.withLock({ $0 }) { observe(partition, costs, decisions) }
            } catch {
                // A call that failed is never sent again: every check in it gets the failure policy.
                own = .failure(error)
                for waiter in others { waiter.continuation.resume(returning: .failure(error)) }
            }
        }
        let next = queues.next(key)
        if let first = next.first {
            first.continuation.resume(returning: .lead(others: Array(next.dropFirst())))
        }
        return try own.get()
    }

    /// The plan's prepared calls, made (and their scripts loaded) on its first check.
    nonisolated(nonsending) private func calls(for plan: Plan, explicitInstant: Bool) async throws(RedisClientError) -> PlanCalls {
        let id = CallKey(plan: ObjectIdentifier(plan.compiled), explicitInstant: explicitInstant)
        if let cached = calls.withLock({ $0[id] }) { return cached }
        var prepared: [PlanCall] = []
        for keptPeriods in PlanScript.keepsPeriods(plan) ? [false, true] : [false] {
            let script = PlanScript(plan: plan, explicitInstant: explicitInstant, keptPeriods: keptPeriods)
            let sha =
                switch backend {
                case .server(let client): try await client.scriptLoad(script.source)
                case .cluster(let cluster): try await cluster.scriptLoad(script.source)
                case .sentinel(let sentinel): try await sentinel.scriptLoad(script.source)
                }
            prepared.append(PlanCall(plan: plan, script: script, sha: sha))
        }
        let made = PlanCalls(full: prepared[0], kept: prepared.count > 1 ? prepared[1] : nil)
        calls.withLock { table in
            if table.count > 1_024 { table.removeAll() }
            table[id] = made
        }
        return made
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

    /// The key index of a `TOLLGATE_BADSTATE <key index>` error.
    private static func keyIndex(_ message: String) -> Int {
        guard let range = message.range(of: "TOLLGATE_BADSTATE ") else { return 0 }
        return Int(message[range.upperBound...].prefix { $0.isNumber }) ?? 0
    }

    /// The Lua source of `plan`'s script (for benchmarks that run it with other clients): the one most
    /// checks call, which reads calendar periods from their keys where the plan allows it, or with
    /// `periodsInArguments` the one that is sent them (and starts a period's key).
    public static func scriptSource(for plan: Plan, periodsInArguments: Bool = false) -> String {
        PlanScript(plan: plan, keptPeriods: !periodsInArguments && PlanScript.keepsPeriods(plan)).source
    }

    /// The script's KEYS and ARGV for one check of `plan` for `partition` at Redis' own clock (for
    /// benchmarks that run it with other clients), for the script `scriptSource` gives.
    public static func scriptKeysAndArguments(
        for plan: Plan, partition: Partition, cost: Int, periodsInArguments: Bool = false
    ) -> (keys: [String], arguments: [String]) {
        let script = PlanScript(plan: plan, keptPeriods: !periodsInArguments && PlanScript.keepsPeriods(plan))
        let callerClock = SystemClock().now()
        var arguments: [String] = []
        for index in script.calendars where !script.keptPeriods {
            let around = plan.compiled.calendars[index]!.neighbourhood(of: callerClock)
            arguments += [around.c0 / 1_000_000, around.c1 / 1_000_000].map { String($0) }
        }
        return (LimitKeys.keys(plan: plan, partition: partition), arguments + [String(cost)])
    }

    /// The previous version's script (one key per limit), for the benchmark's baseline.
    public static var previousScriptSource: String { LegacyLimitScript.source }

    /// The previous version's KEYS and ARGV for one check of `plan` for `partition` (the benchmark's baseline).
    public static func previousScriptKeysAndArguments(for plan: Plan, partition: Partition, cost: Int) -> (keys: [String], arguments: [String]) {
        let ids = plan.limits.indices.map { LimitKeys.limitID(plan: plan, index: $0) }
        let keys = LimitKeys.previousKeys(plan: plan, partition: partition, limitIDs: ids).keys
        return (keys, LegacyLimitScript.arguments(plan: plan, cost: cost, now: nil, callerClock: SystemClock().now()))
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
/// - `tollgate_redis_batch_size`: checks per call when coalescing (1 for a key with nothing queued).
/// - `tollgate_redis_queue_wait_seconds`: how long a coalesced check waited for the call before its own.
struct StoreMetrics: Sendable {
    let latency: Timer
    let batchSize: Recorder
    let queueWait: Timer
    let shortCircuits: Counter
    /// Indexed by `Self.index(origin:allowed:)`.
    private let decisions: [Counter]
    private let errorCounters: [String: Counter]
    private static let origins: [Decision.Origin] = [.store, .denyCache, .failOpen, .failClosed, .localFallback]

    init(factory: any MetricsFactory) {
        latency = Timer(label: "tollgate_redis_check_duration_seconds", dimensions: [], factory: factory)
        batchSize = Recorder(label: "tollgate_redis_batch_size", dimensions: [], aggregate: true, factory: factory)
        queueWait = Timer(label: "tollgate_redis_queue_wait_seconds", dimensions: [], factory: factory)
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
