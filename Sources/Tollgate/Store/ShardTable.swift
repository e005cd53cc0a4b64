/// The counters of one group of limits for one subject, in 64 bytes, so that a lookup of a group of one
/// limit (the common plan) reads one cache line of entries.
struct StoreEntry {
    /// The low 32 bits of the entry's hash: odd, so never 0.
    let hash: UInt32
    let group: UInt32
    let subject: String
    /// When every counter is back to its untouched state, so the entry may be reclaimed.
    var expiresAt: Int64
    /// The state of the group's first limit.
    var first: LimitState
    /// The states of the other limits and the group's sliding logs; nil when the group has one limit
    /// and it is not a sliding log.
    let more: MoreStates?

    init(hash: UInt64, group: UInt32, subject: String, now: Int64, more: MoreStates?) {
        self.hash = UInt32(truncatingIfNeeded: hash)
        self.group = group
        self.subject = subject
        expiresAt = now
        first = LimitState()
        self.more = more
    }

    /// The state of the limit in slot `slot` of the group.
    @inline(__always)
    func state(_ slot: Int) -> LimitState {
        slot == 0 ? first : more.unsafelyUnwrapped.withUnsafeMutablePointerToElements { $0[slot &- 1] }
    }

    @inline(__always)
    mutating func setState(_ slot: Int, _ state: LimitState) {
        if slot == 0 {
            first = state
        } else {
            more.unsafelyUnwrapped.withUnsafeMutablePointerToElements { $0[slot &- 1] = state }
        }
    }

    /// The log of the limit in slot `slot`, which must be a sliding log.
    func log(_ slot: Int) -> SlidingLogEntries { more!.header[slot]! }
}

/// The states of a group's limits after the first, allocated with the group's sliding logs (the header:
/// one per limit, nil for limits of other kinds, empty when the group has no sliding log).
final class MoreStates: ManagedBuffer<ContiguousArray<SlidingLogEntries?>, LimitState> {
    static func make(states: Int, logs: ContiguousArray<SlidingLogEntries?>) -> MoreStates {
        let buffer = create(minimumCapacity: states) { _ in logs }
        buffer.withUnsafeMutablePointerToElements { $0.initialize(repeating: LimitState(), count: states) }
        return unsafeDowncast(buffer, to: MoreStates.self)
    }
    // `LimitState` is trivial: the elements need no deinitialization.
}

/// A hash table keyed by group and subject, with the caller's precomputed hash: an open-addressing index
/// (linear probing, backward-shift deletion) over entries kept dense, in insertion order. Bounded: at
/// `maximumCount` it reclaims expired entries, then evicts the sampled entry that expires soonest.
///
/// The index is small (4 bytes a slot) and entries are whole cache lines: a lookup reads the index, then
/// one line of entries. Entries created together sit together (a removal moves the last entry into the
/// gap), so sweeps over keys in the order they arrived read memory in order.
///
/// `@unchecked Sendable`: the table is noncopyable and owns its allocations (and the entries' logs) alone,
/// so whoever holds it has exclusive access; the store only reaches it through its shard's `Mutex`.
struct ShardTable: ~Copyable, @unchecked Sendable {
    /// An index slot: 0 when empty, else the entry's position + 1 in the low 24 bits under the top 8 bits
    /// of the entry's hash, which rule out almost every other entry met while probing without reading it.
    struct Slot {
        var bits: UInt32

        static let empty = Slot(bits: 0)

        init(bits: UInt32) { self.bits = bits }

        init(hash: UInt32, position: Int) {
            bits = hash & 0xff00_0000 | UInt32(truncatingIfNeeded: position &+ 1)
        }

        var isEmpty: Bool { bits == 0 }
        var position: Int { Int(bits & 0x00ff_ffff) &- 1 }

        @inline(__always)
        func mayHold(_ hash: UInt32) -> Bool { (bits ^ hash) & 0xff00_0000 == 0 }
    }

    private var slots: UnsafeMutablePointer<Slot>
    /// `count` initialized entries, then room for more up to the load factor of the index; aligned to
    /// cache lines.
    private(set) var entries: UnsafeMutablePointer<StoreEntry>
    private(set) var count = 0
    private var mask: Int
    /// At most 2^24 − 1, so that positions fit their 24 bits of a slot.
    let maximumCount: Int
    private var random: UInt64
    private(set) var evictions = 0
    private(set) var reclaimed = 0

    init(maximumCount: Int, seed: UInt64) {
        self.maximumCount = min(max(1, maximumCount), (1 << 24) - 1)
        mask = 15
        (slots, entries) = Self.allocate(16)
        random = seed | 1
    }

    deinit {
        entries.deinitialize(count: count)
        entries.deallocate()
        slots.deallocate()
    }

    var capacity: Int { mask &+ 1 }

