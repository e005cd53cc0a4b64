import Foundation
import Synchronization
import Testing

@testable import Tollgate

/// Many callers on one key admit exactly the quota, never one more.
@Suite struct ConcurrencyTests {
    @Test(arguments: [
        Limit(name: "bucket", algorithm: .tokenBucket(capacity: 1_000, refillTokens: 1, refillPeriod: 3_600 * second)),
        Limit(name: "log", algorithm: .slidingLog(limit: 1_000, window: 3_600 * second)),
        Limit(name: "counter", algorithm: .slidingCounter(limit: 1_000, window: 3_600 * second)),
        Limit(name: "month", algorithm: .calendar(limit: 1_000, unit: .month)),
    ])
    func manyTasksOnOneKeyAdmitExactlyTheQuota(limit: Limit) async throws {
        // A frozen clock: nothing refills while the tasks race.
        let h = try Harness([limit, Limit(name: "org", algorithm: .fixedWindow(limit: 1_000_000, window: 3_600 * second), scope: .organization)])
        let admitted = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    var mine = 0
                    for _ in 0..<100 where try h.check().isAllowed { mine += 1 }
                    return mine
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(admitted == 1_000)
        // And the organization-wide limit was charged exactly once per admitted request.
        #expect(try h.check(cost: 0).results[1].remaining == 1_000_000 - 1_000)
    }

    @Test func threadsOnManyKeysAndOneOrganization() throws {
        // Real OS threads, each with its own keys, all sharing one organization limit of 5,000.
        let h = try Harness([bucket(capacity: 100), Limit(name: "org", algorithm: .slidingLog(limit: 5_000, window: minute), scope: .organization)])
        let total = Atomic<Int>(0)
        let done = DispatchGroup()
        for t in 0..<4 {
            done.enter()
            Thread.detachNewThread {
                for k in 0..<50 {
                    let partition = Partition(organization: "org_1", apiKey: "key_\(t)_\(k)")
                    for _ in 0..<60 where (try? h.check(partition: partition).isAllowed) == true {
                        total.wrappingAdd(1, ordering: .relaxed)
                    }
                }
                done.leave()
            }
        }
        done.wait()
        #expect(total.load(ordering: .relaxed) == 5_000)
    }

    @Test(arguments: [false, true])
    func keptPartitionsAdmitExactlyWhileTheirEntriesMove(withOrganizationLimit: Bool) throws {
        // Four threads check 2,000 keys through kept partitions (the lock-free, hinted path), while a fifth
        // keeps creating short-lived entries in the same (single) shard and sweeping them away: a removal
        // moves the last entry into the gap, so the keys' entries move under their hints, and hints go
        // stale while other threads use them. Each key must admit exactly its capacity.
        let clock = ManualClock()
        let store = MemoryStore(configuration: .init(maximumEntries: 100_000, shards: 1), clock: clock)
        let capacity = 3
        var limits = [bucket(capacity: Int64(capacity), per: 3_600 * second, tokens: 1)]
        if withOrganizationLimit {
            limits.append(Limit(name: "day", algorithm: .fixedWindow(limit: 1_000_000, window: 24 * 3_600 * second)))
            limits.append(Limit(name: "org", algorithm: .fixedWindow(limit: 1_000_000, window: 3_600 * second), scope: .organization))
        }
        let plan = try Plan(name: "hot", limits: limits)
        let churn = try Plan(name: "churn", limits: [bucket(capacity: 1, per: 1, tokens: 1)])
        let keys = 2_000
        let admitted = Mutex([Int](repeating: 0, count: keys))
        let running = Atomic<Int>(4)
        let done = DispatchGroup()
        for t in 0..<4 {
            done.enter()
            Thread.detachNewThread {
                var partitions = (0..<keys).map { Partition(organization: "org", apiKey: "hot_\($0)") }
                var mine = [Int](repeating: 0, count: keys)
                for step in 0..<(2 * keys) {
                    let k = (step &* (2 * t + 1) &+ 97 * t) % keys  // each thread its own order
                    if (try? store.checkNow(plan, partition: &partitions[k]).isAllowed) == true { mine[k] += 1 }
                }
                admitted.withLock { total in for k in 0..<keys { total[k] += mine[k] } }
                running.wrappingSubtract(1, ordering: .releasing)
                done.leave()
            }
        }
        var rounds = 0
        while running.load(ordering: .acquiring) > 0 {
            clock.advance(microseconds: 10)  // the churn entries expire; the keys' buckets gain no token
            store.removeExpired()
            for k in 0..<20 { _ = try store.checkNow(churn, partition: Partition(organization: "c", apiKey: "c\(rounds)_\(k)")) }
            rounds += 1
        }
        done.wait()
        #expect(admitted.withLock { $0 } == [Int](repeating: capacity, count: keys))
        let stats = store.statistics
        #expect(stats.evictions == 0)
        #expect(rounds > 10 && stats.reclaimed > 0, "the sweeps ran alongside the checks (\(rounds) rounds)")
        if withOrganizationLimit {
            let peek = try store.checkNow(plan, partition: Partition(organization: "org", apiKey: "hot_0"), cost: 0)
            #expect(peek.results[2].remaining == 1_000_000 - Int64(keys * capacity))
        }
    }
}
