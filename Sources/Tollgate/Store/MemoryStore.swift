import Synchronization

/// The embedded, in-process limiter: counters in sharded hash tables, each behind its own lock, so
/// checks on different keys rarely contend; bounded in the number of entries it keeps.
///
/// When full, a shard first reclaims entries whose counters are all back to untouched (nothing is
/// lost), then evicts the sampled entry that would expire soonest (the one carrying the least state);
/// evictions are counted in `statistics`. Size `maximumEntries` above the number of active subjects
/// times groups per plan so that eviction never happens in normal operation.
public final class MemoryStore: LimitStore, @unchecked Sendable {
    /// Sizing of the store.
    public struct Configuration: Sendable {
        /// The most entries (one per subject and plan scope) kept at once. Default 1,000,000.
        public var maximumEntries: Int
        /// The number of independently locked shards, rounded up to a power of two. Default 64.
        public var shards: Int

        public init(maximumEntries: Int = 1_000_000, shards: Int = 64) {
            self.maximumEntries = maximumEntries
            self.shards = shards
        }
    }

    /// Counts for monitoring the store's bounds.
    public struct Statistics: Sendable, Equatable {
        /// Entries held now.
        public var entries: Int
        /// Entries removed because their counters had expired.
        public var reclaimed: Int
        /// Entries removed early to make room while still carrying state.
        public var evictions: Int
    }

    /// The shards, each a `Mutex<ShardTable>` on its own cache lines, reached by pointer arithmetic so
    /// that a check retains nothing shared. Allocated in `init`, freed in `deinit`, never reassigned.
    nonisolated(unsafe) let shardBase: UnsafeMutableRawPointer
    let shardStride: Int
    let shardCount: Int
    let shardMask: Int
    let clock: any LimiterClock

    public init(configuration: Configuration = .init(), clock: any LimiterClock = SystemClock()) {
        var count = 1
        while count < max(1, configuration.shards) { count <<= 1 }
        let perShard = (max(1, configuration.maximumEntries) + count - 1) / count
        let size = MemoryLayout<Mutex<ShardTable>>.stride
        shardStride = (size + 127) / 128 * 128
        shardCount = count
        shardBase = UnsafeMutableRawPointer.allocate(byteCount: shardStride * count, alignment: 128)
        for i in 0..<count {
            (shardBase + i * shardStride).bindMemory(to: Mutex<ShardTable>.self, capacity: 1)
                .initialize(to: Mutex(ShardTable(maximumCount: perShard, seed: UInt64(i) &* 0x9e37_79b9_7f4a_7c15)))
        }
        shardMask = count - 1
        self.clock = clock
    }

    deinit {
        for i in 0..<shardCount { shard(i).deinitialize(count: 1) }
        shardBase.deallocate()
    }

    @inline(__always)
    func shard(_ index: Int) -> UnsafeMutablePointer<Mutex<ShardTable>> {
        (shardBase + index &* shardStride).assumingMemoryBound(to: Mutex<ShardTable>.self)
    }

    public func check(_ plan: Plan, partition: Partition, cost: Int) async throws -> Decision {
        try checkNow(plan, partition: partition, cost: cost)
    }

    /// The synchronous check: evaluates the plan's limits for `partition` and consumes `cost` from all of
    /// them when every enforced limit admits it. Never blocks on anything but a shard lock.
    
