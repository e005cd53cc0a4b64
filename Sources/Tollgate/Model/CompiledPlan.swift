import Foundation
import Synchronization

/// A plan turned into plain numbers for the hot path: no strings, no existentials, no allocation.
///
/// The numbers a check reads sit in one `HotPlan` allocated here and reached through a pointer, so
/// checks never touch a reference count: two cores checking the same plan must not write to a shared
/// cache line (retaining an array buffer or this object would).
package final class CompiledPlan: Sendable {
    package let specs: ContiguousArray<LimitSpec>
    package let calendars: ContiguousArray<CalendarWindows?>
    /// Immutable after `init`, freed in `deinit`; a `Plan` keeps this object alive while a check runs.
    nonisolated(unsafe) let hot: UnsafeMutablePointer<HotPlan>

    init(name: String, timeZone: TimeZone, limits: [Limit]) {
        var specs = ContiguousArray<LimitSpec>()
        var calendars = ContiguousArray<CalendarWindows?>()
        var groups: [LimitGroup] = []
        for scope in LimitScope.allCases {
            let members = limits.indices.filter { limits[$0].scope == scope }
            guard !members.isEmpty else { continue }
            let signature = ([name, scope.rawValue, timeZone.identifier] + members.map { "\(limits[$0])" })
                .joined(separator: "|")
            var group = LimitGroup(id: GroupRegistry.id(for: signature), scope: scope, memberCount: members.count)
            for (slot, member) in members.enumerated() { group.members[slot] = member }
            groups.append(group)
        }
        for (index, limit) in limits.enumerated() {
            let group = groups.first { $0.scope == limit.scope }!
            let slot = (0..<group.memberCount).first { group.members[$0] == index }!
            specs.append(LimitSpec(limit, slot: slot))
            if case .calendar(_, let unit) = limit.algorithm {
                calendars.append(CalendarWindows(unit: unit, timeZone: timeZone))
            } else {
                calendars.append(nil)
            }
        }
        self.specs = specs
        self.calendars = calendars
        let specPointer = UnsafeMutablePointer<LimitSpec>.allocate(capacity: specs.count)
        specPointer.initialize(from: Array(specs), count: specs.count)
        let calendarPointer = UnsafeMutablePointer<Unmanaged<CalendarWindows>?>.allocate(capacity: calendars.count)
        calendarPointer.initialize(from: calendars.map { $0.map(Unmanaged.passUnretained) }, count: calendars.count)
        let groupPointer = UnsafeMutablePointer<LimitGroup>.allocate(capacity: groups.count)
        groupPointer.initialize(from: groups, count: groups.count)
        hot = .allocate(capacity: 1)
        hot.initialize(
            to: HotPlan(
                specs: specPointer, calendars: calendarPointer, limitCount: specs.count, groups: groupPointer,
                groupCount: groups.count, isOneBucket: specs.count == 1 && specs[0].kind == .tokenBucket))
    }

    deinit {
        hot.pointee.specs.deallocate()
        hot.pointee.calendars.deallocate()
        hot.pointee.groups.deallocate()
        hot.deallocate()
    }
}

/// What a check reads of a plan: trivially copyable values only.
struct HotPlan {
    let specs: UnsafeMutablePointer<LimitSpec>
    /// Unretained: `CompiledPlan.calendars` owns them.
    let calendars: UnsafeMutablePointer<Unmanaged<CalendarWindows>?>
    let limitCount: Int
    /// One group per scope that has limits: one or two.
    let groups: UnsafeMutablePointer<LimitGroup>
    let groupCount: Int
    /// The plan is one token bucket: checks take `MemoryStore.decideOneBucket`.
    let isOneBucket: Bool
}

/// The limits of one plan that share a scope, and the process-wide identity of their counters.
struct LimitGroup: Sendable {
    /// Equal for equal definitions, so that reloading an unchanged plan keeps its counters.
    let id: UInt32
    let scope: LimitScope
    let memberCount: Int
    /// Indices into the plan's limits; a limit's position here is its slot in the store entry.
    var members = InlineArray<8, Int>(repeating: 0)

    init(id: UInt32, scope: LimitScope, memberCount: Int) {
        self.id = id
        self.scope = scope
        self.memberCount = memberCount
    }
}

/// Interns group signatures to small integers for the life of the process.
enum GroupRegistry {
    private static let ids = Mutex<[String: UInt32]>([:])

    static func id(for signature: String) -> UInt32 {
        ids.withLock { table in
            if let id = table[signature] { return id }
            // The store keeps ids in 31 bits (`EntrySlot`); a process would need 2^31 distinct groups.
            precondition(table.count < 0x7fff_ffff, "too many distinct limit groups")
            let id = UInt32(table.count + 1)
            table[signature] = id
            return id
        }
    }
}

/// One limit as the algorithms see it.
package struct LimitSpec: Sendable {
    package enum Kind: UInt8, Sendable {
        case tokenBucket, slidingLog, slidingCounter, fixedWindow, calendar
    }

    package let kind: Kind
    package let shadow: Bool
    let slot: Int
    /// Token bucket: capacity; other algorithms: the limit per window.
    package let capacity: Int64
    /// The window in microseconds; for a token bucket the time to refill from empty; 0 for calendar quotas.
    package let window: Int64
    package let unitsPerToken: Int64
    package let unitsPerMicrosecond: Int64
    package let fullLevel: Int64
    /// Sliding window counter: the tick length and the ticks in a window (`SlidingCounter.ticks`); else 1, 1.
    package let tick: Int64
    package let tickCount: Int64

    init(_ limit: Limit, slot: Int) {
        self.slot = slot
        shadow = limit.shadow
        capacity = limit.capacity
        switch limit.algorithm {
        case .tokenBucket(let capacity, let tokens, let period):
            kind = .tokenBucket
            let rate = TokenBucketRate(tokens: tokens, period: period)
            unitsPerToken = rate.unitsPerToken
            unitsPerMicrosecond = rate.unitsPerMicrosecond
            fullLevel = capacity * rate.unitsPerToken
            window = (fullLevel + rate.unitsPerMicrosecond - 1) / rate.unitsPerMicrosecond
        case .slidingLog(_, let window):
            kind = .slidingLog
            self.window = window
            (unitsPerToken, unitsPerMicrosecond, fullLevel) = (0, 0, 0)
        case .slidingCounter(_, let window):
            kind = .slidingCounter
            self.window = window
            (unitsPerToken, unitsPerMicrosecond, fullLevel) = (0, 0, 0)
        case .fixedWindow(_, let window):
            kind = .fixedWindow
            self.window = window
            (unitsPerToken, unitsPerMicrosecond, fullLevel) = (0, 0, 0)
        case .calendar:
            kind = .calendar
            window = 0
            (unitsPerToken, unitsPerMicrosecond, fullLevel) = (0, 0, 0)
        }
        (tick, tickCount) = kind == .slidingCounter ? SlidingCounter.ticks(window) : (1, 1)
    }
}
