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

    @Test(arguments: [(false, 1), (true, 1), (true, 4)])
    func keptPartitionsAdmitExactlyWhileTheirEntriesMove(withOrganizationLimit: Bool, shards: Int) throws {
        // Four threads check 2,000 keys through kept partitions (the lock-free, hinted path) while the
        // main thread sweeps away entries that expire one after another: a removal moves the last entry
        // of the shard into the gap, and the last entries are the keys' (made after the short-lived
        // ones), so the keys' entries keep moving under their hints while other threads use them. Each
        // key must admit exactly its capacity.
        let clock = ManualClock()
        // Room for 10,000: the index about half full, so that searches meet long runs of slots.
        let store = MemoryStore(configuration: .init(maximumEntries: 10_000, shards: shards), clock: clock)
        let capacity = 4
        var limits = [bucket(capacity: Int64(capacity), per: 3_600 * second, tokens: 1)]
        if withOrganizationLimit {
            limits.append(Limit(name: "day", algorithm: .fixedWindow(limit: 1_000_000, window: 24 * 3_600 * second)))
            limits.append(Limit(name: "org", algorithm: .fixedWindow(limit: 1_000_000, window: 3_600 * second), scope: .organization))
        }
        let plan = try Plan(name: "hot", limits: limits)
        // Short-lived entries, made 1 µs apart and each expiring 1 µs after it was made; then the clock is
        // set back, so that they expire one per microsecond from now on, five per sweep below.
        let churn = try Plan(name: "churn", limits: [bucket(capacity: 1, per: 1, tokens: 1)])
        let start = clock.now()
        for k in 0..<6_000 {
            _ = try store.checkNow(churn, partition: Partition(organization: "c", apiKey: "c\(k)"))
            clock.advance(microseconds: 1)
        }
        clock.set(microseconds: start)
        let keys = 2_000
        // Every key's entries exist before the threads start (one token each), after the short-lived ones.
        for k in 0..<keys { #expect(try store.checkNow(plan, partition: Partition(organization: "org", apiKey: "hot_\(k)")).isAllowed) }
        let admitted = Mutex([Int](repeating: 0, count: keys))
        let running = Atomic<Int>(4)
        let sweepsDone = Atomic<Int>(0)
        let done = DispatchGroup()
        for (t, stride) in [1, 3, 7, 9].enumerated() {  // strides prime to 2,000: every thread visits every key
            done.enter()
            Thread.detachNewThread {
                var partitions = (0..<keys).map { Partition(organization: "org", apiKey: "hot_\($0)") }
                var mine = [Int](repeating: 0, count: keys)
                var step = 0
                // Three rounds of every key, and on while the first 40 sweeps (200 moves) run.
                while step < 3 * keys || sweepsDone.load(ordering: .relaxed) < 40 {
                    let k = (step &* stride &+ 101 * t) % keys
                    if (try? store.checkNow(plan, partition: &partitions[k]).isAllowed) == true { mine[k] += 1 }
                    step += 1
                }
                admitted.withLock { total in for k in 0..<keys { total[k] += mine[k] } }
                running.wrappingSubtract(1, ordering: .releasing)
                done.leave()
            }
        }
        var sweeps = 0
        while running.load(ordering: .acquiring) > 0 {
            clock.advance(microseconds: 5)  // five more short-lived entries expire; no key gains a token
            store.removeExpired()
            sweeps += 1
            sweepsDone.store(sweeps, ordering: .relaxed)
        }
        done.wait()
        #expect(admitted.withLock { $0 } == [Int](repeating: capacity - 1, count: keys))
        let stats = store.statistics
        #expect(stats.evictions == 0)
        #expect(sweeps >= 40 && stats.reclaimed >= 200, "the sweeps ran alongside the checks (\(sweeps) sweeps)")
        #expect(stats.reclaimed <= 5 * sweeps + 5, "a sweep removed at most the five entries that had expired")
        if withOrganizationLimit {
            let peek = try store.checkNow(plan, partition: Partition(organization: "org", apiKey: "hot_0"), cost: 0)
            #expect(peek.results[2].remaining == 1_000_000 - Int64(keys * capacity))
        }
    }

    @Test(arguments: [false, true])
    func keptAndPlainChecksOnOneKeyAdmitExactlyTheQuota(threeLimits: Bool) throws {
        // Two threads check one key through kept partitions (its entry's lock alone), two through the plain
        // form (the shard's lock, then the entry's): both kinds of check meet on the one entry.
        let clock = ManualClock()
        let store = MemoryStore(configuration: .init(maximumEntries: 1_000, shards: 4), clock: clock)
        let quota = 10_000
        var limits = [bucket(capacity: Int64(quota), per: 3_600 * second, tokens: 1)]
        if threeLimits {
            limits.append(Limit(name: "minute", algorithm: .slidingCounter(limit: 1_000_000, window: minute)))
            limits.append(Limit(name: "org", algorithm: .fixedWindow(limit: 1_000_000, window: 3_600 * second), scope: .organization))
        }
        let plan = try Plan(name: "one-key", limits: limits)
        let admitted = Atomic<Int>(0)
        let done = DispatchGroup()
        for t in 0..<4 {
            done.enter()
            Thread.detachNewThread {
                var partition = Partition(organization: "org", apiKey: "the_key")
                var mine = 0
                for _ in 0..<(quota / 2) {
                    let decision = t < 2 ? try? store.checkNow(plan, partition: &partition) : try? store.checkNow(plan, partition: partition)
                    if decision?.isAllowed == true { mine += 1 }
                }
                admitted.wrappingAdd(mine, ordering: .relaxed)
                done.leave()
            }
        }
        done.wait()
        #expect(admitted.load(ordering: .relaxed) == quota)
    }

    @Test func aFullStoreEvictsWhileKeptPartitionsCheck() throws {
        // 256 entries for 1,000 keys and their organization: every new key makes room while other threads
        // check through their hints. Evicted keys start again (the documented cost of a store too small),
        // but the organization's entry — the latest to expire, so never evicted — counts every admission
        // exactly, and the bound holds.
        let clock = ManualClock()
        let store = MemoryStore(configuration: .init(maximumEntries: 256, shards: 1), clock: clock)
        let plan = try Plan(name: "full", limits: [
            bucket(capacity: 2, per: 3_600 * second, tokens: 1),
            Limit(name: "org", algorithm: .fixedWindow(limit: 1_000_000, window: 240 * 3_600 * second), scope: .organization),
        ])
        let keys = 1_000
        let admitted = Atomic<Int>(0)
        let done = DispatchGroup()
        for (t, stride) in [1, 3, 7, 9].enumerated() {
            done.enter()
            Thread.detachNewThread {
                var partitions = (0..<keys).map { Partition(organization: "org", apiKey: "key_\($0)") }
                var mine = 0
                for step in 0..<(3 * keys) {
                    let k = (step &* stride &+ 101 * t) % keys
                    if (try? store.checkNow(plan, partition: &partitions[k]).isAllowed) == true { mine += 1 }
                }
                admitted.wrappingAdd(mine, ordering: .relaxed)
                done.leave()
            }
        }
        done.wait()
        let stats = store.statistics
        #expect(stats.entries <= 256)
        #expect(stats.evictions > 0)
        let peek = try store.checkNow(plan, partition: Partition(organization: "org", apiKey: "key_0"), cost: 0)
        #expect(peek.results[1].remaining == 1_000_000 - Int64(admitted.load(ordering: .relaxed)))
    }
}
