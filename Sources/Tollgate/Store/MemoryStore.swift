import Synchronization

/// The embedded, in-process limiter: counters in sharded hash tables, each behind its own lock, so
/// checks on different keys rarely contend; bounded in the number of entries it keeps.
///
/// Each entry also has its own lock (`EntrySlot`). A caller that keeps one `Partition` per key and passes
/// it `inout` is remembered where its entries are, and its next check locks those entries alone, without
/// the shard's lock: checks on distinct keys then share no cache line that either writes, so they scale
/// across cores.
///
/// When full, a shard first reclaims entries whose counters are all back to untouched (nothing is
/// lost), then evicts the sampled entry that would expire soonest (the one carrying the least state);
/// evictions are counted in `statistics`. Size `maximumEntries` above the number of active subjects
/// times groups per plan so that eviction never happens in normal operation.
public final class MemoryStore: SynchronousLimitStore, @unchecked Sendable {
    /// Sizing of the store.
    public struct Configuration: Sendable {
        /// The most entries (one per subject and plan scope) kept at once. Default 1,000,000. One shard
        /// holds at least 2 and at most 16,777,215 (2^24 − 1): beyond that many per shard, raise `shards`.
        /// Address space for this many entries (64 bytes each) is reserved up front; memory is used as
        /// entries are created, and kept for the entries that come next.
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
    /// The entry slots of every shard, `perShard` each, shard after shard; reserved in `init`, released
    /// in `deinit`. Slots never move: a hinted check reaches its entry here without the shard's lock.
    nonisolated(unsafe) let entryRegion: UnsafeMutablePointer<StoreEntry>
    let perShard: Int
    let clock: any LimiterClock
    /// `clock` when it is a `SystemClock`: then read directly, without dynamic dispatch.
    let systemClock: SystemClock?
    /// Whether plans of one token bucket take `decideOneBucket`; tests turn it off to compare it with `decide`.
    let usesOneBucketPath: Bool

    public convenience init(configuration: Configuration = .init(), clock: any LimiterClock = SystemClock()) {
        self.init(configuration: configuration, clock: clock, usesOneBucketPath: true)
    }

    init(configuration: Configuration, clock: any LimiterClock, usesOneBucketPath: Bool) {
        self.usesOneBucketPath = usesOneBucketPath
        var count = 1
        while count < max(1, configuration.shards) { count <<= 1 }
        perShard = ShardTable.bound((max(1, configuration.maximumEntries) + count - 1) / count)
        entryRegion = EntryRegion.reserve(slots: perShard * count)
        let size = MemoryLayout<Mutex<ShardTable>>.stride
        shardStride = (size + 127) / 128 * 128
        shardCount = count
        shardBase = UnsafeMutableRawPointer.allocate(byteCount: shardStride * count, alignment: 128)
        for i in 0..<count {
            let table = ShardTable(
                maximumCount: perShard, seed: UInt64(i) &* 0x9e37_79b9_7f4a_7c15, entries: entryRegion + i * perShard)
            (shardBase + i * shardStride).bindMemory(to: Mutex<ShardTable>.self, capacity: 1)
                .initialize(to: Mutex(table))
        }
        shardMask = count - 1
        self.clock = clock
        systemClock = clock as? SystemClock
    }

    deinit {
        for i in 0..<shardCount { shard(i).deinitialize(count: 1) }
        shardBase.deallocate()
        EntryRegion.release(entryRegion, slots: perShard * shardCount)
    }

    @inline(__always)
    func shard(_ index: Int) -> UnsafeMutablePointer<Mutex<ShardTable>> {
        (shardBase + index &* shardStride).assumingMemoryBound(to: Mutex<ShardTable>.self)
    }

    public func check(_ plan: Plan, partition: Partition, cost: Int) async throws -> Decision {
        try checkNow(plan, partition: partition, cost: cost)
    }

    /// The synchronous check: evaluates the plan's limits for `partition` and consumes `cost` from all of
    /// them when every enforced limit admits it. Never blocks on anything but a shard or entry lock.
    @inlinable
    public func checkNow(_ plan: Plan, partition: Partition, cost: Int = 1) throws(LimiterError) -> Decision {
        // Inlined, so that the decision (large: inline per-limit results) is filled where the caller
        // keeps it rather than copied out of this call.
        var decision = Decision(instant: 0)
        try check(plan, partition: partition, hints: nil, cost: cost, into: &decision)
        return decision
    }

