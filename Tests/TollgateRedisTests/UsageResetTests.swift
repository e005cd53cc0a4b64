import Foundation
import Testing
import Tollgate
import TollgateTestSupport

@testable import TollgateRedis

/// `LimitStore.usage` and `reset` on the in-process store and on a real `redis-server`: the same answers.
@Suite struct UsageResetTests {
    /// Per key: a slow bucket, a sliding log and a fixed window (one Redis key, a list); per organization:
    /// a monthly quota.
    static func plan() throws -> Plan {
        try Plan(
            name: "ops",
            limits: [
                Limit(name: "burst", algorithm: .tokenBucket(capacity: 10, refillTokens: 1, refillPeriod: 3_600 * second)),
                Limit(name: "log", algorithm: .slidingLog(limit: 6, window: 3_600 * second)),
                Limit(name: "hour", algorithm: .fixedWindow(limit: 4, window: 3_600 * second)),
                Limit(name: "month", algorithm: .calendar(limit: 100, unit: .month), scope: .organization),
            ])
    }

    func remaining(_ decision: Decision) -> [Int64] { decision.results.map(\.remaining) }

    func exercise(_ store: any LimitStore) async throws {
        let plan = try Self.plan()
        let partition = Partition(organization: "org-\(UInt64.random(in: 0...UInt64.max))", apiKey: "0123456789abcdef")
        let other = Partition(organization: partition.organization, apiKey: "fedcba9876543210")
        var last = try await store.check(plan, partition: partition, cost: 1)
        last = try await store.check(plan, partition: partition, cost: 2)
        _ = try await store.check(plan, partition: other, cost: 1)
        #expect(remaining(last) == [7, 3, 1, 97])

        // A read consumes nothing and says what the last decision said (the organization's quota has the
        // other key's request too).
        #expect(remaining(try await store.usage(plan, partition: partition)) == [7, 3, 1, 96])
        #expect(remaining(try await store.usage(plan, partition: partition)) == [7, 3, 1, 96])

        // One limit of a scope: the others keep their counts.
        try await store.reset(plan, partition: partition, limits: [1])
        #expect(remaining(try await store.usage(plan, partition: partition)) == [7, 6, 1, 96])

        // Refused, then reset: the next request passes (no remembered refusal answers instead).
        #expect(try await store.check(plan, partition: partition, cost: 1).isAllowed)
        let refused = try await store.check(plan, partition: partition, cost: 1)
        #expect(refused.denial == .limited)
        #expect(try await store.check(plan, partition: partition, cost: 1).denial == .limited)
        try await store.reset(plan, partition: partition, limits: [0, 1, 2])
        let passed = try await store.check(plan, partition: partition, cost: 1)
        #expect(passed.isAllowed)
        #expect(remaining(passed) == [9, 5, 3, 94])
        // The other key's counters and the organization's are where they were.
        #expect(remaining(try await store.usage(plan, partition: other)) == [9, 5, 3, 94])

        try await store.reset(plan, partition: other, limits: [3])
        #expect(remaining(try await store.usage(plan, partition: partition)) == [9, 5, 3, 100])
    }

    @Test func memoryStore() async throws {
        try await exercise(MemoryStore())
    }

    @Test func redisStore() async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                try await exercise(RedisLimitStore(client: client, logger: quietLogger))
            }
        }
    }

    @Test func redisStoreWithoutCoalescing() async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                try await exercise(RedisLimitStore(client: client, configuration: .init(coalesce: false), logger: quietLogger))
            }
        }
    }

    /// A reset of one limit rewrites its fields in place: the key keeps its TTL and its other fields.
    @Test func oneLimitResetKeepsTheKeysTTL() async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let plan = try Self.plan()
                let store = RedisLimitStore(client: client, logger: quietLogger)
                let partition = Partition(organization: "org-ttl-\(UInt64.random(in: 0...UInt64.max))", apiKey: "0123456789abcdef")
                _ = try await store.check(plan, partition: partition, cost: 1)
                let key = LimitKeys.keys(plan: plan, partition: partition)[0]
                let before = try await client.send(["PTTL", key]).int64 ?? -1
                try await store.reset(plan, partition: partition, limits: [2])
                let after = try await client.send(["PTTL", key]).int64 ?? -1
                #expect(before > 0 && after > 0 && after <= before)
                try await store.reset(plan, partition: partition, limits: [0, 1, 2])
                #expect(try await client.send(["EXISTS", key]).int64 == 0)
            }
        }
    }
}

/// The keys and arguments of a reset, as values.
@Suite struct ResetPlanTests {
    @Test func wholeScopesAreDeletedOneLimitIsRewritten() throws {
        let plan = try UsageResetTests.plan()
        let partition = Partition(organization: "org_1", apiKey: "0123456789abcdef")
        let names = LimitKeys.keys(plan: plan, partition: partition)  // key scope, organization scope, the log's list
        #expect(names.count == 3)

        let all = ResetPlan(plan: plan, partition: partition, limits: [0, 1, 2])
        #expect(all.keys.first == names[0])
        #expect(all.keys.contains(names[2]))
        #expect(!all.keys.contains(names[1]))
        let deleted = Int(all.arguments[0]) ?? -1
        #expect(deleted == all.keys.count && all.arguments.count == 1)

        // The fixed window alone: its fields rewritten in place, no list deleted, its previous-layout key deleted.
        let one = ResetPlan(plan: plan, partition: partition, limits: [2])
        let deletes = Int(one.arguments[0]) ?? -1
        #expect(!one.keys[..<deletes].contains(names[0]) && !one.keys[..<deletes].contains(names[2]))
        #expect(Array(one.keys[deletes...]) == [names[0], names[0]])  // window index and count
        let layout = ScopeLayout(plan: plan, scope: .apiKey)
        #expect(one.arguments.dropFirst().allSatisfy { Int($0) != nil })
        #expect(one.arguments.last == String(layout.byteCount))

        #expect(ResetPlan(plan: plan, partition: partition, limits: []).keys.isEmpty)
    }
}
