import Foundation
import Logging
import MetricsTestKit
import NIOCore
import Synchronization
import Testing
import Tollgate
import TollgateTestSupport

@testable import TollgateRedis

let second: Int64 = 1_000_000

/// A plan with every algorithm, both scopes and a shadow limit, in a non-UTC zone.
func everyAlgorithmPlan(name: String = "mixed") throws -> Plan {
    try Plan(
        name: name, timeZone: TimeZone(identifier: "Asia/Kolkata")!,
        limits: [
            Limit(name: "burst", algorithm: .tokenBucket(capacity: 5, refillTokens: 2, refillPeriod: second)),
            Limit(name: "org-log", algorithm: .slidingLog(limit: 9, window: 10 * second), scope: .organization),
            Limit(name: "counter", algorithm: .slidingCounter(limit: 8, window: 5 * second)),
            Limit(name: "fixed", algorithm: .fixedWindow(limit: 10, window: 3 * second)),
            Limit(name: "minute", algorithm: .calendar(limit: 20, unit: .minute), scope: .organization),
            Limit(name: "shadow", algorithm: .tokenBucket(capacity: 3, refillTokens: 1, refillPeriod: second), shadow: true),
            Limit(name: "long-counter", algorithm: .slidingCounter(limit: 30, window: 90 * second)),
        ])
}

/// Captures log messages so tests can read what the store reported.
final class CapturedLogs: Sendable {
    let messages = Mutex<[String]>([])

    var logger: Logger {
        Logger(label: "capture") { _ in Handler(sink: self) }
    }

    struct Handler: LogHandler {
        let sink: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let rendered = "\(event.message) \((event.metadata ?? [:]).map { "\($0.key)=\($0.value)" }.joined(separator: " "))"
            sink.messages.withLock { $0.append(rendered) }
        }
    }
}

@Suite struct RedisLimitStoreTests {
    /// The same random request sequences at the same instants against Redis and the in-process store
    /// give identical decisions, field by field.
    @Test(arguments: [1, 2, 3, 4, 5, 6] as [UInt64])
    func sameAnswersAsTheMemoryStore(seed: UInt64) async throws {
        try await replayAgainstTheMemoryStore(try everyAlgorithmPlan(), from: 1_767_225_600 * second + 59 * second, seed: seed)
    }

    /// The same far from today (2 × 10^15 µs), with counts that need eight-byte fields and a bucket
    /// whose deficit does too.
    @Test(arguments: [7, 8] as [UInt64])
    func sameAnswersWithEightByteFields(seed: UInt64) async throws {
        let plan = try Plan(
            name: "wide", timeZone: TimeZone(identifier: "America/New_York")!,
            limits: [
                Limit(name: "burst", algorithm: .tokenBucket(capacity: 5, refillTokens: 2, refillPeriod: second)),
                Limit(name: "counter", algorithm: .slidingCounter(limit: 3_000_000_000, window: second)),
                Limit(name: "fixed", algorithm: .fixedWindow(limit: 1_000_000_000_000, window: second)),
                Limit(name: "minute", algorithm: .calendar(limit: 1_000_000_000, unit: .minute), scope: .organization),
                Limit(name: "hourly", algorithm: .tokenBucket(capacity: 1_000, refillTokens: 1_000, refillPeriod: 3_600 * second)),
            ])
        #expect(ScopeLayout(plan: plan, scope: .apiKey).fieldFormat == "i4i8i8i8i8i8i8i8i8I4", "the widths this test means to use")
        try await replayAgainstTheMemoryStore(plan, from: 2_000_000_000 * second - 200 * second, seed: seed)
    }

