import Foundation
import Testing

@testable import Tollgate

/// Calendar quotas align to the plan's zone: months across DST changes and month ends.
@Suite struct CalendarTests {
    func window(_ unit: CalendarUnit, _ zone: String, at seconds: Int64) -> (Int64, Int64) {
        let windows = CalendarWindows(unit: unit, timeZone: TimeZone(identifier: zone)!)
        let w = windows.window(containing: seconds * second)
        return (w.start / second, w.end / second)
    }

    @Test func monthAcrossSpringForwardInNewYork() {
        // March 2026 starts at 00:00 EST and ends at 00:00 EDT: 31 days less one hour.
        let w = window(.month, "America/New_York", at: 1_773_590_400)
        #expect(w == (1_772_341_200, 1_775_016_000))
        #expect(w.1 - w.0 == 31 * 86_400 - 3_600)
    }

    @Test func dayOfSpringForwardIs23Hours() {
        let w = window(.day, "America/New_York", at: 1_772_946_000 + 10)
        #expect(w == (1_772_946_000, 1_773_028_800))
        #expect(w.1 - w.0 == 23 * 3_600)
    }

    @Test func monthAcrossFallBackInBerlin() {
        let w = window(.month, "Europe/Berlin", at: 1_790_805_600 + 20 * 86_400)
        #expect(w == (1_790_805_600, 1_793_487_600))
        #expect(w.1 - w.0 == 31 * 86_400 + 3_600)
    }

    @Test func january31AndFebruary29InBerlin() {
        // The last second of January (local) is still January; the next one is February.
        #expect(window(.month, "Europe/Berlin", at: 1_769_900_399) == (1_767_222_000, 1_769_900_400))
        #expect(window(.month, "Europe/Berlin", at: 1_769_900_400).0 == 1_769_900_400)
        // 2028 is a leap year: February 29 belongs to February, March starts at 23:00 UTC on the 29th.
        #expect(window(.month, "Europe/Berlin", at: 1_835_477_999) == (1_832_972_400, 1_835_478_000))
        #expect(window(.month, "Europe/Berlin", at: 1_835_478_000).0 == 1_835_478_000)
    }

    @Test func isoWeekStartsOnMonday() {
        // Sunday 2026-11-29 12:00 UTC lies in the week that began Monday 2026-11-23.
        #expect(window(.week, "UTC", at: 1_795_953_600) == (1_795_392_000, 1_795_996_800))
    }

    @Test func hourInAHalfHourZone() {
        // Asia/Kolkata is UTC+5:30: local hours start at :30 UTC.
        #expect(window(.hour, "Asia/Kolkata", at: 1_780_288_200 + 1_000) == (1_780_288_200, 1_780_291_800))
    }

    @Test func quotaResetsAtTheLocalMonthBoundary() throws {
        // A Berlin plan: 3 per month. Exhausted at 23:59:59 local on Feb 29 2028, fresh one second later.
        let h = try Harness(
            [Limit(name: "month", algorithm: .calendar(limit: 3, unit: .month))], timeZone: "Europe/Berlin",
            at: 1_835_477_999 * second)
        #expect(try h.drain() == 3)
        let denied = try h.check()
        #expect(denied.retryAfterMicroseconds == second)
        #expect(denied.results[0].windowMicroseconds == (1_835_478_000 - 1_832_972_400) * second)
        h.clock.advance(microseconds: second)
        #expect(try h.drain() == 3)
    }

    @Test func sameInstantDifferentZonesDifferentMonths() throws {
        // 2026-01-31T23:30:00Z is still January in UTC but February in Berlin.
        let instant: Int64 = 1_769_902_200 * second
        let utc = try Harness([Limit(name: "m", algorithm: .calendar(limit: 1, unit: .month))], timeZone: "UTC", at: instant)
        let berlin = try Harness([Limit(name: "m", algorithm: .calendar(limit: 1, unit: .month))], timeZone: "Europe/Berlin", at: instant)
        #expect(try utc.check().results[0].resetAfterMicroseconds == 30 * 60 * second)
        #expect(try berlin.check().results[0].resetAfterMicroseconds == (1_772_319_600 - 1_769_902_200) * second)
    }
}
