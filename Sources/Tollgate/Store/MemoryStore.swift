import Synchronization

/// The embedded, in-process limiter: counters in sharded hash tables, each behind its own lock, so
/// checks on different keys rarely contend; bounded in the number of entries it keeps.
///
/// When full, a shard first reclaims entries whose counters are all back to untouched (nothing is
/// lost), then evicts the sampled entry that would expire soonest (the one carrying the least state);
/// evictions are counted in `statistics`. Size `maximumEntries` above the number of active subjects
/// times groups per plan so that eviction never happens in normal operation.
public final class MemoryStore: SynchronousLimitStore, @unchecked Sendable {
    /// Sizing of the store.
    public struct Configuration: Sendable {
        /// The most entries (one per subject and plan scope) kept at once. Default 1,000,000. One shard
        /// holds at most 16,777,215 (2^24 − 1): beyond that many per shard, raise `shards`.
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
    /// `clock` when it is a `SystemClock`: then read directly, without dynamic dispatch.
    let systemClock: SystemClock?
    /// Whether plans of one token bucket take `decideOneBucket`; tests turn it off to compare it with `decide`.
    var usesOneBucketPath = true

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
        systemClock = clock as? SystemClock
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
    @inlinable
    public func checkNow(_ plan: Plan, partition: Partition, cost: Int = 1) throws(LimiterError) -> Decision {
        // Inlined, so that the decision (large: inline per-limit results) is filled where the caller
        // keeps it rather than copied out of this call.
        var decision = Decision(instant: 0)
        try check(plan, partition: partition, hints: nil, cost: cost, into: &decision)
        return decision
    }

    /// `checkNow` for a partition the caller keeps (one per key): it remembers where its counters were
    /// found, so that its next check usually reads them without searching the store's index (a hint,
    /// checked before it is trusted). The decision is the same as the other `checkNow`'s.
    @inlinable
    public func checkNow(_ plan: Plan, partition: inout Partition, cost: Int = 1) throws(LimiterError) -> Decision {
        var decision = Decision(instant: 0)
        var hints = partition.hints
        defer { partition.hints = hints }
        try check(plan, partition: partition, hints: &hints, cost: cost, into: &decision)
        return decision
    }

    /// `checkNow`, filling `decision` in place: its instant, its per-limit results and its verdict; reading
    /// and updating the partition's entry `hints` when the caller keeps them.
    @usableFromInline
    func check(
        _ plan: Plan, partition: Partition, hints: UnsafeMutablePointer<EntryHints>?, cost: Int,
        into decision: inout Decision
    ) throws(LimiterError) {
        guard cost >= 0 else { throw LimiterError(.invalidCost, "cost must be 0 or more, got \(cost)") }
        let hot = plan.compiled.hot
        let now = systemClock?.now() ?? clock.now()
        decision.instant = now
        let first = hot.pointee.groups[0]
        let hash0 = Self.entryHash(partition.hash(for: first.scope), group: first.id)
        let index0 = shardIndex(hash0)
        if hot.pointee.isOneBucket && usesOneBucketPath {
            shard(index0).pointee.withLock { table in
                withUnsafeMutablePointer(to: &table) { pointer in
                    Self.decideOneBucket(
                        hot, partition: partition, hints: hints, hash: hash0, cost: Int64(cost), now: now, table: pointer,
                        into: &decision)
                }
            }
            return
        }
        if hot.pointee.groupCount == 1 {
            shard(index0).pointee.withLock { table in
                withUnsafeMutablePointer(to: &table) { pointer in
                    Self.decide(
                        hot, partition: partition, hints: hints, hashes: (hash0, 0), cost: Int64(cost), now: now,
                        tables: (pointer, pointer), into: &decision)
                }
            }
            return
        }
        let second = hot.pointee.groups[1]
        let hash1 = Self.entryHash(partition.hash(for: second.scope), group: second.id)
        let index1 = shardIndex(hash1)
        if index0 == index1 {
            shard(index0).pointee.withLock { table in
                withUnsafeMutablePointer(to: &table) { pointer in
                    Self.decide(
                        hot, partition: partition, hints: hints, hashes: (hash0, hash1), cost: Int64(cost), now: now,
                        tables: (pointer, pointer), into: &decision)
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
                        Self.decide(
                            hot, partition: partition, hints: hints, hashes: (hash0, hash1), cost: Int64(cost), now: now,
                            tables: index0 < index1 ? (lowPointer, highPointer) : (highPointer, lowPointer),
                            into: &decision)
                    }
                }
            }
        }
    }

    @inline(__always)
    func shardIndex(_ entryHash: UInt64) -> Int {
        Int(truncatingIfNeeded: entryHash >> 58) & shardMask
    }

    @inline(__always)
    static func entryHash(_ subjectHash: UInt64, group: UInt32) -> UInt64 {
        StableHash.mix(subjectHash ^ (UInt64(group) &* 0xff51_afd7_ed55_8ccd)) | 1
    }

