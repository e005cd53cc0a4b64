import Foundation
import Synchronization

/// A plan turned into plain numbers for the hot path: no strings, no existentials, no allocation.
package final class CompiledPlan: Sendable {
    package let specs: ContiguousArray<LimitSpec>
    /// Limits grouped by scope: all counters of one group live in one store entry (one lookup per group).
    let groups: ContiguousArray<LimitGroup>
    package let calendars: ContiguousArray<CalendarWindows?>
    let hasSlidingLog: Bool

    init(name: String, timeZone: TimeZone, limits: [Limit]) {
        var specs = ContiguousArray<LimitSpec>()
        var calendars = ContiguousArray<CalendarWindows?>()
        var groups = ContiguousArray<LimitGroup>()
        for scope in LimitScope.allCases {
            let members = limits.indices.filter { limits[$0].scope == scope }
            guard !members.isEmpty else { continue }
            let signature = ([name, scope.rawValue, timeZone.identifier] + members.map { "\(limits[$0])" })
                .joined(separator: "|")
            groups.append(LimitGroup(id: GroupRegistry.id(for: signature), scope: scope, members: ContiguousArray(members)))
        }
        for limit in limits {
            let slot = groups.first { $0.scope == limit.scope }!.members.firstIndex { limits[$0] == limit }!
            specs.append(LimitSpec(limit, slot: slot))
            if case .calendar(_, let unit) = limit.algorithm {
                calendars.append(CalendarWindows(unit: unit, timeZone: timeZone))
            } else {
                calendars.append(nil)
            }
        }
        self.specs = specs
        self.groups = groups
        self.calendars = calendars
        hasSlidingLog = specs.contains { $0.kind == .slidingLog }
    }
}

/// The limits of one plan that share a scope, and the process-wide identity of their counters.
struct LimitGroup: Sendable {
    /// Equal for equal definitions, so that reloading an unchanged plan keeps its counters.
    let id: UInt64
    let scope: LimitScope
    /// Indices into the plan's limits; a limit's position here is its slot in the store entry.
    let members: ContiguousArray<Int>
}

/// Interns group signatures to small integers for the life of the process.
enum GroupRegistry {
    private static let ids = Mutex<[String: UInt64]>([:])

    static func id(for signature: String) -> UInt64 {
        ids.withLock { table in
            if let id = table[signature] { return id }
            let id = UInt64(table.count + 1)
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
    }
}