    /// `checkNow` for a partition the caller keeps (one per key): it remembers where its counters were
    /// found, so that its next check usually locks them where they are, without the shard's lock or a
    /// search of its index (a hint, checked before it is trusted). The decision is the same as the other
    /// `checkNow`'s.
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
        let oneBucket = hot.pointee.isOneBucket && usesOneBucketPath
        if hot.pointee.groupCount == 1 {
            if let hints,
                let entry = lockHinted(
                    hints.pointee.position(for: first.scope), shard: index0, group: first.id, hash: hash0,
                    subject: partition.subject(for: first.scope))
            {
                if oneBucket {
                    Self.decideOneBucket(hot.pointee.specs, entry: entry, cost: Int64(cost), now: now, into: &decision)
                } else {
                    Self.decideLocked(hot, entries: (entry, nil), cost: Int64(cost), now: now, into: &decision)
                }
                EntrySlot.unlock(entry, group: first.id)
                return
            }
            shard(index0).pointee.withLock { table in
                withUnsafeMutablePointer(to: &table) { pointer in
                    if oneBucket {
                        Self.decideOneBucket(
                            hot, partition: partition, hints: hints, hash: hash0, cost: Int64(cost), now: now, table: pointer,
                            into: &decision)
                    } else {
                        Self.decide(
                            hot, partition: partition, hints: hints, hashes: (hash0, 0), cost: Int64(cost), now: now,
                            tables: (pointer, pointer), into: &decision)
                    }
                }
            }
            return
        }
        let second = hot.pointee.groups[1]
        let hash1 = Self.entryHash(partition.hash(for: second.scope), group: second.id)
        let index1 = shardIndex(hash1)
        if let hints,
            let entries = lockHinted(
                (hints.pointee.position(for: first.scope), hints.pointee.position(for: second.scope)),
                shards: (index0, index1), groups: (first.id, second.id), hashes: (hash0, hash1),
                subjects: (partition.subject(for: first.scope), partition.subject(for: second.scope)))
        {
            Self.decideLocked(hot, entries: (entries.0, entries.1), cost: Int64(cost), now: now, into: &decision)
            EntrySlot.unlock(entries.0, group: first.id)
            EntrySlot.unlock(entries.1, group: second.id)
            return
        }
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

    /// The entry at the hinted `position` of shard `shard`, locked, if it is the one for `group`, `hash`
    /// and `subject`; nil (nothing locked) otherwise. Takes no shard lock: the slot's lock, taken only if
    /// the slot holds an entry of `group`, keeps its identity and counters from changing while compared
    /// and used.
    @inline(__always)
    func lockHinted(
        _ position: Int, shard: Int, group: UInt32, hash: UInt64, subject: String
    ) -> UnsafeMutablePointer<StoreEntry>? {
        guard UInt(bitPattern: position) < UInt(bitPattern: perShard) else { return nil }
        let entry = entryRegion + (shard &* perShard &+ position)
        guard EntrySlot.tryLock(entry, group: group) else { return nil }
        if ShardTable.matches(entry, hash: UInt32(truncatingIfNeeded: hash), subject: subject) { return entry }
        EntrySlot.unlock(entry, group: group)
        return nil
    }

    /// `lockHinted` for a plan's two groups, both or neither: the key's group, then the organization's (every
    /// plan orders its groups so). A try-lock waits only a little, so two checks cannot hold each other up.
    @inline(__always)
    func lockHinted(
        _ positions: (Int, Int), shards: (Int, Int), groups: (UInt32, UInt32), hashes: (UInt64, UInt64),
        subjects: (String, String)
    ) -> (UnsafeMutablePointer<StoreEntry>, UnsafeMutablePointer<StoreEntry>)? {
        guard let a = lockHinted(positions.0, shard: shards.0, group: groups.0, hash: hashes.0, subject: subjects.0)
        else { return nil }
        guard let b = lockHinted(positions.1, shard: shards.1, group: groups.1, hash: hashes.1, subject: subjects.1)
        else {
            EntrySlot.unlock(a, group: groups.0)
            return nil
        }
        return (a, b)
    }