    private func replayAgainstTheMemoryStore(_ plan: Plan, from start: Int64, seed: UInt64) async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let store = RedisLimitStore(client: client, logger: quietLogger)
                let clock = ManualClock(microseconds: start)
                let memory = MemoryStore(configuration: .init(maximumEntries: 1_000, shards: 4), clock: clock)
                // Organizations short enough to be their own hash tag, so that the keys can be listed by name.
                let run = String(UInt64.random(in: 0..<1_000_000_000_000), radix: 36)
                let partitions = (0..<4).map { Partition(organization: "o\(run)-\($0 % 2)", apiKey: "key-\($0)") }
                var random = SplitMix64(seed: seed)
                for step in 0..<1_200 {
                    let roll = random.next() % 100
                    let gap: Int64 =
                        roll < 5
                        ? -Int64(random.next() % 300_000)  // the clock steps back a little
                        : (roll < 15 ? 0 : Int64(random.next() % 900_000))
                    clock.advance(microseconds: gap)
                    let cost = roll == 99 ? 12 : Int(random.next() % 4)
                    let partition = partitions[Int(random.next() % 4)]
                    let expected = try memory.checkNow(plan, partition: partition, cost: cost)
                    let actual = try await store.check(plan, partition: partition, cost: cost, at: clock.now())
                    let context = Comment(rawValue: "seed \(seed) step \(step) cost \(cost) \(partition.apiKey)")
                    try #require(actual.denial == expected.denial, context)
                    try #require(actual.retryAfterMicroseconds == expected.retryAfterMicroseconds, context)
                    try #require(actual.instant == expected.instant, context)
                    try #require(Array(actual.results) == Array(expected.results), context)
                }
                // Every key Tollgate wrote has a time to live.
                var cursor = "0"
                var checked = 0
                repeat {
                    let reply = try await client.send(["SCAN", cursor, "MATCH", "tg:{o\(run)-*", "COUNT", "1000"])
                    let parts = try #require(reply.array)
                    cursor = parts[0].string ?? "0"
                    for key in parts[1].array ?? [] {
                        let ttl = try await client.send(["PTTL", key.string!]).int64
                        #expect((ttl ?? -1) > 0, "key without TTL: \(key.string!)")
                        checked += 1
                    }
                } while cursor != "0"
                // One key per scope: four partitions' own and two organizations'.
                #expect(checked >= 6)
            }
        }
    }

    /// Counter and bucket state is one integer, which Redis stores `int`-encoded: under 100 bytes a key
    /// with a realistic name. A bucket too slow to pack keeps the text form, which the script also reads.
    /// One key per scope of the plan, each one small string allocation in Redis: at most 140 bytes a
    /// scope for the sidecar benchmark's three-limit plan, with realistic names.
    @Test func oneKeyPerScopeWithinItsMemoryBudget() async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let plan = try Plan(
                    name: "pro", timeZone: TimeZone(identifier: "Europe/Berlin")!,
                    limits: [
                        Limit(name: "burst", algorithm: .tokenBucket(capacity: 20, refillTokens: 1, refillPeriod: second)),
                        Limit(name: "minute", algorithm: .slidingCounter(limit: 600, window: 60 * second)),
                        Limit(name: "month", algorithm: .calendar(limit: 100_000, unit: .month), scope: .organization),
                    ])
                let store = RedisLimitStore(client: client, logger: quietLogger)
                let organization = String(format: "org_%06d", Int.random(in: 0..<1_000_000))
                let partition = Partition(organization: organization, apiKey: "9f86d081884c7d65")
                for _ in 0..<3 {
                    #expect(try await store.check(plan, partition: partition, cost: 1).isAllowed)
                }
                let keys = stateKeys(plan, partition)
                #expect(keys.count == 2)
                // Valkey 8 keeps a value with its key in one allocation of its own kind, which it reports as
                // raw: there the memory budget below is what counts.
                let valkey = (try await client.send(["INFO", "server"]).string ?? "").contains("server_name:valkey")
                for key in keys {
                    let encoding = try await client.send(["OBJECT", "ENCODING", key]).string
                    #expect(encoding == "embstr" || (valkey && encoding == "raw"), "\(key): \(encoding ?? "?")")
                    let bytes = try #require(try await client.send(["MEMORY", "USAGE", key]).int64)
                    #expect(bytes <= 140, "\(key): \(bytes) bytes")
                    let ttl = try #require(try await client.send(["PTTL", key]).int64)
                    #expect(ttl > 0)
                }
                // Still counted from the stored state.
                let decision = try await store.check(plan, partition: partition, cost: 0)
                #expect(Array(decision.results).map(\.remaining) == [17, 597, 99_997])
                _ = try await client.send(["DEL"] + keys)
            }
        }
    }

    /// Checks at `start` plus each step's offset (seconds), on Redis with explicit instants and on the
    /// in-process store, requiring the same decisions, field by field, all answered by Redis.
    private func compareSteps(_ plan: Plan, from start: Int64, _ steps: [(Int64, Int)]) async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let store = RedisLimitStore(client: client, configuration: .init(denyCache: false), logger: quietLogger)
                let clock = ManualClock(microseconds: start)
                let memory = MemoryStore(clock: clock)
                let partition = Partition(organization: "o\(UInt64.random(in: 0..<1_000_000_000))", apiKey: "k")
                for (offset, cost) in steps {
                    clock.set(microseconds: start + offset * second)
                    let expected = try memory.checkNow(plan, partition: partition, cost: cost)
                    let actual = try await store.check(plan, partition: partition, cost: cost, at: clock.now())
                    try #require(actual.origin == .store, "at \(offset) s")
                    #expect(actual.isAllowed == expected.isAllowed, "at \(offset) s")
                    #expect(Array(actual.results) == Array(expected.results), "at \(offset) s")
                }
                _ = try await client.send(["DEL"] + stateKeys(plan, partition))
            }
        }
    }

    /// A clock that goes back past the period a calendar quota last counted in still counts in that
    /// period (as the in-process store does): the stored period is found again, not taken for an old one.
    @Test func aQuotaCountsOnInItsPeriodWhenTheClockGoesBackPastIt() async throws {
        let plan = try Plan(
            name: "q", timeZone: TimeZone(identifier: "Europe/Paris")!,
            limits: [Limit(name: "minute", algorithm: .calendar(limit: 3, unit: .minute))])
        try await compareSteps(
            plan, from: 1_767_225_600 * second + 10 * second,
            [(0, 1), (0, 1), (0, 1), (0, 1), (-150, 1), (-150, 0), (-3_600, 1), (20, 1), (55, 1), (60, 1)])
    }

    /// The same with several calendar quotas, whichever comes first in the plan, across DST: each quota
    /// whose periods lie elsewhere gets its own (one more round trip each).
    @Test(arguments: [
        ("Europe/Berlin", [CalendarUnit.day, .hour], Int64(1_774_735_200)),  // 2026-03-28 22:00 UTC, DST the next night
        ("America/New_York", [.month, .day], Int64(1_762_041_600)),  // 2025-11-02 00:00 UTC, DST ends that morning
        ("America/New_York", [.day, .month], Int64(1_762_041_600)),
        ("America/New_York", [.week, .day, .hour], Int64(1_762_041_600)),
    ])
    func severalQuotasCountOnWhenTheClockGoesBack(zone: String, units: [CalendarUnit], start: Int64) async throws {
        let limits = units.enumerated().map { index, unit in
            Limit(name: "q\(index)", algorithm: .calendar(limit: 100, unit: unit), scope: index == 0 ? .apiKey : .organization)
        }
        let plan = try Plan(name: "several", timeZone: TimeZone(identifier: zone)!, limits: limits)
        let day: Int64 = 86_400
        try await compareSteps(
            plan, from: start * second,
            [(0, 1), (3 * day, 1), (3 * day, 2), (day, 1), (-62 * day, 1), (-7 * day, 1), (4 * day, 1), (40 * day, 1)])
    }

    /// Buckets, counters and windows keep their state when the clock steps back, by any amount, as the
    /// in-process store does: a clock reading before a limit's last change is that instant.
    @Test func stateSurvivesTheClockSteppingBack() async throws {
        let plan = try Plan(
            name: "back",
            limits: [
                Limit(name: "burst", algorithm: .tokenBucket(capacity: 20, refillTokens: 10, refillPeriod: second)),
                Limit(name: "counter", algorithm: .slidingCounter(limit: 600, window: 60 * second)),
                Limit(name: "fixed", algorithm: .fixedWindow(limit: 50, window: 10 * second)),
                Limit(name: "busy", algorithm: .slidingCounter(limit: 1_000_000, window: second)),
                Limit(name: "log", algorithm: .slidingLog(limit: 30, window: 10 * second)),
            ])
        try await compareSteps(
            plan, from: 1_767_225_600 * second,
            [(0, 15), (0, 5), (0, 1), (-60, 1), (-1_800, 1), (-7_200, 1), (-86_400, 2), (1, 3), (2, 1), (12, 40), (13, 20), (100, 1)])
    }

    @Test func foreignDataUnderOurKeyIsABadReplyNamingTheHashTag() async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let plan = try Plan(name: "p", limits: [Limit(name: "burst", algorithm: .tokenBucket(capacity: 5, refillTokens: 1, refillPeriod: second))])
                let logs = CapturedLogs()
                let metrics = TestMetrics()
                let store = RedisLimitStore(client: client, logger: logs.logger, metricsFactory: metrics)
                let organization = "org-\(UInt64.random(in: 0...UInt64.max))"
                let partition = Partition(organization: organization, apiKey: "k1")
                let key = stateKeys(plan, partition)[0]
                // Text, the wrong length, the wrong tag, a negative deficit, a deficit over the bucket's
                // capacity, another type of key.
                let layout = ScopeLayout(plan: plan, scope: .apiKey)
                func value(_ bytes: [UInt8]) -> RedisArgument {
                    var buffer = ByteBuffer()
                    buffer.writeBytes(bytes)
                    return RedisArgument(buffer)
                }
                let foreign: [[RedisArgument]] = [
                    ["SET", RedisArgument(key), "hello"], ["SET", RedisArgument(key), "12345"],
                    ["SET", RedisArgument(key), value([0x01] + layout.encode([0, 0]).dropFirst())],
                    ["SET", RedisArgument(key), value(layout.encode([-1, 1_767_225_600 * second]))],
                    ["SET", RedisArgument(key), value(layout.encode([plan.compiled.specs[0].fullLevel + 1, 1_767_225_600 * second]))],
                    ["RPUSH", RedisArgument(key), "x"],
                ]
                for command in foreign {
                    _ = try await client.send(["DEL", key])
                    _ = try await client.send(command)
                    let decision = try await store.check(plan, partition: partition, cost: 1)
                    #expect(decision.origin == .failClosed, "\(command)")
                    #expect(decision.denial == .storeUnavailable)
                }
                let errors = try metrics.expectCounter("tollgate_redis_errors_total", [("kind", "bad_reply")])
                #expect(errors.totalValue == 6)
                let messages = logs.messages.withLock { $0 }
                #expect(messages.contains { $0.contains("{\(LimitKeys.hashTag(organization))}") && $0.contains("burst") })
                #expect(messages.allSatisfy { $0.contains("{\(LimitKeys.hashTag(organization))}") }, "\(messages)")
                #expect(!messages.contains { $0.contains("k1") }, "the key id must not be logged")
            }
        }
    }

    @Test func scriptFlushIsRecoveredTransparently() async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let plan = try Plan(name: "p", limits: [Limit(name: "f", algorithm: .fixedWindow(limit: 100, window: 60 * second))])
                let store = RedisLimitStore(client: client, logger: quietLogger)
                let partition = Partition(organization: "org-\(UInt64.random(in: 0...UInt64.max))", apiKey: "k")
                #expect(try await store.check(plan, partition: partition, cost: 1).origin == .store)
                _ = try await client.send(["SCRIPT", "FLUSH"])
                let again = try await store.check(plan, partition: partition, cost: 1)
                #expect(again.origin == .store)
                #expect(again.results[0].remaining == 98)
            }
        }
    }

    @Test func denyCacheAnswersRepeatedRefusalsWithoutARoundTrip() async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let plan = try Plan(name: "p", limits: [Limit(name: "f", algorithm: .fixedWindow(limit: 2, window: 3_600 * second))])
                let store = RedisLimitStore(client: client, logger: quietLogger)
                let partition = Partition(organization: "org-\(UInt64.random(in: 0...UInt64.max))", apiKey: "k")
                #expect(try await store.check(plan, partition: partition, cost: 2).isAllowed)
                let first = try await store.check(plan, partition: partition, cost: 1)
                #expect(first.origin == .store && first.denial == .limited)
                let cached = try await store.check(plan, partition: partition, cost: 1)
                #expect(cached.origin == .denyCache && cached.denial == .limited)
                #expect(cached.retryAfterMicroseconds! <= first.retryAfterMicroseconds!)
                // A peek is never answered from the cache, and nothing the cache says was admitted.
                #expect(try await store.check(plan, partition: partition, cost: 0).origin == .store)
                let disabled = RedisLimitStore(client: client, configuration: .init(denyCache: false), logger: quietLogger)
                #expect(try await disabled.check(plan, partition: partition, cost: 1).origin == .store)
                #expect(disabled.denyCacheCount == 0)
            }
        }
    }

    /// Redis killed in the middle of a run and started again: no crash, no call waits longer than its
    /// budget, the failure policy answers, and checks reach Redis again soon after it is back.
    @Test(arguments: RedisLimitStore.FailurePolicy.allCases)
    func redisKilledAndRestarted(policy: RedisLimitStore.FailurePolicy) async throws {
        let server = try await RedisTestServer.start()
        let port = server.port
        var configuration = server.configuration
        configuration.commandTimeout = .milliseconds(300)
        configuration.connectTimeout = .milliseconds(300)
        configuration.reconnectBackoffMaximum = .milliseconds(200)
        let client = try RedisClient(configuration: configuration, logger: quietLogger)
        let runner = Task { await client.run() }
        defer { runner.cancel() }
        try await client.waitUntilConnected(timeout: .seconds(5))
        let store = RedisLimitStore(
            client: client, configuration: .init(failurePolicy: policy, breakerProbeInterval: .milliseconds(200)),
            logger: quietLogger)
        let plan = try Plan(name: "p", limits: [Limit(name: "f", algorithm: .fixedWindow(limit: 1_000_000, window: 3_600 * second))])
        let partition = Partition(organization: "org-kill", apiKey: "k")
        // Warm first: the plan's script loaded and a check answered by Redis. On a loaded machine the
        // first check (a NOSCRIPT, the script's load, the check again) may outlast the short budget
        // these checks get; what this test looks at starts with the kill.
        let warmDeadline = ContinuousClock.now + .seconds(10)
        var warm = try await store.check(plan, partition: partition, cost: 1)
        while warm.origin != .store, ContinuousClock.now < warmDeadline {
            try await Task.sleep(for: .milliseconds(50))
            warm = try await store.check(plan, partition: partition, cost: 1)
        }
        #expect(warm.origin == .store)

        await server.kill()
        var origins: Set<Decision.Origin> = []
        var slowest: Duration = .zero
        for _ in 0..<50 {
            let start = ContinuousClock.now
            let decision = try await store.check(plan, partition: partition, cost: 1)
            slowest = max(slowest, ContinuousClock.now - start)
            origins.insert(decision.origin)
            if policy == .deny { #expect(decision.denial == .storeUnavailable && decision.retryAfterMicroseconds == second) }
        }
        let expected: Decision.Origin = switch policy {
        case .deny: .failClosed
        case .allow: .failOpen
        case .local: .localFallback
        }
        #expect(origins == [expected])
        #expect(slowest < .milliseconds(300 + 500), "a call waited \(slowest), longer than its 300 ms budget allows")

        let restarted = try await RedisTestServer.start(port: port)
        let deadline = ContinuousClock.now + .seconds(5)
        var recovered = false
        while ContinuousClock.now < deadline {
            if (try? await store.check(plan, partition: partition, cost: 1).origin) == .store {
                recovered = true
                break
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        #expect(recovered, "checks did not reach Redis again within 5 s of its restart")
        await restarted.kill()
    }
}
