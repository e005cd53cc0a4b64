import Foundation
import Synchronization

/// Start and end of calendar periods (minute … month) in one time zone, with the current period cached:
/// the calendar is consulted once per period, not once per check.
package final class CalendarWindows: Sendable {
    let unit: CalendarUnit
    private let calendar: Calendar
    private let current = Mutex<(start: Int64, end: Int64)>((0, 0))
    private let around = Mutex<(p0: Int64, c0: Int64, c1: Int64, n1: Int64)>((0, 0, 0, 0))

    init(unit: CalendarUnit, timeZone: TimeZone) {
        self.unit = unit
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        calendar.firstWeekday = 2  // ISO weeks start on Monday
        calendar.minimumDaysInFirstWeek = 4
        self.calendar = calendar
    }

    /// The period containing `instant` (microseconds since the epoch) as a half-open range.
    func window(containing instant: Int64) -> (start: Int64, end: Int64) {
        let cached = current.withLock { $0 }
        if cached.start <= instant && instant < cached.end { return cached }
        let fresh = compute(instant)
        current.withLock { $0 = fresh }
        return fresh
    }

    /// The previous, current and next periods around `instant` as four boundaries `p0 < c0 ≤ instant < c1 < n1`:
    /// a store whose clock runs elsewhere (Redis' `TIME`) picks the period that contains its own now.
    package func neighbourhood(of instant: Int64) -> (p0: Int64, c0: Int64, c1: Int64, n1: Int64) {
        let cached = around.withLock { $0 }
        if cached.c0 <= instant && instant < cached.c1 { return cached }
        let current = window(containing: instant)
        let fresh = (compute(current.start &- 1).start, current.start, current.end, compute(current.end).end)
        around.withLock { $0 = fresh }
        return fresh
    }

    func compute(_ instant: Int64) -> (start: Int64, end: Int64) {
        // Period boundaries fall on whole seconds in every zone, so the second containing the instant
        // lies in the same period; whole seconds are exact in a Double.
        let seconds = instant >= 0 ? instant / microsPerSecond : (instant - microsPerSecond + 1) / microsPerSecond
        let component: Calendar.Component =
            switch unit {
            case .minute: .minute
            case .hour: .hour
            case .day: .day
            case .week: .weekOfYear
            case .month: .month
            }
        let date = Date(timeIntervalSince1970: Double(seconds))
        guard let interval = calendar.dateInterval(of: component, for: date) else {
            // Foundation answers for every Gregorian instant; fall back to a UTC day rather than trap.
            let day = seconds - ((seconds % 86_400) + 86_400) % 86_400
            return (day * microsPerSecond, (day + 86_400) * microsPerSecond)
        }
        let start = Int64(interval.start.timeIntervalSince1970.rounded())
        let end = Int64(interval.end.timeIntervalSince1970.rounded())
        return (start * microsPerSecond, end * microsPerSecond)
    }
}