    /// The decision with the shard lock(s) held: finds the groups' entries, locks them, evaluates every
    /// limit, then commits all of them or none, creating the entries that must count the request.
    /// `tables.1` (the second group's) may be the same table as `tables.0`.
    static func decide(
        _ hot: UnsafeMutablePointer<HotPlan>, partition: Partition, hints: UnsafeMutablePointer<EntryHints>?,
        hashes: (UInt64, UInt64), cost: Int64, now: Int64,
        tables: (UnsafeMutablePointer<ShardTable>, UnsafeMutablePointer<ShardTable>), into decision: inout Decision
    ) {
        let groupCount = hot.pointee.groupCount
        let ids = (hot.pointee.groups[0].id, groupCount > 1 ? hot.pointee.groups[1].id : 0)
        /// How many of the flagged groups' entries go to each table (`tables.1` may be `tables.0`).
        func perTable(_ flags: (Bool, Bool)) -> (Int, Int) {
            let (first, second) = (flags.0 ? 1 : 0, flags.1 ? 1 : 0)
            return tables.0 == tables.1 ? (first + second, 0) : (first, second)
        }
        withUnsafeTemporaryAllocation(of: LimitState.self, capacity: 8) { next in
            while true {
                // Pointers into the tables, valid while the shard locks are held and nothing is removed.
                var entries: (UnsafeMutablePointer<StoreEntry>?, UnsafeMutablePointer<StoreEntry>?) = (
                    find(hot, 0, partition: partition, hints: hints, hashes: hashes, tables: tables),
                    groupCount > 1 ? find(hot, 1, partition: partition, hints: hints, hashes: hashes, tables: tables) : nil
                )
                // The entries a request may create are made, and room in the index for them, before any
                // entry is locked: nothing allocates while holding a lock that hinted checks wait for (an
                // organization's entry, say).
                func fresh(_ g: Int) -> StoreEntry? {
                    guard cost > 0, g < groupCount, (g == 0 ? entries.0 : entries.1) == nil else { return nil }
                    let group = hot.pointee.groups + g
                    return newEntry(
                        group.pointee, hash: g == 0 ? hashes.0 : hashes.1,
                        subject: partition.subject(for: group.pointee.scope), specs: hot.pointee.specs, now: now)
                }
                let made = (fresh(0), fresh(1))
                let room = perTable((made.0 != nil, made.1 != nil))
                tables.0.pointee.reserveIndex(for: room.0)
                tables.1.pointee.reserveIndex(for: room.1)
                lockInAddressOrder(entries)
                var expiresAt: (Int64, Int64) = (now, now)
                let counts = evaluate(
                    hot, entries: entries, cost: cost, now: now, next: next.baseAddress!, expiresAt: &expiresAt,
                    into: &decision)
                let missing = (counts.0 && entries.0 == nil, counts.1 && entries.1 == nil)
                if missing.0 || missing.1 {
                    let needed = perTable(missing)
                    if !tables.0.pointee.hasRoom(for: needed.0) || !tables.1.pointee.hasRoom(for: needed.1) {
                        // Making room removes and moves entries, which takes their locks: give ours back,
                        // then decide again over what is left (nothing was committed).
                        unlock(entries, groups: ids)
                        tables.0.pointee.makeRoom(for: needed.0, now: now)
                        tables.1.pointee.makeRoom(for: needed.1, now: now)
                        continue
                    }
                    for g in 0..<groupCount where g == 0 ? missing.0 : missing.1 {
                        let group = hot.pointee.groups + g
                        let table = g == 0 ? tables.0 : tables.1
                        // Published locked; the table's entries never move, so `entries.0` stays valid.
                        let position = table.pointee.insert((g == 0 ? made.0 : made.1).unsafelyUnwrapped, group: group.pointee.id)
                        hints?.pointee.remember(position, for: group.pointee.scope)
                        if g == 0 { entries.0 = table.pointee.entries + position } else { entries.1 = table.pointee.entries + position }
                    }
                }
                commit(
                    hot, entries: entries, counts: counts, next: next.baseAddress!, expiresAt: expiresAt, cost: cost, now: now,
                    decision: &decision)
                unlock(entries, groups: ids)
                return
            }
        }
    }