    /// Evaluates every limit, then commits all of them or none. Runs with the shard lock(s) held;
    /// `tables.1` (the second group's) may be the same table as `tables.0`.
    static func decide(
        _ hot: UnsafeMutablePointer<HotPlan>, partition: Partition, hints: UnsafeMutablePointer<EntryHints>?, hashes: (UInt64, UInt64), cost: Int64, now: Int64,
        tables: (UnsafeMutablePointer<ShardTable>, UnsafeMutablePointer<ShardTable>), into decision: inout Decision
    ) {
        let specs = hot.pointee.specs
        let groupCount = hot.pointee.groupCount
        // The entries of the groups (nil: none yet); pointers into the tables, valid until an insertion.
        var entries: (UnsafeMutablePointer<StoreEntry>?, UnsafeMutablePointer<StoreEntry>?) = (
            find(hot, 0, partition: partition, hints: hints, hashes: hashes, tables: tables),
            groupCount > 1 ? find(hot, 1, partition: partition, hints: hints, hashes: hashes, tables: tables) : nil
        )

        // The states to commit, by limit index; only those of evaluated limits are ever read.
        withUnsafeTemporaryAllocation(of: LimitState.self, capacity: 8) { next in
            var expiresAt: (Int64, Int64) = (now, now)
            for g in 0..<groupCount {
                let group = hot.pointee.groups + g
                let entry = g == 0 ? entries.0 : entries.1
                var expires = now
                for m in 0..<group.pointee.memberCount {
                    let index = group.pointee.members[m]
                    let spec = specs + index
                    let evaluation = Evaluation.of(
                        spec.pointee, calendar: hot.pointee.calendars[index], entry: entry, now: now, cost: cost)
                    next[index] = evaluation.next
                    expires = max(expires, evaluation.expiresAt)
                    decision.storage[index] = LimitResult(index: index, spec: spec.pointee, evaluation: evaluation)
                }
                if g == 0 { expiresAt.0 = expires } else { expiresAt.1 = expires }
            }
            decision.storedCount = hot.pointee.limitCount
            decision.settle()
            if !decision.isAllowed {
                // Nothing is consumed: limits that would have admitted report their quota as it stands.
                for g in 0..<groupCount {
                    let group = hot.pointee.groups + g
                    let entry = g == 0 ? entries.0 : entries.1
                    for m in 0..<group.pointee.memberCount where decision.storage[group.pointee.members[m]].admits {
                        let index = group.pointee.members[m]
                        let unchanged = Evaluation.of(specs[index], calendar: hot.pointee.calendars[index], entry: entry, now: now, cost: 0)
                        decision.storage[index].remaining = unchanged.remaining
                        decision.storage[index].resetAfterMicroseconds = unchanged.resetAfter
                    }
                }
                return
            }
            guard cost > 0 else { return }

            // Commit. A shadow limit that would have refused keeps its state: it counts what it would admit.
            for g in 0..<groupCount {
                let group = hot.pointee.groups + g
                let table = g == 0 ? tables.0 : tables.1
                // A group whose limits all refused (shadow ones: the request passed) has nothing to count,
                // and no entry is created for it (which could evict another key's counters).
                guard (0..<group.pointee.memberCount).contains(where: { decision.storage[group.pointee.members[$0]].admits })
                else { continue }
                if (g == 0 ? entries.0 : entries.1) == nil {
                    let entry = newEntry(
                        group.pointee, hash: g == 0 ? hashes.0 : hashes.1, subject: partition.subject(for: group.pointee.scope),
                        specs: specs, now: now)
                    // Inserting may grow the table: its entries are reached only after.
                    let position = table.pointee.insert(entry, now: now)
                    hints?.pointee.remember(position, for: group.pointee.scope)
                    let inserted = table.pointee.entries + position
                    if g == 0 {
                        entries.0 = inserted
                        if entries.1 != nil && tables.0 == tables.1 {
                            // Inserting may have moved (or evicted) the other group's entry in this shared table.
                            entries.1 = find(hot, 1, partition: partition, hints: hints, hashes: hashes, tables: tables)
                        }
                    } else {
                        entries.1 = inserted
                    }
                }
                let entry = (g == 0 ? entries.0 : entries.1)!
                entry.pointee.expiresAt = g == 0 ? expiresAt.0 : expiresAt.1
                for m in 0..<group.pointee.memberCount where decision.storage[group.pointee.members[m]].admits {
                    let index = group.pointee.members[m]
                    entry.pointee.setState(m, next[index])
                    if specs[index].kind == .slidingLog {
                        let log = entry.pointee.log(m)
                        log.append(max(now, log.newest ?? now), cost: cost)
                    }
                }
            }
        }
    }

