import Foundation
import NIOCore
import Testing
import Tollgate
import TollgateTestSupport

@testable import TollgateRedis

/// The generated per-plan scripts: several checks in one call decided as if sent one by one, state the
/// previous version wrote read and converted, replies checked against themselves.
@Suite struct PlanScriptTests {
    /// The sidecar benchmark's plan: a bucket and a sliding counter per key, a month per organization.
    static func threeLimitPlan() throws -> Plan {
        try Plan(
            name: "three",
            limits: [
                Limit(name: "burst", algorithm: .tokenBucket(capacity: 8, refillTokens: 3, refillPeriod: second)),
                Limit(name: "minute", algorithm: .slidingCounter(limit: 40, window: 60 * second)),
                Limit(name: "month", algorithm: .calendar(limit: 300, unit: .month), scope: .organization),
            ])
    }

    /// Loads `plan`'s script and sends one call of `costs` at `instant`.
    static func call(
        _ client: RedisClient, _ call: PlanCall, partition: Partition, costs: [Int], at instant: Int64
    ) async throws -> [Decision] {
        let hashTag = LimitKeys.hashTag(for: partition)
        let reply = try await client.evalSHA(call.sha, source: call.script.source) { buffer in
            call.encode(partition: partition, hashTag: hashTag, costs: costs, now: instant, callerClock: instant, into: &buffer)
        }
        return try call.decisions(from: reply, costs: costs, hashTag: hashTag)
    }