    public func checkNow(_ plan: Plan, partition: Partition, cost: Int = 1) throws(LimiterError) -> Decision {
        guard cost >= 0 else { throw LimiterError(.invalidCost, "cost must be 0 or more, got \(cost)") }
        let hot = plan.compiled.hot
        let now = clock.now()
        // The decision is filled in place: it is large (inline per-limit results), and copying it
        // through the closures below would cost more than the check itself.
        var decision = Decision(instant: now)
        withUnsafeMutablePointer(to: &decision) { out in
            let first = hot.pointee.group0
            let (firstSubject, firstHash) = partition.subject(for: first.scope)
            let hash0 = Self.entryHash(firstHash, group: first.id)
            let index0 = Int(truncatingIfNeeded: hash0 >> 58) & shardMask
            if hot.pointee.groupCount == 1 {
                shard(index0).pointee.withLock { table in
                    withUnsafeMutablePointer(to: &table) { pointer in
                        let keys = EntryKeys(hash0: hash0, subject0: firstSubject, hash1: 0, subject1: "")
                        Self.decide(hot, keys: keys, cost: Int64(cost), now: now, table0: pointer, table1: pointer, into: out)
                    }
                }
                return
            }
            let second = hot.pointee.group1
            let (secondSubject, secondHash) = partition.subject(for: second.scope)
            let hash1 = Self.entryHash(secondHash, group: second.id)
            let keys = EntryKeys(hash0: hash0, subject0: firstSubject, hash1: hash1, subject1: secondSubject)
            let index1 = Int(truncatingIfNeeded: hash1 >> 58) & shardMask
            if index0 == index1 {
                shard(index0).pointee.withLock { table in
                    withUnsafeMutablePointer(to: &table) { pointer in
                        Self.decide(hot, keys: keys, cost: Int64(cost), now: now, table0: pointer, table1: pointer, into: out)
                    }
                }
                return
            }
            // Two shards: lock in index order so that concurrent checks cannot deadlock.
            let (low, high) = index0 < index1 ? (index0, index1) : (index1, index0)
            shard(low).pointee.withLock { lowTable in
                shard(high).pointee.withLock { highTable in
                    withUnsafeMutablePointer(to: &lowTable) { lowPointer in
                        withUnsafeMutablePointer(to: &highTable) { highPointer in
                            let (p0, p1) = index0 < index1 ? (lowPointer, highPointer) : (highPointer, lowPointer)
                            Self.decide(hot, keys: keys, cost: Int64(cost), now: now, table0: p0, table1: p1, into: out)
                        }
                    }
                }
            }
        }
        return decision
    }

    struct EntryKeys {
        let hash0: UInt64
        let subject0: String
        let hash1: UInt64
        let subject1: String

        init(hash0: UInt64, subject0: String, hash1: UInt64, subject1: String) {
            self.hash0 = hash0
            self.subject0 = subject0
            self.hash1 = hash1
            self.subject1 = subject1
        }
    }

    @inline(__always)
    static func entryHash(_ subjectHash: UInt64, group: UInt64) -> UInt64 {
        StableHash.mix(subjectHash ^ (group &* 0xff51_afd7_ed55_8ccd)) | 1
    }