    /// An empty index of `size` slots and room for the entries it may index (three quarters of `size`).
    private static func allocate(_ size: Int) -> (UnsafeMutablePointer<Slot>, UnsafeMutablePointer<StoreEntry>) {
        let slots = UnsafeMutablePointer<Slot>.allocate(capacity: size)
        slots.initialize(repeating: .empty, count: size)
        let room = size / 4 * 3
        let entries = UnsafeMutableRawPointer.allocate(byteCount: room * MemoryLayout<StoreEntry>.stride, alignment: 64)
            .bindMemory(to: StoreEntry.self, capacity: room)
        return (slots, entries)
    }

    @inline(__always)
    private func home(_ hash: UInt32) -> Int { Int(hash) & mask }

    /// The position of the entry for `group` and `subject`, if there is one.
    @inline(__always)
    func find(hash: UInt64, group: UInt32, subject: String) -> Int? {
        let hash = UInt32(truncatingIfNeeded: hash)
        var i = home(hash)
        while true {
            let slot = slots[i]
            if slot.isEmpty { return nil }
            if slot.mayHold(hash) {
                if matches(entries + slot.position, hash: hash, group: group, subject: subject) { return slot.position }
            }
            i = (i &+ 1) & mask
        }
    }

    /// Whether the entry at `position` (any integer) is the one for `hash`, `group` and `subject`.
    @inline(__always)
    func holds(hash: UInt64, group: UInt32, subject: String, at position: Int) -> Bool {
        guard position >= 0 && position < count else { return false }
        return matches(entries + position, hash: UInt32(truncatingIfNeeded: hash), group: group, subject: subject)
    }

    @inline(__always)
    private func matches(_ entry: UnsafeMutablePointer<StoreEntry>, hash: UInt32, group: UInt32, subject: String) -> Bool {
        entry.pointee.hash == hash && entry.pointee.group == group && entry.pointee.subject == subject
    }

    /// Inserts a new entry (its key must be absent) and returns its position, making room first if needed.
    mutating func insert(_ entry: StoreEntry, now: Int64) -> Int {
        if count >= maximumCount { makeRoom(now: now) }
        if (count &+ 1) * 4 > capacity * 3 { grow() }
        let position = count
        (entries + position).initialize(to: entry)
        slots[emptySlot(for: entry.hash)] = Slot(hash: entry.hash, position: position)
        count &+= 1
        return position
    }

    private func emptySlot(for hash: UInt32) -> Int {
        var i = home(hash)
        while !slots[i].isEmpty { i = (i &+ 1) & mask }
        return i
    }

    /// The index slot that holds `position`.
    private func slot(of position: Int) -> Int {
        var i = home(entries[position].hash)
        while slots[i].position != position { i = (i &+ 1) & mask }
        return i
    }

    private mutating func grow() {
        let (oldSlots, oldEntries) = (slots, entries)
        mask = capacity * 2 - 1
        (slots, entries) = Self.allocate(capacity)
        entries.moveInitialize(from: oldEntries, count: count)
        for position in 0..<count {
            slots[emptySlot(for: entries[position].hash)] = Slot(hash: entries[position].hash, position: position)
        }
        oldSlots.deallocate()
        oldEntries.deallocate()
    }

    /// Removes expired entries; when none had expired, evicts the soonest-expiring of a few sampled ones.
    private mutating func makeRoom(now: Int64) {
        let freed = removeExpired(now: now)
        if freed > 0 { return }
        var victim = 0
        var soonest = Int64.max
        for _ in 0..<8 {
            random ^= random << 13
            random ^= random >> 7
            random ^= random << 17
            let position = Int(random % UInt64(count))
            if entries[position].expiresAt < soonest {
                soonest = entries[position].expiresAt
                victim = position
            }
        }
        remove(at: victim)
        evictions &+= 1
    }

    /// Removes every entry whose counters are all back to untouched; returns how many.
    @discardableResult
    mutating func removeExpired(now: Int64) -> Int {
        var freed = 0
        var position = 0
        while position < count {
            if entries[position].expiresAt <= now {
                remove(at: position)
                freed &+= 1
                continue  // the position now holds what was the last entry
            }
            position &+= 1
        }
        reclaimed &+= freed
        return freed
    }

    /// Removes the entry at `position`; the last entry takes its place.
    mutating func remove(at position: Int) {
        removeSlot(slot(of: position))
        let last = count &- 1
        (entries + position).deinitialize(count: 1)
        if position != last {
            let hash = entries[last].hash
            slots[slot(of: last)] = Slot(hash: hash, position: position)
            (entries + position).moveInitialize(from: entries + last, count: 1)
        }
        count = last
    }

    /// Backward-shift deletion of index slot `i`.
    private mutating func removeSlot(_ i: Int) {
        var hole = i
        var j = i
        while true {
            j = (j &+ 1) & mask
            if slots[j].isEmpty { break }
            let home = home(entries[slots[j].position].hash)
            // Move j into the hole unless its home lies cyclically in (hole, j].
            let stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j)
            if !stays {
                slots[hole] = slots[j]
                hole = j
            }
        }
        slots[hole] = .empty
    }
}
