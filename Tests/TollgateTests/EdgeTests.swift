import Foundation
import Testing

@testable import Tollgate

/// Boundaries and odd clocks.
@Suite struct EdgeTests {
    @Test func tokenArrivesAtTheExactRefillInstant() throws {
        // 3 tokens per second: one every 333,333⅓ µs. Tokens become whole at +333,334 µs,
        // +666,667 µs and exactly +1 s — no rounding drift, not a microsecond early.
        let h = try Harness([bucket(capacity: 3, per: second, tokens: 3)])
        let start = h.clock.now()
        #expect(try h.drain() == 3)
        for arrival: Int64 in [333_334, 666_667, 1_000_000] {
            h.clock.set(microseconds: start + arrival - 1)
            #expect(try h.check().isAllowed == false, "one microsecond before +\(arrival)")
            h.clock.set(microseconds: start + arrival)
            #expect(try h.check().isAllowed, "at +\(arrival)")
        }
    }

    @Test func noDriftOverMillionsOfCalls() throws {
        // 7 tokens per second into a bucket of 1: a token every 142,857.142… µs. Calls spaced
        // 142,858 µs apart are each a fraction of a microsecond late, so all of a million pass — a
        // limiter that rounded the interval up (or accumulated float error) would start refusing.
        let late = try Harness([bucket(capacity: 1, per: second, tokens: 7)])
        var admitted = 0
        for _ in 0..<1_000_000 {
            if try late.check().isAllowed { admitted += 1 }
            late.clock.advance(microseconds: 142_858)
        }
        #expect(admitted == 1_000_000)

        // Spaced 142,857 µs (a fraction early) the exact answer is known too: compare every call with
        // the GCRA reference in exact rational time.
        let early = try Harness([bucket(capacity: 1, per: second, tokens: 7)])
        var reference = ReferenceTokenBucket(capacity: 1, tokens: 7, period: second)
        var agreed = 0
        for _ in 0..<1_000_000 {
            let now = early.clock.now()
            let expected = reference.admits(at: now, cost: 1)
            if expected { reference.record(at: now, cost: 1) }
            if try early.check().isAllowed == expected { agreed += 1 }
            early.clock.advance(microseconds: 142_857)
        }
        #expect(agreed == 1_000_000)
    }

    @Test func fixedWindowBoundaryIsHalfOpen() throws {
        let start: Int64 = 1_767_225_600 * second  // a minute boundary
        let h = try Harness([Limit(name: "m", algorithm: .fixedWindow(limit: 2, window: minute))], at: start - 1)
        #expect(try h.drain() == 2)
        h.clock.advance(microseconds: 1)  // exactly the boundary: a new window
        #expect(try h.drain() == 2)
    }

    @Test func slidingLogEntryLeavesExactlyOneWindowLater() throws {
        let h = try Harness([Limit(name: "log", algorithm: .slidingLog(limit: 2, window: 10 * second))])
        try h.check()
        h.clock.advance(microseconds: 3 * second)
        try h.check()
        let denied = try h.check()
        // The first entry leaves 7 s from now; its window is (now − W, now].
        #expect(denied.retryAfterMicroseconds == 7 * second)
        h.clock.advance(microseconds: 7 * second - 1)
        #expect(try h.check().isAllowed == false)
        h.clock.advance(microseconds: 1)
        #expect(try h.check().isAllowed)
    }

    @Test func slidingLogRetryWaitsForEnoughOldEntries() throws {
        // Costs 1, 1, 3 at t = 0, 1, 2 s in a 10 s window of 5; a cost-3 request needs the first two
        // entries gone (3 units freed would need entry #3 too; 2 units suffice): not the window's end.
        let h = try Harness([Limit(name: "log", algorithm: .slidingLog(limit: 5, window: 10 * second))])
        try h.check(cost: 1)
        h.clock.advance(microseconds: second)
        try h.check(cost: 1)
        h.clock.advance(microseconds: second)
        try h.check(cost: 3)
        let denied = try h.check(cost: 2)
        #expect(denied.retryAfterMicroseconds == 9 * second)  // both early entries gone at t = 11 s
    }

    @Test func costEqualToCapacity() throws {
        for limit in [
            bucket(capacity: 5),
            Limit(name: "l", algorithm: .slidingLog(limit: 5, window: minute)),
            Limit(name: "c", algorithm: .slidingCounter(limit: 5, window: minute)),
            Limit(name: "f", algorithm: .fixedWindow(limit: 5, window: minute)),
            Limit(name: "q", algorithm: .calendar(limit: 5, unit: .day)),
        ] {
            let h = try Harness([limit])
            #expect(try h.check(cost: 5).isAllowed, "\(limit.algorithm)")
            let denied = try h.check(cost: 1)
            #expect(denied.denial == .limited, "\(limit.algorithm)")
        }
    }

    @Test func jumpOfYears() throws {
        let h = try Harness([
            bucket(capacity: 5, per: second, tokens: 1),
            Limit(name: "log", algorithm: .slidingLog(limit: 5, window: minute)),
            Limit(name: "c", algorithm: .slidingCounter(limit: 5, window: minute)),
            Limit(name: "month", algorithm: .calendar(limit: 5, unit: .month)),
        ])
        #expect(try h.drain() == 5)
        h.clock.advance(microseconds: 40 * 365 * 86_400 * second)
        let after = try h.check(cost: 0)
        #expect(after.results.map(\.remaining) == [5, 5, 5, 5])
        #expect(try h.drain() == 5)
    }

    @Test func clockGoingBackwardsIsNoTimePassing() throws {
        let h = try Harness([
            bucket(capacity: 2, per: second, tokens: 1), Limit(name: "f", algorithm: .fixedWindow(limit: 100, window: minute)),
        ])
        #expect(try h.drain() == 2)
        h.clock.advance(microseconds: -3_600 * second)
        let denied = try h.check()
        #expect(denied.denial == .limited)
        #expect(denied.retryAfterMicroseconds == second)  // as if no time had passed
        #expect(denied.results[1].remaining == 98)  // still the same window, not an older one
        // When the clock comes back and moves on, the bucket refills as usual.
        h.clock.advance(microseconds: 3_600 * second + second)
        #expect(try h.check().isAllowed)
    }
}
