/// The counters of one group of limits for one subject.
struct StoreEntry: Sendable {
    /// When every counter is back to its untouched state, so the entry may be reclaimed.
    var expiresAt: Int64
    var states: ContiguousArray<LimitState>
    /// One log per member limit that is a sliding log; nil for plans without one.
    var logs: ContiguousArray<SlidingLogEntries?>?
}

/// An open-addressing hash table (linear probing, backward-shift deletion) keyed by group and subject,
/// with the caller's precomputed hash. Bounded: at `maximumCount` it reclaims expired entries, then
/// evicts the sampled entry that expires soonest.
struct ShardTable: Sendable {
    var hashes: ContiguousArray<UInt64>  // 0 marks an empty slot
    var groups: ContiguousArray<UInt64>
    var subjects: ContiguousArray<String>
    var entries: ContiguousArray<StoreEntry>
    var count = 0
    var mask: Int
    let maximumCount: Int
    var random: UInt64
    var evictions = 0
    var reclaimed = 0

    static let emptyEntry = StoreEntry(expiresAt: .min, states: [], logs: nil)

    init(maximumCount: Int, seed: UInt64) {
        self.maximumCount = max(1, maximumCount)
        let size = 16
        hashes = ContiguousArray(repeating: 0, count: size)
        groups = ContiguousArray(repeating: 0, count: size)
        subjects = ContiguousArray(repeating: "", count: size)
        entries = ContiguousArray(repeating: Self.emptyEntry, count: size)
        mask = size - 1
        random = seed | 1
    }

    @inline(__always)
    func find(hash: UInt64, group: UInt64, subject: String) -> Int? {
        var i = Int(truncatingIfNeeded: hash) & mask
        while true {
            let h = hashes[i]
            if h == 0 { return nil }
            if h == hash && groups[i] == group && subjects[i] == subject { return i }
            i = (i &+ 1) & mask
        }
    }

    /// Inserts a new entry (the key must be absent) and returns its slot, making room first if needed.
    mutating func insert(
        hash: UInt64, group: UInt64, subject: String, entry: StoreEntry, now: Int64
    ) -> Int {
        if count >= maximumCount { makeRoom(now: now) }
        if (count &+ 1) * 4 > hashes.count * 3 { grow() }
        var i = Int(truncatingIfNeeded: hash) & mask
        while hashes[i] != 0 { i = (i &+ 1) & mask }
        hashes[i] = hash
        groups[i] = group
        subjects[i] = subject
        entries[i] = entry
        count &+= 1
        return i
    }

    mutating func grow() {
        let old = (hashes, groups, subjects, entries)
        let size = hashes.count * 2
        hashes = ContiguousArray(repeating: 0, count: size)
        groups = ContiguousArray(repeating: 0, count: size)
        subjects = ContiguousArray(repeating: "", count: size)
        entries = ContiguousArray(repeating: Self.emptyEntry, count: size)
        mask = size - 1
        for j in old.0.indices where old.0[j] != 0 {
            var i = Int(truncatingIfNeeded: old.0[j]) & mask
            while hashes[i] != 0 { i = (i &+ 1) & mask }
            hashes[i] = old.0[j]
            groups[i] = old.1[j]
            subjects[i] = old.2[j]
            entries[i] = old.3[j]
        }
    }

    /// Removes expired entries; when none had expired, evicts the soonest-expiring of a few sampled ones.
    mutating func makeRoom(now: Int64) {
        let freed = removeExpired(now: now)
        if freed > 0 { return }
        var victim = -1
        var soonest = Int64.max
        for _ in 0..<8 {
            random ^= random << 13
            random ^= random >> 7
            random ^= random << 17
            var i = Int(truncatingIfNeeded: random) & mask
            while hashes[i] == 0 { i = (i &+ 1) & mask }
            if entries[i].expiresAt < soonest {
                soonest = entries[i].expiresAt
                victim = i
            }
        }
        if victim >= 0 {
            remove(at: victim)
            evictions &+= 1
        }
    }

    /// Removes every entry whose counters are all back to untouched; returns how many.
    @discardableResult
    mutating func removeExpired(now: Int64) -> Int {
        var freed = 0
        var i = 0
        while i < hashes.count {
            if hashes[i] != 0 && entries[i].expiresAt <= now {
                remove(at: i)
                freed &+= 1
                continue  // the slot may now hold a shifted entry
            }
            i &+= 1
        }
        reclaimed &+= freed
        return freed
    }

    mutating func remove(at slot: Int) {
        var hole = slot
        var j = slot
        while true {
            j = (j &+ 1) & mask
            if hashes[j] == 0 { break }
            let home = Int(truncatingIfNeeded: hashes[j]) & mask
            // Move j into the hole unless its home lies cyclically in (hole, j].
            let stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j)
            if !stays {
                hashes[hole] = hashes[j]
                groups[hole] = groups[j]
                subjects[hole] = subjects[j]
                entries[hole] = entries[j]
                hole = j
            }
        }
        hashes[hole] = 0
        groups[hole] = 0
        subjects[hole] = ""
        entries[hole] = Self.emptyEntry
        count &-= 1
    }
}
