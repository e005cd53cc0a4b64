import Testing

@testable import Tollgate

/// `checkNow(_:partition: inout)`: a kept partition remembers where its entries are; the decisions must be
/// exactly those of the plain `checkNow`, whatever the store did to its entries in between.
@Suite struct EntryHintTests {
    @Test func keptPartitionsGetTheSameDecisionsAsFreshOnes() throws {
        let clock = ManualClock()
        // Small and with few shards, so that entries are evicted, reclaimed and moved all the time.
        let configuration = MemoryStore.Configuration(maximumEntries: 24, shards: 2)
        let plain = MemoryStore(configuration: configuration, clock: clock)
        let hinted = MemoryStore(configuration: configuration, clock: clock)
        let plans = [
            try Plan(name: "one", limits: [bucket(capacity: 3, per: second, tokens: 1)]),
            try Plan(
                name: "three",
                limits: [
                    bucket(capacity: 4, per: second, tokens: 2),
                    Limit(name: "minute", algorithm: .slidingCounter(limit: 9, window: minute)),
                    Limit(name: "org", algorithm: .fixedWindow(limit: 30, window: 10 * second), scope: .organization),
                    Limit(name: "shadow", algorithm: .slidingLog(limit: 2, window: second), shadow: true),
                ]),
        ]
        var kept = (0..<40).map { Partition(organization: "org_\($0 % 3)", apiKey: "key_\($0)") }
        var random = SplitMix64(seed: 7)
        var hintsUsed = 0
        for step in 0..<20_000 {
            let k = Int.random(in: 0..<kept.count, using: &random)
            let plan = plans[Int.random(in: 0..<plans.count, using: &random)]
            let cost = Int.random(in: 0...3, using: &random)
            let fresh = Partition(organization: kept[k].organization, apiKey: kept[k].apiKey)
            let before = kept[k].hints
            let expected = try plain.checkNow(plan, partition: fresh, cost: cost)
            let actual = try hinted.checkNow(plan, partition: &kept[k], cost: cost)
            if before.apiKey != 0 || before.organization != 0 { hintsUsed += 1 }
            #expect(actual.denial == expected.denial, "step \(step)")
            #expect(actual.retryAfterMicroseconds == expected.retryAfterMicroseconds, "step \(step)")
            #expect(Array(actual.results) == Array(expected.results), "step \(step)")
            if actual.denial != expected.denial || Array(actual.results) != Array(expected.results) { return }
            clock.advance(microseconds: Int64.random(in: 0...(second / 4), using: &random))
            if step % 500 == 499 {
                #expect(plain.removeExpired() == hinted.removeExpired())
            }
        }
        #expect(plain.statistics == hinted.statistics)
        #expect(plain.statistics.evictions > 0, "the run should have evicted entries")
        #expect(hintsUsed > 10_000, "most checks should have carried a hint")
    }

    @Test func aHintToAnotherKeysEntryIsNotTrusted() throws {
        // One shard: a's entry at position 0, b's at 1. When a's entry is reclaimed, b's moves to 0,
        // where a's hint still points.
        let clock = ManualClock()
        let store = MemoryStore(configuration: .init(maximumEntries: 100, shards: 1), clock: clock)
        let plan = try Plan(name: "p", limits: [bucket(capacity: 2, per: 2 * 3_600 * second, tokens: 2)])
        var a = Partition(organization: "o", apiKey: "a")
        var b = Partition(organization: "o", apiKey: "b")
        #expect(try store.checkNow(plan, partition: &a, cost: 1).isAllowed)  // a: full in 1 h
        #expect(try store.checkNow(plan, partition: &b, cost: 2).isAllowed)  // b: full in 2 h
        #expect(a.hints.position(for: .apiKey) == 0)
        #expect(b.hints.position(for: .apiKey) == 1)
        clock.advance(microseconds: 3_600 * second + 30 * 60 * second)
        #expect(store.removeExpired() == 1)  // a's bucket is full again; b's entry moves to position 0
        // b has 1.5 tokens: a request of 1 would leave 0 whole tokens. a is untouched: it leaves 1.
        let decision = try store.checkNow(plan, partition: &a, cost: 1)
        #expect(decision.isAllowed)
        #expect(decision.results[0].remaining == 1)
        #expect(try store.checkNow(plan, partition: &b, cost: 0).results[0].remaining == 1)
        #expect(a.hints.position(for: .apiKey) == 1)
        #expect(b.hints.position(for: .apiKey) == 0)
    }
}

