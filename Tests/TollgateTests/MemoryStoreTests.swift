import Testing

@testable import Tollgate

/// The store's bounds: reclaiming expired state, eviction when full, and the table itself.
@Suite struct MemoryStoreTests {
    @Test func expiredEntriesAreReclaimedBeforeAnythingIsEvicted() throws {
        let h = try Harness([bucket(capacity: 10, per: second, tokens: 10)], maximumEntries: 8, shards: 1)
        for k in 0..<8 { try h.check(partition: Partition(organization: "o", apiKey: "k\(k)")) }
        #expect(h.store.statistics.entries == 8)
        h.clock.advance(microseconds: second)  // every bucket is full again
        for k in 8..<16 { try h.check(partition: Partition(organization: "o", apiKey: "k\(k)")) }
        let stats = h.store.statistics
        #expect(stats.evictions == 0)
        #expect(stats.reclaimed >= 8)
        #expect(stats.entries <= 8)
    }

    @Test func whenFullTheSoonestExpiringEntryIsEvicted() throws {
        // One shard of 4 entries. Four keys with state that lasts; the fifth forces an eviction.
        let clock = ManualClock()
        let store = MemoryStore(configuration: .init(maximumEntries: 4, shards: 1), clock: clock)
        let plan = try Plan(name: "p", limits: [Limit(name: "f", algorithm: .slidingLog(limit: 10, window: 100 * second))])
        for k in 0..<4 {
            _ = try store.checkNow(plan, partition: Partition(organization: "o", apiKey: "k\(k)"))
            clock.advance(microseconds: second)
        }
        _ = try store.checkNow(plan, partition: Partition(organization: "o", apiKey: "new"))
        let stats = store.statistics
        #expect(stats.evictions == 1)
        #expect(stats.entries == 4)
        // The store never holds more than its bound however many keys arrive.
        for k in 0..<100 { _ = try store.checkNow(plan, partition: Partition(organization: "o", apiKey: "x\(k)")) }
        #expect(store.statistics.entries == 4)
    }

    @Test func removeExpiredSweepsEverything() throws {
        let h = try Harness([Limit(name: "f", algorithm: .fixedWindow(limit: 10, window: second))])
        for k in 0..<500 { try h.check(partition: Partition(organization: "o\(k % 7)", apiKey: "k\(k)")) }
        #expect(h.store.statistics.entries == 500)
        h.clock.advance(microseconds: second)
        #expect(h.store.removeExpired() == 500)
        #expect(h.store.statistics.entries == 0)
    }

    @Test(arguments: [UInt64(0), 0x00ff_ff00])
    func tableSurvivesRandomInsertsAndRemovals(highBits: UInt64) {
        // Backward-shift deletion in the index, and moving the last entry into a removed one's place,
        // keep every remaining key findable. Few distinct hashes make long probe runs; with `highBits` their
        // homes sit at the end of the index, so that runs wrap around it.
        var table = ShardTable(maximumCount: 10_000, seed: 1)
        var present: [String: UInt64] = [:]
        var random = SplitMix64(seed: 42)
        for step in 0..<20_000 {
            let name = "s\(Int.random(in: 0..<3_000, using: &random))"
            let hash = (StableHash.of(name) & 0xff) | highBits | 1
            if let slot = table.find(hash: hash, group: 1, subject: name) {
                if step % 3 == 0 {
                    table.remove(at: slot)
                    present[name] = nil
                }
            } else {
                let position = table.insert(StoreEntry(hash: hash, subject: name, now: 0, more: nil), group: 1)
                EntrySlot.unlock(table.entries + position, group: 1)  // published locked
                present[name] = hash
            }
        }
        #expect(table.count == present.count)
        for (name, hash) in present { #expect(table.find(hash: hash, group: 1, subject: name) != nil) }
    }

    @Test func anEntryIsOneCacheLine() {
        #expect(MemoryLayout<StoreEntry>.stride == 64)
    }

    @Test func reloadedIdenticalPlanKeepsItsCounters() throws {
        let h = try Harness([bucket(capacity: 5)])
        #expect(try h.drain() == 5)
        let reloaded = try Plan(name: "test", timeZone: h.plan.timeZone, limits: h.plan.limits)
        #expect(try h.store.checkNow(reloaded, partition: h.partition).isAllowed == false)
        let changed = try Plan(name: "test", timeZone: h.plan.timeZone, limits: [bucket(capacity: 6)])
        #expect(try h.store.checkNow(changed, partition: h.partition).isAllowed)
    }
}