    /// Random batches of 1 to 9 checks (hot and cold keys, costs 0 to 12, refusals, the clock stepping
    /// back), each one call, against the in-process store deciding the same checks one by one: the same
    /// decisions, field by field, in order.
    @Test(arguments: [(0, 11), (0, 12), (1, 13), (1, 14)] as [(Int, UInt64)])
    func aBatchDecidesAsChecksSentOneByOne(planIndex: Int, seed: UInt64) async throws {
        let plan = try [everyAlgorithmPlan(name: "batch"), Self.threeLimitPlan()][planIndex]
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let script = PlanScript(plan: plan, explicitInstant: true)
                let call = PlanCall(plan: plan, script: script, sha: try await client.scriptLoad(script.source))
                let clock = ManualClock(microseconds: 1_767_225_600 * second + 30 * second)
                let memory = MemoryStore(configuration: .init(maximumEntries: 1_000, shards: 4), clock: clock)
                let run = String(UInt64.random(in: 0..<1_000_000_000_000), radix: 36)
                let partitions = (0..<3).map { Partition(organization: "b\(run)-\($0 % 2)", apiKey: "key-\($0)") }
                var random = SplitMix64(seed: seed)
                var batched = 0
                for step in 0..<250 {
                    let roll = random.next() % 100
                    clock.advance(microseconds: roll < 5 ? -Int64(random.next() % 200_000) : Int64(random.next() % 700_000))
                    // Most batches go to one hot key.
                    let partition = partitions[roll < 70 ? 0 : Int(random.next() % 3)]
                    let costs = (0..<(1 + Int(random.next() % 9))).map { _ in
                        let r = random.next() % 20
                        return r == 0 ? 12 : (r < 4 ? 0 : Int(r % 4))
                    }
                    let expected = try costs.map { try memory.checkNow(plan, partition: partition, cost: $0) }
                    let actual = try await Self.call(client, call, partition: partition, costs: costs, at: clock.now())
                    for index in costs.indices {
                        let context = Comment(rawValue: "seed \(seed) step \(step) check \(index) of \(costs)")
                        try #require(actual[index].denial == expected[index].denial, context)
                        try #require(actual[index].retryAfterMicroseconds == expected[index].retryAfterMicroseconds, context)
                        try #require(actual[index].instant == expected[index].instant, context)
                        try #require(Array(actual[index].results) == Array(expected[index].results), context)
                    }
                    batched += costs.count > 1 ? 1 : 0
                }
                #expect(batched > 100)
            }
        }
    }

    /// State the previous version wrote (one key per limit, packed or as text) is found by the new
    /// layout: checks after the upgrade decide exactly as if no version had changed, the old keys are
    /// gone once each scope has been checked, and every new key has a TTL.
    @Test(arguments: [(true, 21), (false, 22), (true, 23)] as [(Bool, UInt64)])
    func statePreviousVersionWroteIsReadOnceAndConverted(packed: Bool, seed: UInt64) async throws {
        let plan = try everyAlgorithmPlan(name: "upgrade")
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let previousSHA = try await client.scriptLoad(LegacyLimitScript.source)
                let store = RedisLimitStore(client: client, configuration: .init(denyCache: false), logger: quietLogger)
                let clock = ManualClock(microseconds: 1_767_225_600 * second + 20 * second)
                let memory = MemoryStore(configuration: .init(maximumEntries: 1_000, shards: 4), clock: clock)
                let run = String(UInt64.random(in: 0..<1_000_000_000_000), radix: 36)
                let partitions = (0..<4).map { Partition(organization: "u\(run)-\($0 % 2)", apiKey: "key-\($0)") }
                var random = SplitMix64(seed: seed)
                func nextCost() -> Int { Int(random.next() % 3) + (random.next() % 10 == 0 ? 4 : 0) }
                // The previous version counts (the clock only moves forward: its calendar periods are the caller's).
                for _ in 0..<120 {
                    clock.advance(microseconds: Int64(random.next() % 400_000))
                    let partition = partitions[Int(random.next() % 4)]
                    let cost = nextCost()
                    _ = try memory.checkNow(plan, partition: partition, cost: cost)
                    let keys = previousStateKeys(plan, partition).map { RedisArgument($0) }
                    let arguments = LegacyLimitScript.arguments(plan: plan, cost: cost, now: clock.now(), callerClock: clock.now(), packed: packed)
                    _ = try await client.evalSHA(previousSHA, keys: keys, args: arguments.map { RedisArgument($0) })
                }
                var previous: [String] = []
                for partition in partitions { previous += previousStateKeys(plan, partition) }
                let before = try #require(try await client.send(["EXISTS"] + previous).int64)
                #expect(before >= 8, "the previous version left its keys")
                // The new version takes over.
                for step in 0..<200 {
                    clock.advance(microseconds: Int64(random.next() % 400_000))
                    let partition = partitions[step < 4 ? step : Int(random.next() % 4)]
                    let cost = nextCost()
                    let expected = try memory.checkNow(plan, partition: partition, cost: cost)
                    let actual = try await store.check(plan, partition: partition, cost: cost, at: clock.now())
                    let context = Comment(rawValue: "seed \(seed) step \(step) cost \(cost) \(partition.apiKey)")
                    try #require(actual.origin == .store, context)
                    try #require(actual.denial == expected.denial, context)
                    try #require(Array(actual.results) == Array(expected.results), context)
                }
                #expect(try await client.send(["EXISTS"] + previous).int64 == 0, "the old keys are gone")
                for partition in partitions {
                    for key in stateKeys(plan, partition) {
                        #expect((try await client.send(["PTTL", key]).int64 ?? -1) > 0, "\(key)")
                    }
                }
            }
        }
    }

    /// A write keeps the key's TTL while it lasts long enough for the state (the window and a second)
    /// and renews it, with headroom, when it would not: the value holds the second the TTL ends.
    @Test func writesKeepTheTTLUntilItWouldEndTooSoon() async throws {
        let plan = try Plan(name: "ttl", limits: [Limit(name: "f", algorithm: .fixedWindow(limit: 100, window: 10 * second))])
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let store = RedisLimitStore(client: client, configuration: .init(denyCache: false), logger: quietLogger)
                let partition = Partition(organization: "ttl-\(UInt64.random(in: 0...UInt64.max))", apiKey: "k")
                let key = stateKeys(plan, partition)[0]
                func expiry() async throws -> (second: Int64, ttl: Int64) {
                    let value = try #require(try await client.send(["GET", key]).bytes)
                    let end = try #require(value.getInteger(at: value.readerIndex + value.readableBytes - 4, endianness: .little, as: UInt32.self))
                    return (Int64(end), try #require(try await client.send(["PTTL", key]).int64))
                }
                let start: Int64 = 1_767_225_600 * second
                // Lifetime 11 s (the window and a second), renewed with 11 s of headroom.
                #expect(try await store.check(plan, partition: partition, cost: 1, at: start).isAllowed)
                let first = try await expiry()
                #expect(first.second == 1_767_225_600 + 22 + 1)
                #expect((22_000...23_000).contains(first.ttl), "\(first.ttl) ms")
                #expect(try await store.check(plan, partition: partition, cost: 1, at: start + 5 * second).isAllowed)
                let kept = try await expiry()
                #expect(kept.second == first.second && kept.ttl <= first.ttl, "kept: \(kept), first: \(first)")
                #expect(try await store.check(plan, partition: partition, cost: 1, at: start + 20 * second).isAllowed)
                let renewed = try await expiry()
                #expect(renewed.second == 1_767_225_600 + 20 + 22 + 1)
                #expect((22_000...23_000).contains(renewed.ttl), "\(renewed.ttl) ms")
                _ = try await client.send(["DEL", key])
            }
        }
    }

    /// A sliding log's list is named by its place in its own scope: adding a per-key limit to the plan
    /// leaves the organization's log and its counts where they were.
    @Test func changingTheOtherScopeKeepsASlidingLog() async throws {
        let log = Limit(name: "org-log", algorithm: .slidingLog(limit: 5, window: 60 * second), scope: .organization)
        let before = try Plan(name: "p", limits: [log])
        let after = try Plan(
            name: "p", limits: [Limit(name: "burst", algorithm: .tokenBucket(capacity: 9, refillTokens: 1, refillPeriod: second)), log])
        #expect(LimitKeys.scopeID(plan: before, scope: .organization) == LimitKeys.scopeID(plan: after, scope: .organization))
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let store = RedisLimitStore(client: client, configuration: .init(denyCache: false), logger: quietLogger)
                let partition = Partition(organization: "log-\(UInt64.random(in: 0...UInt64.max))", apiKey: "k")
                let start: Int64 = 1_767_225_600 * second
                #expect(try await store.check(before, partition: partition, cost: 3, at: start).isAllowed)
                let decision = try await store.check(after, partition: partition, cost: 2, at: start + second)
                #expect(decision.isAllowed && decision.results[1].remaining == 0)
                let refused = try await store.check(after, partition: partition, cost: 1, at: start + 2 * second)
                #expect(refused.denial == .limited && refused.retryAfterMicroseconds == 58 * second)
            }
        }
    }

    /// A list that outlived its scope key (the key was evicted, or expired a moment before it) counts for
    /// nothing: the log starts afresh, and what it answers next comes from its new entries only.
    @Test func aListThatOutlivedItsTotalIsDropped() async throws {
        let plan = try Plan(name: "l", limits: [Limit(name: "log", algorithm: .slidingLog(limit: 3, window: 10 * second))])
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let store = RedisLimitStore(client: client, configuration: .init(denyCache: false), logger: quietLogger)
                let partition = Partition(organization: "stale-\(UInt64.random(in: 0...UInt64.max))", apiKey: "k")
                let keys = stateKeys(plan, partition)
                let start: Int64 = 1_767_225_600 * second
                #expect(try await store.check(plan, partition: partition, cost: 2, at: start).isAllowed)
                _ = try await client.send(["DEL", keys[0]])  // the scope key goes, its list stays
                #expect(try await store.check(plan, partition: partition, cost: 1, at: start + second).isAllowed)
                #expect(try await client.send(["LLEN", keys[1]]).int64 == 1)
                #expect(try await store.check(plan, partition: partition, cost: 2, at: start + 2 * second).isAllowed)
                // Full: the first unit leaves with the entry of start + 1 s, 9 s from now.
                let refused = try await store.check(plan, partition: partition, cost: 1, at: start + 2 * second)
                #expect(refused.denial == .limited && refused.retryAfterMicroseconds == 9 * second)
            }
        }
    }

    /// Every limit's stored numbers come back from the binary value as the in-process store keeps them.
    @Test func scopeValuesDecodeAsTheStatesTheyHold() throws {
        let plan = try everyAlgorithmPlan(name: "layout")
        let perKey = ScopeLayout(plan: plan, scope: .apiKey)
        // burst (deficit, last update), counter (window index, previous, current), fixed (index, count),
        // shadow (deficit, last update), long-counter (index, previous, current)
        #expect(perKey.members == [0, 2, 3, 5, 6])
        #expect(perKey.fieldFormat == "i4i8i8i4i4i8i4i4i8i8i4i4I4")
        #expect(perKey.byteCount == 73)
        let values: [Int64] = [1_500_000, 1_767_225_600_000_001, 353_445_120, 3, 5, 588_941_866, 7, 2, 1_767_225_600_000_002, 19_636_951, 4, 11]
        var buffer = ByteBuffer()
        buffer.writeBytes(perKey.encode(values))
        var states = ExternalStates()
        #expect(perKey.decode(buffer, plan: plan, into: &states))
        #expect(states.state(0) == (1_500_000, 1_767_225_600_000_001, 0))
        #expect(states.state(2) == (353_445_120 * 5 * second, 3, 5))
        #expect(states.state(3) == (588_941_866 * 3 * second, 7, 588_941_867 * 3 * second))
        #expect(states.state(5) == (2, 1_767_225_600_000_002, 0))
        #expect(states.state(6) == (19_636_951 * 90 * second, 4, 11))
        let organization = ScopeLayout(plan: plan, scope: .organization)
        #expect(organization.fieldFormat == "i4i8i4I4")
        buffer.clear()
        buffer.writeBytes(organization.encode([6, 29_453_760, 13]))
        #expect(organization.decode(buffer, plan: plan, into: &states))
        #expect(states.logs[1].total == 6)
        // Kolkata is UTC+5:30: the minute starting at that second ends 60 s later.
        #expect(states.state(4) == (29_453_760 * second, 13, (29_453_760 + 60) * second))
        // Counts beyond a limit, negative numbers, another length or tag: not this plan's state.
        for bad in [[16, 29_453_760, 13], [6, -1, 13], [6, 29_453_760, 21]] as [[Int64]] {
            buffer.clear()
            buffer.writeBytes(organization.encode(bad))
            #expect(!organization.decode(buffer, plan: plan, into: &states), "\(bad)")
        }
        buffer.clear()
        buffer.writeBytes([ScopeLayout.tag, 1, 2, 3])
        #expect(!organization.decode(buffer, plan: plan, into: &states))
        // A window index whose instant would not fit: refused, not multiplied.
        buffer.clear()
        buffer.writeBytes(perKey.encode([0, 0, 1 << 50, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
        #expect(!perKey.decode(buffer, plan: plan, into: &states))
    }

    /// A reply of the wrong shape, or whose verdict contradicts the state it carries, is a bad reply
    /// naming the plan and the hash tag; the same reply with the right verdict is a decision.
    @Test func aReplyThatContradictsItselfIsABadReply() throws {
        let plan = try Plan(name: "one", limits: [Limit(name: "f", algorithm: .fixedWindow(limit: 2, window: 60 * second))])
        let call = PlanCall(plan: plan, script: PlanScript(plan: plan), sha: String(repeating: "a", count: 40))
        let now: Int64 = 1_767_225_600 * second + 5 * second
        let full = ScopeLayout(plan: plan, scope: .apiKey).encode([1_767_225_600 / 60, 2])
        func reply(_ now: Int64, _ present: UInt8, _ value: [UInt8], _ verdicts: [UInt8]) -> RedisReply {
            var bytes = ByteBuffer()
            bytes.writeInteger(now, endianness: .little)
            bytes.writeInteger(present)
            bytes.writeBytes(value + verdicts)
            return .bulkString(bytes)
        }
        let refused = reply(now, 1, full, [0])
        let decision = try call.decision(from: refused, cost: 1, hashTag: "org")
        #expect(decision.denial == .limited && decision.retryAfterMicroseconds == 55 * second)
        #expect(decision.results[0].remaining == 0)
        let untouched = try call.decision(from: reply(now, 0, [], [1]), cost: 1, hashTag: "org")
        #expect(untouched.isAllowed && untouched.results[0].remaining == 1)
        let contradictions: [RedisReply] = [
            reply(now, 1, full, [1]),  // admitted over a full window
            reply(now, 0, [], [0]),  // refused on an untouched one
            reply(now, 0, [], []),  // no verdict
            reply(now, 1, [], [1]),  // a value said to be there is not
            reply(now, 2, [], [1]),  // a scope the plan does not have
            reply(now, 0, [], [2]),  // not a verdict
            reply(-now, 0, [], [1]),  // a negative instant
            reply(now, 1, full + [0], [0]),  // a value one byte long
            .integer(1), .array([.integer(now)]),
        ]
        for reply in contradictions {
            #expect(throws: LimiterError.self, "\(reply)") { try call.decision(from: reply, cost: 1, hashTag: "org") }
            do {
                _ = try call.decision(from: reply, cost: 1, hashTag: "org")
            } catch {
                #expect(error.code == .badReply && error.message.contains("{org}") && error.message.contains("plan one"))
            }
        }
    }

    /// The script with kept periods decides within the period its key holds (start stored, end read
    /// from the TTL's end) and answers 0, writing nothing, when the key is absent or the period is over;
    /// the script with periods starts the key. Decisions are the in-process store's throughout, and the
    /// TTL's end stays exactly the period's end plus `keptPeriodMargin`.
    @Test func aKeptPeriodIsReadFromItsKeyUntilItEnds() async throws {
        let plan = try Self.threeLimitPlan()
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let full = PlanScript(plan: plan, explicitInstant: true)
                let kept = PlanScript(plan: plan, explicitInstant: true, keptPeriods: true)
                let fullCall = PlanCall(plan: plan, script: full, sha: try await client.scriptLoad(full.source))
                let keptCall = PlanCall(plan: plan, script: kept, sha: try await client.scriptLoad(kept.source))
                let partition = Partition(organization: "kept-\(UInt64.random(in: 0...UInt64.max))", apiKey: "k")
                let hashTag = LimitKeys.hashTag(for: partition)
                let organizationKey = stateKeys(plan, partition)[1]
                let february: Int64 = 1_769_904_000  // 2026-02-01 00:00 UTC
                let clock = ManualClock(microseconds: (february - 2) * second)
                let memory = MemoryStore(configuration: .init(maximumEntries: 100, shards: 1), clock: clock)
                func send(_ call: PlanCall) async throws -> RedisReply {
                    try await client.evalSHA(call.sha, source: call.script.source) { buffer in
                        call.encode(
                            partition: partition, hashTag: hashTag, costs: [1], now: clock.now(), callerClock: clock.now(), into: &buffer)
                    }
                }
                func expectSame(_ reply: RedisReply, _ call: PlanCall, _ step: String) throws {
                    let decision = try call.decision(from: reply, cost: 1, hashTag: hashTag)
                    let expected = try memory.checkNow(plan, partition: partition, cost: 1)
                    #expect(decision.denial == expected.denial && Array(decision.results) == Array(expected.results), "\(step)")
                }
                func ttlEnd() async throws -> Int64? {
                    guard case .bulkString(var value) = try await client.send(["GET", organizationKey]) else { return nil }
                    value.moveReaderIndex(forwardBy: value.readableBytes - 4)
                    return Int64(value.readInteger(endianness: .little, as: UInt32.self)!)
                }
                // No key yet: the periods are needed, and nothing is written.
                #expect(keptCall.needsPeriods(try await send(keptCall)))
                #expect(try await client.send(["EXISTS", organizationKey]) == .integer(0))
                try expectSame(try await send(fullCall), fullCall, "the script with periods starts January's key")
                #expect(try await ttlEnd() == february + PlanScript.keptPeriodMargin)
                clock.advance(microseconds: second)
                try expectSame(try await send(keptCall), keptCall, "January, read from the key")
                // The period's last microsecond, then its end: the next period's periods are needed.
                clock.advance(microseconds: second - 1)
                try expectSame(try await send(keptCall), keptCall, "January's last microsecond")
                clock.advance(microseconds: 1)
                let before = try await client.send(["GET", organizationKey])
                #expect(keptCall.needsPeriods(try await send(keptCall)))
                #expect(try await client.send(["GET", organizationKey]) == before, "nothing written")
                try expectSame(try await send(fullCall), fullCall, "the script with periods starts February")
                let march: Int64 = 1_772_323_200
                #expect(try await ttlEnd() == march + PlanScript.keptPeriodMargin)
                for _ in 0..<3 {
                    clock.advance(microseconds: 3_600 * second)
                    try expectSame(try await send(keptCall), keptCall, "February, read from the key")
                }
                // The clock back in January: the check counts on in February, as in process.
                clock.advance(microseconds: -86_400 * second)
                try expectSame(try await send(keptCall), keptCall, "the clock back in January")
                #expect(try await ttlEnd() == march + PlanScript.keptPeriodMargin)
            }
        }
    }

    /// The script has each limit's numbers in its code: a check sends its instant, its calendar
    /// quotas' periods and its cost, nothing about the limits.
    @Test func aCheckSendsNoDefinitions() throws {
        let plan = try Self.threeLimitPlan()
        let script = PlanScript(plan: plan)
        let partition = Partition(organization: "org_1", apiKey: "k")
        let (keys, arguments) = RedisLimitStore.scriptKeysAndArguments(
            for: plan, partition: partition, cost: 1, periodsInArguments: true)
        #expect(keys == stateKeys(plan, partition) && keys.count == 2)
        #expect(arguments.count == 2 + 1 && arguments.last == "1")
        #expect(script.firstCostArgument == 3)
        // The month is its scope's only limit: most checks send the cost alone.
        #expect(PlanScript.keepsPeriods(plan))
        #expect(RedisLimitStore.scriptKeysAndArguments(for: plan, partition: partition, cost: 1) == (keys, ["1"]))
        #expect(PlanScript(plan: plan, keptPeriods: true).firstCostArgument == 1)
        #expect(!PlanScript.keepsPeriods(try everyAlgorithmPlan()), "its minute shares the organization's scope with a log")
        #expect(PlanScript(plan: plan, explicitInstant: true).firstCostArgument == 4)
        #expect(!script.source.contains("ARGV[1])") && script.source.contains("redis.call('TIME')"))
        // The bucket's 3 tokens a second and the counter's 40 a minute are written into the code.
        #expect(script.source.contains("cost <= 8 and q1 + cost * 1000000 <= 8000000"))
        #expect(script.source.contains("(t1 - l1) * 3"))
        // A minute is 1,034,483 ticks of 58 µs: the counter's weight moves in steps of a millionth.
        #expect(script.source.contains("cost <= 40 and g2 + (cu2 + cost) * 1034483 <= 41379320"))
    }
}