    /// The decision for entries that all exist and are locked by the caller (a hinted check).
    @inline(__always)
    static func decideLocked(
        _ hot: UnsafeMutablePointer<HotPlan>, entries: (UnsafeMutablePointer<StoreEntry>?, UnsafeMutablePointer<StoreEntry>?),
        cost: Int64, now: Int64, into decision: inout Decision
    ) {
        withUnsafeTemporaryAllocation(of: LimitState.self, capacity: 8) { next in
            var expiresAt: (Int64, Int64) = (now, now)
            let counts = evaluate(
                hot, entries: entries, cost: cost, now: now, next: next.baseAddress!, expiresAt: &expiresAt, into: &decision)
            commit(
                hot, entries: entries, counts: counts, next: next.baseAddress!, expiresAt: expiresAt, cost: cost, now: now,
                decision: &decision)
        }
    }

    /// Evaluates every limit from the groups' entries (locked; nil: none yet, untouched limits) and settles
    /// the decision. Returns, per group, whether it must count the request: only when the request is
    /// admitted with a cost, and only groups with a limit that admits it (a group whose limits all refused,
    /// shadow ones, has nothing to count and gets no entry, which could evict another key's counters).
    /// `next` receives the states to commit, by limit index.
    @inline(__always)
    static func evaluate(
        _ hot: UnsafeMutablePointer<HotPlan>, entries: (UnsafeMutablePointer<StoreEntry>?, UnsafeMutablePointer<StoreEntry>?),
        cost: Int64, now: Int64, next: UnsafeMutablePointer<LimitState>, expiresAt: inout (Int64, Int64),
        into decision: inout Decision
    ) -> (Bool, Bool) {
        let specs = hot.pointee.specs
        let groupCount = hot.pointee.groupCount
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
            return (false, false)
        }
        guard cost > 0 else { return (false, false) }
        func counts(_ g: Int) -> Bool {
            let group = hot.pointee.groups + g
            return (0..<group.pointee.memberCount).contains { decision.storage[group.pointee.members[$0]].admits }
        }
        return (counts(0), groupCount > 1 && counts(1))
    }