    /// Evaluates every limit, then commits all of them or none. Runs with the shard lock(s) held;
    /// `table1` may be the same table as `table0`.
    static func decide(
        _ hot: UnsafeMutablePointer<HotPlan>, keys: EntryKeys, cost: Int64, now clockNow: Int64,
        table0: UnsafeMutablePointer<ShardTable>, table1: UnsafeMutablePointer<ShardTable>,
        into out: UnsafeMutablePointer<Decision>
    ) {
        let specs = hot.pointee.specs
        let groupCount = hot.pointee.groupCount
        let group0 = hot.pointee.group0
        let group1 = hot.pointee.group1
        var slots: (Int?, Int?) = (nil, nil)
        slots.0 = table0.pointee.find(hash: keys.hash0, group: group0.id, subject: keys.subject0)
        let now = clockNow
        if groupCount > 1 {
            slots.1 = table1.pointee.find(hash: keys.hash1, group: group1.id, subject: keys.subject1)
        }

        var next = InlineArray<8, LimitState>(repeating: LimitState())
        var expiresAt: (Int64, Int64) = (now, now)

        // Each limit treats a clock reading earlier than its own last change as that instant: a clock
        // that goes backwards is no time passing.
        func evaluate(_ index: Int, group g: Int, cost: Int64) -> Evaluation {
            let table = g == 0 ? table0 : table1
            let slot = g == 0 ? slots.0 : slots.1
            let spec = specs[index]
            let state = slot.map { table.pointee.entries[$0].states[spec.slot] } ?? LimitState()
            switch spec.kind {
            case .tokenBucket:
                return TokenBucket.evaluate(spec, state, now: max(now, state.b), cost: cost)
            case .slidingCounter:
                return SlidingCounter.evaluate(spec, state, now: max(now, state.a), cost: cost)
            case .fixedWindow:
                let t = max(now, state.a)
                return FixedWindow.evaluate(spec, state, window: FixedWindow.aligned(t, length: spec.window), now: t, cost: cost)
            case .calendar:
                let t = max(now, state.a)
                let window = t < state.c ? (state.a, state.c) : hot.pointee.calendars[index]!.takeUnretainedValue().window(containing: t)
                return FixedWindow.evaluate(spec, state, window: window, now: t, cost: cost)
            case .slidingLog:
                let log = slot.flatMap { table.pointee.entries[$0].logs?[spec.slot] }
                let t = max(now, log?.newest ?? now)
                log?.prune(now: t, window: spec.window)
                return SlidingLog.evaluate(spec, log, now: t, cost: cost)
            }
        }

        for g in 0..<groupCount {
            let group = g == 0 ? group0 : group1
            for m in 0..<group.memberCount {
                let index = group.members[m]
                let spec = specs[index]
                let evaluation = evaluate(index, group: g, cost: cost)
                next[index] = evaluation.next
                if g == 0 {
                    expiresAt.0 = max(expiresAt.0, evaluation.expiresAt)
                } else {
                    expiresAt.1 = max(expiresAt.1, evaluation.expiresAt)
                }
                out.pointee.append(
                    LimitResult(
                        index: index, admits: evaluation.admits, exceedsCapacity: evaluation.exceedsCapacity,
                        shadow: spec.shadow, quota: spec.capacity, windowMicroseconds: evaluation.window,
                        remaining: evaluation.remaining, resetAfterMicroseconds: evaluation.resetAfter,
                        retryAfterMicroseconds: evaluation.retryAfter < 0 ? nil : evaluation.retryAfter))
            }
        }
        out.pointee.sortByIndex()
        out.pointee.settle()
        if !out.pointee.isAllowed {
            // Nothing is consumed: limits that would have admitted report their quota as it stands.
            for g in 0..<groupCount {
                let group = g == 0 ? group0 : group1
                for m in 0..<group.memberCount where out.pointee.storage[group.members[m]].admits {
                    let index = group.members[m]
                    let unchanged = evaluate(index, group: g, cost: 0)
                    out.pointee.storage[index].remaining = unchanged.remaining
                    out.pointee.storage[index].resetAfterMicroseconds = unchanged.resetAfter
                }
            }
            return
        }
        guard cost > 0 else { return }

        // Commit. A shadow limit that would have refused keeps its state: it counts what it would admit.
        for g in 0..<groupCount {
            let table = g == 0 ? table0 : table1
            let group = g == 0 ? group0 : group1
            var slot = g == 0 ? slots.0 : slots.1
            if slot == nil {
                let states = ContiguousArray<LimitState>(repeating: LimitState(), count: group.memberCount)
                let logs: ContiguousArray<SlidingLogEntries?>? =
                    hot.pointee.hasSlidingLog
                    ? ContiguousArray((0..<group.memberCount).map { specs[group.members[$0]].kind == .slidingLog ? SlidingLogEntries() : nil })
                    : nil
                let entry = StoreEntry(expiresAt: now, states: states, logs: logs)
                slot = table.pointee.insert(
                    hash: g == 0 ? keys.hash0 : keys.hash1, group: group.id,
                    subject: g == 0 ? keys.subject0 : keys.subject1, entry: entry, now: now)
                if g == 0 && groupCount > 1 && table0 == table1 && slots.1 != nil {
                    // Inserting may have moved (or evicted) the other group's entry in this shared table.
                    slots.1 = table1.pointee.find(hash: keys.hash1, group: group1.id, subject: keys.subject1)
                }
            }
            let s = slot!
            table.pointee.entries[s].expiresAt = g == 0 ? expiresAt.0 : expiresAt.1
            for m in 0..<group.memberCount {
                let index = group.members[m]
                let spec = specs[index]
                let result = out.pointee.storage[index]
                guard result.admits else { continue }
                table.pointee.entries[s].states[spec.slot] = next[index]
                if spec.kind == .slidingLog {
                    let log = table.pointee.entries[s].logs![spec.slot]!
                    log.append(max(now, log.newest ?? now), cost: cost)
                }
            }
        }
    }

    /// Current counts of entries, reclamations and evictions across all shards.
    public var statistics: Statistics {
        var total = Statistics(entries: 0, reclaimed: 0, evictions: 0)
        for i in 0..<shardCount {
            shard(i).pointee.withLock { table in
                total.entries += table.count
                total.reclaimed += table.reclaimed
                total.evictions += table.evictions
            }
        }
        return total
    }

    /// Removes every entry whose counters have all returned to untouched. Safe to call at any time, for
    /// example from a periodic task; shards are swept one at a time.
    @discardableResult
    public func removeExpired() -> Int {
        let now = clock.now()
        var freed = 0
        for i in 0..<shardCount {
            freed += shard(i).pointee.withLock { $0.removeExpired(now: now) }
        }
        return freed
    }
}

extension Decision {
    /// Results are appended group by group; reports list them in plan order.
    mutating func sortByIndex() {
        // Insertion sort over at most eight results; usually already in order.
        var i = 1
        while i < storedCount {
            let item = storage[i]
            var j = i - 1
            while j >= 0 && storage[j].index > item.index {
                storage[j + 1] = storage[j]
                j -= 1
            }
            storage[j + 1] = item
            i += 1
        }
    }
}