/// The path for plans of one token bucket against the general one, on the same random checks.
@Suite struct OneBucketPathTests {
    @Test func oneBucketPlansDecideAsTheGeneralPathDoes() throws {
        let clock = ManualClock()
        let configuration = MemoryStore.Configuration(maximumEntries: 12, shards: 2)
        let general = MemoryStore(configuration: configuration, clock: clock, usesOneBucketPath: false)
        let fast = MemoryStore(configuration: configuration, clock: clock)
        let plans = [
            try Plan(name: "enforced", limits: [bucket(capacity: 3, per: second, tokens: 1)]),
            try Plan(name: "shadow", limits: [bucket(capacity: 2, per: second, tokens: 1, shadow: true)]),
            try Plan(name: "org", limits: [bucket(capacity: 5, per: second, tokens: 2, scope: .organization)]),
        ]
        var random = SplitMix64(seed: 11)
        for step in 0..<20_000 {
            let k = Int.random(in: 0..<30, using: &random)
            let partition = Partition(organization: "org_\(k % 4)", apiKey: "key_\(k)")
            let plan = plans[Int.random(in: 0..<plans.count, using: &random)]
            let cost = Int.random(in: 0...4, using: &random)  // 0 peeks; above a capacity is refused as such
            let expected = try general.checkNow(plan, partition: partition, cost: cost)
            let actual = try fast.checkNow(plan, partition: partition, cost: cost)
            #expect(actual.denial == expected.denial, "step \(step)")
            #expect(actual.retryAfterMicroseconds == expected.retryAfterMicroseconds, "step \(step)")
            #expect(Array(actual.results) == Array(expected.results), "step \(step)")
            #expect(actual.instant == expected.instant)
            if actual.denial != expected.denial || Array(actual.results) != Array(expected.results) { return }
            clock.advance(microseconds: Int64.random(in: 0...(second / 3), using: &random))
            if step % 400 == 399 { #expect(general.removeExpired() == fast.removeExpired(), "step \(step)") }
        }
        #expect(general.statistics == fast.statistics)
        #expect(fast.statistics.evictions > 0, "the run should have evicted entries")
    }

    @Test func keysWhoseHashesCollideKeepTheirOwnCounters() throws {
        // An entry is matched on the low 32 bits of its hash, its group and its subject: two keys whose
        // 32 bits collide (found by search) share nothing, whether found through the index or through a
        // hint to the other's entry.
        let store = MemoryStore(configuration: .init(maximumEntries: 1_000, shards: 1), clock: ManualClock())
        let plan = try Plan(name: "collide", limits: [bucket(capacity: 3, per: 3_600 * second, tokens: 1)])
        let group = plan.compiled.hot.pointee.groups[0].id
        var seen: [UInt32: String] = [:]
        var pair: (String, String)?
        for i in 0..<2_000_000 {
            let key = "k\(i)"
            let low = UInt32(truncatingIfNeeded: MemoryStore.entryHash(StableHash.of(key), group: group))
            if let other = seen[low] {
                pair = (other, key)
                break
            }
            seen[low] = key
        }
        let (a, b) = try #require(pair)
        var first = Partition(organization: "o", apiKey: a)
        for _ in 0..<3 { #expect(try store.checkNow(plan, partition: &first).isAllowed) }
        #expect(try !store.checkNow(plan, partition: &first).isAllowed)
        // The other key, by value (the index), then kept with a hint to the first key's entry.
        #expect(try store.checkNow(plan, partition: Partition(organization: "o", apiKey: b), cost: 0).results[0].remaining == 3)
        var second = Partition(organization: "o", apiKey: b)
        second.hints = first.hints
        for _ in 0..<3 { #expect(try store.checkNow(plan, partition: &second).isAllowed) }
        #expect(try !store.checkNow(plan, partition: &second).isAllowed)
        #expect(store.statistics.entries == 2)
    }
}