    /// Writes the evaluated states of the groups that count the request into their entries (locked, and
    /// present for every group that counts). A shadow limit that would have refused keeps its state: it
    /// counts what it would admit.
    @inline(__always)
    static func commit(
        _ hot: UnsafeMutablePointer<HotPlan>, entries: (UnsafeMutablePointer<StoreEntry>?, UnsafeMutablePointer<StoreEntry>?),
        counts: (Bool, Bool), next: UnsafeMutablePointer<LimitState>, expiresAt: (Int64, Int64), cost: Int64, now: Int64,
        decision: inout Decision
    ) {
        let specs = hot.pointee.specs
        for g in 0..<hot.pointee.groupCount where g == 0 ? counts.0 : counts.1 {
            let group = hot.pointee.groups + g
            let entry = (g == 0 ? entries.0 : entries.1).unsafelyUnwrapped
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

    /// Locks the entries there are, in address order.
    @inline(__always)
    static func lockInAddressOrder(_ entries: (UnsafeMutablePointer<StoreEntry>?, UnsafeMutablePointer<StoreEntry>?)) {
        switch entries {
        case (let a?, let b?):
            EntrySlot.lock(min(a, b))
            EntrySlot.lock(max(a, b))
        case (let a?, nil), (nil, let a?):
            EntrySlot.lock(a)
        case (nil, nil):
            break
        }
    }

    @inline(__always)
    static func unlock(
        _ entries: (UnsafeMutablePointer<StoreEntry>?, UnsafeMutablePointer<StoreEntry>?), groups: (UInt32, UInt32)
    ) {
        if let a = entries.0 { EntrySlot.unlock(a, group: groups.0) }
        if let b = entries.1 { EntrySlot.unlock(b, group: groups.1) }
    }

    /// `decide` for a plan of one token bucket, with the shard lock held: the same answers, without the
    /// general loops.
    @inline(__always)
    static func decideOneBucket(
        _ hot: UnsafeMutablePointer<HotPlan>, partition: Partition, hints: UnsafeMutablePointer<EntryHints>?,
        hash: UInt64, cost: Int64, now: Int64, table: UnsafeMutablePointer<ShardTable>, into decision: inout Decision
    ) {
        let group = hot.pointee.groups
        if let position = find(group, partition: partition, hints: hints, hash: hash, table: table) {
            let entry = table.pointee.entries + position
            EntrySlot.lock(entry)
            decideOneBucket(hot.pointee.specs, entry: entry, cost: cost, now: now, into: &decision)
            EntrySlot.unlock(entry, group: group.pointee.id)
            return
        }
        let evaluation = evaluateOneBucket(hot.pointee.specs, LimitState(), cost: cost, now: now, into: &decision)
        guard evaluation.admits && cost > 0 else { return }
        // No entry locks are held: making room may take others' locks.
        table.pointee.makeRoom(for: 1, now: now)
        let new = newEntry(
            group.pointee, hash: hash, subject: partition.subject(for: group.pointee.scope), specs: hot.pointee.specs, now: now)
        let position = table.pointee.insert(new, group: group.pointee.id)
        hints?.pointee.remember(position, for: group.pointee.scope)
        let entry = table.pointee.entries + position
        commitOneBucket(evaluation, to: entry, now: now)
        EntrySlot.unlock(entry, group: group.pointee.id)
    }

    /// The one-bucket decision on an existing entry, locked by the caller.
    @inline(__always)
    static func decideOneBucket(
        _ spec: UnsafeMutablePointer<LimitSpec>, entry: UnsafeMutablePointer<StoreEntry>, cost: Int64, now: Int64,
        into decision: inout Decision
    ) {
        let evaluation = evaluateOneBucket(spec, entry.pointee.first, cost: cost, now: now, into: &decision)
        guard evaluation.admits && cost > 0 else { return }
        commitOneBucket(evaluation, to: entry, now: now)
    }

    /// Writes an admitted one-bucket evaluation into its entry (locked by the caller).
    @inline(__always)
    static func commitOneBucket(_ evaluation: Evaluation, to entry: UnsafeMutablePointer<StoreEntry>, now: Int64) {
        entry.pointee.expiresAt = max(now, evaluation.expiresAt)
        entry.pointee.first = evaluation.next
    }

    @inline(__always)
    static func evaluateOneBucket(
        _ spec: UnsafeMutablePointer<LimitSpec>, _ state: LimitState, cost: Int64, now: Int64, into decision: inout Decision
    ) -> Evaluation {
        let evaluation = TokenBucket.evaluate(spec.pointee, state, now: max(now, state.b), cost: cost)
        decision.storage[0] = LimitResult(index: 0, spec: spec.pointee, evaluation: evaluation)
        decision.storedCount = 1
        decision.settle()
        return evaluation
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
    /// entry is there, else looked up in the index (and the hint updated). The caller holds the shard lock.
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
        return StoreEntry(hash: hash, subject: subject, now: now, more: more)
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
        if spec.kind == .slidingLog {
            let log = entry?.pointee.log(spec.slot)
            let t = max(now, log?.newest ?? now)
            log?.prune(now: t, window: spec.window)
            return SlidingLog.evaluate(spec, log, now: t, cost: cost)
        }
        return of(spec, calendar: calendar, state: entry?.pointee.state(spec.slot) ?? LimitState(), now: now, cost: cost)
    }

    /// What one limit other than a sliding log says about a request, from its state.
    @_transparent
    static func of(
        _ spec: LimitSpec, calendar: Unmanaged<CalendarWindows>?, state: LimitState, now: Int64, cost: Int64
    ) -> Evaluation {
        switch spec.kind {
        case .tokenBucket:
            return TokenBucket.evaluate(spec, state, now: max(now, state.b), cost: cost)
        case .slidingCounter:
            return SlidingCounter.evaluate(spec, state, now: max(now, state.a), cost: cost)
        case .fixedWindow:
            let t = max(now, state.a)
            return FixedWindow.evaluate(spec, state, window: FixedWindow.aligned(t, length: spec.window), now: t, cost: cost)
        case .calendar, .slidingLog:  // a sliding log is evaluated from its entries, never from a state
            let t = max(now, state.a)
            let window = t < state.c ? (state.a, state.c) : calendar!.takeUnretainedValue().window(containing: t)
            return FixedWindow.evaluate(spec, state, window: window, now: t, cost: cost)
        }
    }
}
