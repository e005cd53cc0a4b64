import CTollgateCPU

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The counters of one group of limits for one subject: 60 bytes, so that with the slot's word (its
/// group and lock, see `EntrySlot`) an entry is one cache line, and a lookup of a group of one limit
/// (the common plan) reads one line of entries.
///
/// The fields that say whose entry it is (`subject`, `hash`, the slot's group) change only with both the
/// shard's lock and the entry's lock held; the counters only with the entry's lock held.
struct StoreEntry {
    let subject: String
    /// When every counter is back to its untouched state, so the entry may be reclaimed.
    var expiresAt: Int64
    /// The state of the group's first limit.
    var first: LimitState
    /// The states of the other limits and the group's sliding logs; nil when the group has one limit
    /// and it is not a sliding log.
    let more: MoreStates?
    /// The low 32 bits of the entry's hash: odd, so never 0.
    let hash: UInt32

    init(hash: UInt64, subject: String, now: Int64, more: MoreStates?) {
        self.hash = UInt32(truncatingIfNeeded: hash)
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

/// The word in the last 4 bytes of every 64-byte entry slot: the group id of the entry there (0 when
/// the slot holds none) and, in its top bit, the entry's lock — a spin lock, held for one evaluation.
///
/// A check that remembers where its entry was (`EntryHints`) locks that slot alone, without the shard's
/// lock: its try-lock succeeds only if the slot holds an entry of the expected group, and it then
/// compares the hash and subject. Everything that changes whose entry a slot holds (insertion, removal,
/// moving an entry) holds the shard's lock and the slots' locks; everything that changes counters holds
/// the entry's lock. Slots never move or go away while the store lives (`EntryRegion`).
///
/// Lock order: shard locks (in index order) before entry locks; several entry locks in address order,
/// except a try-lock, which never waits (the lock-free path gives up and takes the shard path).
enum EntrySlot {
    static let locked: UInt32 = TOLLGATE_ENTRY_LOCKED

    /// The group id of the entry in `slot` (0: none). Callers hold the shard's lock, so it cannot change.
    @inline(__always)
    static func group(_ slot: UnsafeMutablePointer<StoreEntry>) -> UInt32 {
        tollgate_entry_load(slot) & ~locked
    }

    /// Locks `slot` if it holds an entry of `group`, waiting a little while another check holds it.
    @inline(__always)
    static func tryLock(_ slot: UnsafeMutablePointer<StoreEntry>, group: UInt32) -> Bool {
        if tollgate_entry_try_lock(slot, group) { return true }
        return tryLockContended(slot, group: group)
    }

    @inline(never)
    static func tryLockContended(_ slot: UnsafeMutablePointer<StoreEntry>, group: UInt32) -> Bool {
        for _ in 0..<256 {
            let word = tollgate_entry_load(slot)
            if word == group {
                if tollgate_entry_try_lock(slot, group) { return true }
                continue  // another check took it first: wait for it as for any holder
            }
            if word != group | locked { return false }
            tollgate_spin_pause()
        }
        return false
    }

    /// Locks `slot`, which holds an entry, waiting for whoever holds it; returns the word unlocked.
    @inline(__always)
    @discardableResult
    static func lock(_ slot: UnsafeMutablePointer<StoreEntry>) -> UInt32 {
        let word = tollgate_entry_load(slot)
        if word & locked == 0 && tollgate_entry_try_lock(slot, word) { return word }
        return lockContended(slot)
    }

    @inline(never)
    static func lockContended(_ slot: UnsafeMutablePointer<StoreEntry>) -> UInt32 {
        var spins = 0
        while true {
            let word = tollgate_entry_load(slot)
            if word & locked == 0 && tollgate_entry_try_lock(slot, word) { return word }
            spins &+= 1
            // Holders keep it for one evaluation; one that was descheduled gets the core back.
            if spins & 127 == 0 { sched_yield() } else { tollgate_spin_pause() }
        }
    }

    /// Unlocks `slot`, leaving `group` (0: no entry) in its word.
    @inline(__always)
    static func unlock(_ slot: UnsafeMutablePointer<StoreEntry>, group: UInt32) {
        tollgate_entry_store(slot, group)
    }

    /// Publishes a new entry of `group` in `slot`, locked by the caller.
    @inline(__always)
    static func publishLocked(_ slot: UnsafeMutablePointer<StoreEntry>, group: UInt32) {
        tollgate_entry_store(slot, group | locked)
    }
}

/// Zero-filled memory for entry slots, reserved once at full size (untouched pages cost nothing), so that
/// an entry's slot stays where it is for the life of the store. Pages that entries have touched stay with
/// the store, for the entries that come next, until the store goes.
enum EntryRegion {
    static func reserve(slots: Int) -> UnsafeMutablePointer<StoreEntry> {
        precondition(
            MemoryLayout<StoreEntry>.size <= Int(TOLLGATE_ENTRY_WORD_OFFSET) && MemoryLayout<StoreEntry>.stride == 64,
            "a store entry must leave the last 4 bytes of its 64-byte slot to the slot's word")
        let bytes = max(1, slots) * 64
        #if canImport(Glibc)
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
        #else
        let flags = MAP_PRIVATE | MAP_ANON
        #endif
        guard let region = mmap(nil, bytes, PROT_READ | PROT_WRITE, flags, -1, 0), region != MAP_FAILED else {
            fatalError(
                "MemoryStore: cannot reserve \(bytes) bytes of address space for \(slots) entries of 64 bytes "
                    + "(errno \(errno)); lower MemoryStore.Configuration.maximumEntries")
        }
        return region.bindMemory(to: StoreEntry.self, capacity: max(1, slots))
    }

    static func release(_ region: UnsafeMutablePointer<StoreEntry>, slots: Int) {
        munmap(UnsafeMutableRawPointer(region), max(1, slots) * 64)
    }
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
/// (linear probing, backward-shift deletion) over entries kept dense, in insertion order, in slots that
/// never move (`EntryRegion`). Bounded: `makeRoom` reclaims expired entries, then evicts the sampled
/// entry that expires soonest.
///
/// The index is small (4 bytes a slot) and entries are whole cache lines: a lookup reads the index, then
/// one line of entries. Entries created together sit together (a removal moves the last entry into the
/// gap), so sweeps over keys in the order they arrived read memory in order.
///
/// `@unchecked Sendable`: the table is noncopyable and owns its index and its entries' contents; the store
/// reaches it only through its shard's `Mutex`, and reaches entries without that lock only through their
/// slots' locks (`EntrySlot`).
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
    /// `count` entries, then `maximumCount - count` slots holding none; fixed for the table's life.
    let entries: UnsafeMutablePointer<StoreEntry>
    /// Whether `entries` was reserved by this table (else by the store, which releases it).
    private let ownsEntries: Bool
    private(set) var count = 0
    private var mask: Int
    /// At most 2^24 − 1, so that positions fit their 24 bits of a slot.
    let maximumCount: Int
    private var random: UInt64
    private(set) var evictions = 0
    private(set) var reclaimed = 0

    /// A table over `entries` (zero-filled room for `maximumCount` slots), or over its own when nil.
    init(maximumCount: Int, seed: UInt64, entries: UnsafeMutablePointer<StoreEntry>? = nil) {
        self.maximumCount = Self.bound(maximumCount)
        mask = 15
        slots = Self.allocateIndex(16)
        ownsEntries = entries == nil
        self.entries = entries ?? EntryRegion.reserve(slots: self.maximumCount)
        random = seed | 1
    }

    deinit {
        entries.deinitialize(count: count)
        if ownsEntries { EntryRegion.release(entries, slots: maximumCount) }
        slots.deallocate()
    }

    /// The number of entries a table of `maximumCount` holds: at least 2 (a plan's two groups), at most
    /// 2^24 − 1.
    static func bound(_ maximumCount: Int) -> Int { min(max(2, maximumCount), (1 << 24) - 1) }

    var capacity: Int { mask &+ 1 }

    private static func allocateIndex(_ size: Int) -> UnsafeMutablePointer<Slot> {
        let slots = UnsafeMutablePointer<Slot>.allocate(capacity: size)
        slots.initialize(repeating: .empty, count: size)
        return slots
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

    /// Whether `entry` is the one for `hash`, `group` and `subject`. The caller holds the shard's lock or
    /// the entry's, so that its identity cannot change meanwhile.
    @inline(__always)
    static func matches(_ entry: UnsafeMutablePointer<StoreEntry>, hash: UInt32, subject: String) -> Bool {
        entry.pointee.hash == hash && entry.pointee.subject == subject
    }

    @inline(__always)
    private func matches(_ entry: UnsafeMutablePointer<StoreEntry>, hash: UInt32, group: UInt32, subject: String) -> Bool {
        EntrySlot.group(entry) == group && Self.matches(entry, hash: hash, subject: subject)
    }

    /// Whether `additional` entries can be inserted without making room first.
    func hasRoom(for additional: Int) -> Bool { count &+ additional <= maximumCount }

    /// Grows the index now if inserting `additional` entries would, so that inserting them later (with
    /// entry locks held) does not.
    mutating func reserveIndex(for additional: Int) {
        while (count &+ additional) * 4 > capacity * 3 { grow() }
    }

    /// Inserts a new entry of `group` (its key must be absent; there must be room) and returns its
    /// position. The entry is published locked: the caller unlocks it (`EntrySlot.unlock`).
    mutating func insert(_ entry: StoreEntry, group: UInt32) -> Int {
        precondition(count < maximumCount, "ShardTable.insert without room")
        reserveIndex(for: 1)
        let position = count
        // The slot holds no entry (word 0): a lock-free check cannot lock it before it is published.
        (entries + position).initialize(to: entry)
        EntrySlot.publishLocked(entries + position, group: group)
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

    /// Doubles the index; entries stay where they are.
    private mutating func grow() {
        let old = slots
        let oldCapacity = capacity
        mask = capacity * 2 - 1
        slots = Self.allocateIndex(capacity)
        for position in 0..<count {
            slots[emptySlot(for: entries[position].hash)] = Slot(hash: entries[position].hash, position: position)
        }
        old.deinitialize(count: oldCapacity)
        old.deallocate()
    }

    /// Makes room for `additional` entries: removes expired entries; while that is not enough, evicts the
    /// soonest-expiring of a few sampled ones. The caller holds no entry locks.
    mutating func makeRoom(for additional: Int, now: Int64) {
        guard !hasRoom(for: additional) else { return }
        if removeExpired(now: now) > 0 && hasRoom(for: additional) { return }
        while !hasRoom(for: additional) && count > 0 {
            var victim = 0
            var soonest = Int64.max
            for _ in 0..<8 {
                random ^= random << 13
                random ^= random >> 7
                random ^= random << 17
                let position = Int(random % UInt64(count))
                let entry = entries + position
                let word = EntrySlot.lock(entry)
                if entry.pointee.expiresAt < soonest {
                    soonest = entry.pointee.expiresAt
                    victim = position
                }
                EntrySlot.unlock(entry, group: word)
            }
            EntrySlot.lock(entries + victim)
            removeLocked(at: victim)
            evictions &+= 1
        }
    }

    /// Removes every entry whose counters are all back to untouched; returns how many. The caller holds
    /// no entry locks.
    @discardableResult
    mutating func removeExpired(now: Int64) -> Int {
        var freed = 0
        var position = 0
        while position < count {
            let entry = entries + position
            let word = EntrySlot.lock(entry)
            if entry.pointee.expiresAt <= now {
                removeLocked(at: position)
                freed &+= 1
                continue  // the position now holds what was the last entry
            }
            EntrySlot.unlock(entry, group: word)
            position &+= 1
        }
        reclaimed &+= freed
        return freed
    }

    /// Removes the entry at `position`; the last entry takes its place. The caller holds no entry locks.
    mutating func remove(at position: Int) {
        EntrySlot.lock(entries + position)
        removeLocked(at: position)
    }

    /// Removes the entry at `position`, whose lock the caller holds (and gives up): the last entry, locked
    /// meanwhile, moves into its place.
    private mutating func removeLocked(at position: Int) {
        removeSlot(slot(of: position))
        let last = count &- 1
        let entry = entries + position
        entry.deinitialize(count: 1)
        if position != last {
            let moved = entries + last
            let group = EntrySlot.lock(moved)
            slots[slot(of: last)] = Slot(hash: moved.pointee.hash, position: position)
            // One value moved (not `moveInitialize(from:count:)`, which may copy whole strides): the
            // slots' words are left to `EntrySlot`.
            entry.initialize(to: moved.move())
            EntrySlot.unlock(moved, group: 0)
            EntrySlot.unlock(entry, group: group)
        } else {
            EntrySlot.unlock(entry, group: 0)
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