    /// `decide` for a plan of one token bucket: the same answers, without the general loops.
    @inline(__always)
    static func decideOneBucket(
        _ hot: UnsafeMutablePointer<HotPlan>, partition: Partition, hints: UnsafeMutablePointer<EntryHints>?,
        hash: UInt64, cost: Int64, now: Int64, table: UnsafeMutablePointer<ShardTable>, into decision: inout Decision
    ) {
        let group = hot.pointee.groups
        let spec = hot.pointee.specs
        let position = find(group, partition: partition, hints: hints, hash: hash, table: table)
        let state = position.map { table.pointee.entries[$0].first } ?? LimitState()
        let evaluation = TokenBucket.evaluate(spec.pointee, state, now: max(now, state.b), cost: cost)
        decision.storage[0] = LimitResult(index: 0, spec: spec.pointee, evaluation: evaluation)
        decision.storedCount = 1
        decision.settle()
        guard evaluation.admits && cost > 0 else { return }
        let entry: UnsafeMutablePointer<StoreEntry>
        if let position {
            entry = table.pointee.entries + position
        } else {
            let new = newEntry(
                group.pointee, hash: hash, subject: partition.subject(for: group.pointee.scope), specs: spec, now: now)
            // Inserting may grow the table: its entries are reached only after.
            let inserted = table.pointee.insert(new, now: now)
            hints?.pointee.remember(inserted, for: group.pointee.scope)
            entry = table.pointee.entries + inserted
        }
        entry.pointee.expiresAt = max(now, evaluation.expiresAt)
        entry.pointee.first = evaluation.next
    }

    /// The entry of group `g` for `partition`, if there is one. Compared where they are: the partition's
    /// strings are never copied to look an entry up.
    @inline(__always)
    static func find(
        _ hot: UnsafeMutablePointer<HotPlan>, _ g: Int, partition: Partition, hints: UnsafeMutablePointer<EntryHints>?,
        hashes: (UInt64, UInt64), tables: (UnsafeMutablePointer<ShardTable>, UnsafeMutablePointer<ShardTable>)
    ) -> UnsafeMutablePointer<StoreEntry>? {
        let table = g == 0 ? tables.0 : tables.1
        let position = find(
            hot.pointee.groups + g, partition: partition, hints: hints, hash: g == 0 ? hashes.0 : hashes.1, table: table)
        return position.map { table.pointee.entries + $0 }
    }

    /// The position of `group`'s entry for `partition` in `table`: where the caller's hint says if the
    /// entry is there, else looked up in the index (and the hint updated).
    @inline(__always)
    static func find(
        _ group: UnsafeMutablePointer<LimitGroup>, partition: Partition, hints: UnsafeMutablePointer<EntryHints>?,
        hash: UInt64, table: UnsafeMutablePointer<ShardTable>
    ) -> Int? {
        let scope = group.pointee.scope
        let subject = partition.subject(for: scope)
        if let hints {
            let hint = hints.pointee.position(for: scope)
            if table.pointee.holds(hash: hash, group: group.pointee.id, subject: subject, at: hint) { return hint }
        }
        let position = table.pointee.find(hash: hash, group: group.pointee.id, subject: subject)
        if let position { hints?.pointee.remember(position, for: scope) }
        return position
    }

    /// A new entry for `group`: untouched states, and an empty log for each sliding log.
    static func newEntry(
        _ group: LimitGroup, hash: UInt64, subject: String, specs: UnsafeMutablePointer<LimitSpec>, now: Int64
    ) -> StoreEntry {
        func isLog(_ m: Int) -> Bool { specs[group.members[m]].kind == .slidingLog }
        let hasLog = (0..<group.memberCount).contains(where: isLog)
        var more: MoreStates?
        if group.memberCount > 1 || hasLog {
            let logs = hasLog ? ContiguousArray((0..<group.memberCount).map { isLog($0) ? SlidingLogEntries() : nil }) : []
            more = MoreStates.make(states: group.memberCount - 1, logs: logs)
        }
        return StoreEntry(hash: hash, group: group.id, subject: subject, now: now, more: more)
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

extension Evaluation {
    /// What one limit says about a request, from the state in `entry` (nil: no state yet, an untouched
    /// limit). Each limit treats a clock reading earlier than its own last change as that instant: a
    /// clock that goes backwards is no time passing.
    @_transparent
    static func of(
        _ spec: LimitSpec, calendar: Unmanaged<CalendarWindows>?, entry: UnsafeMutablePointer<StoreEntry>?,
        now: Int64, cost: Int64
    ) -> Evaluation {
        let state = entry?.pointee.state(spec.slot) ?? LimitState()
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
            let window = t < state.c ? (state.a, state.c) : calendar!.takeUnretainedValue().window(containing: t)
            return FixedWindow.evaluate(spec, state, window: window, now: t, cost: cost)
        case .slidingLog:
            let log = entry?.pointee.log(spec.slot)
            let t = max(now, log?.newest ?? now)
            log?.prune(now: t, window: spec.window)
            return SlidingLog.evaluate(spec, log, now: t, cost: cost)
        }
    }
}
