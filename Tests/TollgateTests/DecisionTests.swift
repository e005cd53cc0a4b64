import Testing

@testable import Tollgate

/// The Decision contract: all or nothing, shadow limits, cost 0, cost above capacity, retry-after.
@Suite struct DecisionTests {
    @Test func deniedRequestConsumesNothingAnywhere() throws {
        let h = try Harness([
            bucket("burst", capacity: 2, per: second, tokens: 1),
            Limit(name: "month", algorithm: .calendar(limit: 100, unit: .month)),
            Limit(name: "org-minute", algorithm: .slidingLog(limit: 50, window: minute), scope: .organization),
        ])
        #expect(try h.drain() == 2)
        // Ten denials later the month and the organization still show only the two admitted requests.
        for _ in 0..<10 { #expect(try h.check().isAllowed == false) }
        let peek = try h.check(cost: 0)
        #expect(peek.results.map(\.remaining) == [0, 98, 48])
    }

    @Test func everyLimitMustAdmit() throws {
        let h = try Harness([bucket("burst", capacity: 10), Limit(name: "minute", algorithm: .fixedWindow(limit: 3, window: minute))])
        #expect(try h.drain() == 3)
        let denied = try h.check()
        #expect(denied.denial == .limited)
        #expect(denied.violated.map(\.index) == [1])
        #expect(denied.results[0].admits)  // the bucket alone would have passed, and was not charged
        #expect(denied.results[0].remaining == 7)
    }

    @Test func shadowLimitsReportButNeverDeny() throws {
        let h = try Harness([bucket("burst", capacity: 100), bucket("tight", capacity: 2, shadow: true)])
        var shadowDenials = 0
        for _ in 0..<5 {
            let decision = try h.check()
            #expect(decision.isAllowed)
            if !decision.results[1].admits { shadowDenials += 1 }
        }
        #expect(shadowDenials == 3)
        // The shadow limit counted only what it would itself have admitted.
        #expect(try h.check(cost: 0).results.map(\.remaining) == [95, 0])
    }

    @Test func costZeroPeeksWithoutConsuming() throws {
        let h = try Harness([bucket(capacity: 3)])
        for _ in 0..<5 { #expect(try h.check(cost: 0).isAllowed) }
        #expect(try h.check(cost: 0).results[0].remaining == 3)
        #expect(try h.drain() == 3)
        // Peeking at an exhausted limit still answers allowed and consumes nothing.
        let peek = try h.check(cost: 0)
        #expect(peek.isAllowed && peek.results[0].remaining == 0)
        #expect(h.store.statistics.entries == 1)
    }

    @Test func costZeroCreatesNoState() throws {
        let h = try Harness([bucket(capacity: 3)])
        _ = try h.check(cost: 0)
        #expect(h.store.statistics.entries == 0)
    }

    @Test func costAboveCapacityHasItsOwnReasonAndNoRetry() throws {
        let h = try Harness([bucket(capacity: 5), Limit(name: "day", algorithm: .calendar(limit: 1_000, unit: .day))])
        let decision = try h.check(cost: 6)
        #expect(decision.denial == .costExceedsCapacity)
        #expect(decision.retryAfterMicroseconds == nil)
        #expect(decision.results[0].exceedsCapacity && decision.results[0].retryAfterMicroseconds == nil)
        #expect(RateLimitHeaders.retryAfter(decision) == nil)
        // Nothing was consumed; a cost equal to the capacity passes.
        #expect(try h.check(cost: 5).isAllowed)
        #expect(h.store.statistics.entries == 1)
    }

    @Test func costAboveCapacityOfAShadowLimitDoesNotDeny() throws {
        let h = try Harness([bucket(capacity: 50), bucket("shadow", capacity: 5, shadow: true)])
        let decision = try h.check(cost: 6)
        #expect(decision.isAllowed)
        #expect(decision.results[1].exceedsCapacity)
    }

    @Test func retryAfterIsTheLatestOfTheDenyingLimits() throws {
        let h = try Harness([
            bucket("burst", capacity: 2, per: second, tokens: 1),
            Limit(name: "minute", algorithm: .fixedWindow(limit: 2, window: minute)),
        ])
        #expect(try h.drain() == 2)
        let denied = try h.check()
        // The bucket refills in 1 s but the minute window only ends at the next minute boundary.
        let windowEnd = FixedWindow.aligned(h.clock.now(), length: minute).end
        #expect(denied.retryAfterMicroseconds == windowEnd - h.clock.now())
        h.clock.advance(microseconds: denied.retryAfterMicroseconds! - 1)
        #expect(try h.check().isAllowed == false)
        h.clock.advance(microseconds: 1)
        #expect(try h.check().isAllowed)
    }

    @Test func negativeCostIsAnError() throws {
        let h = try Harness([bucket(capacity: 5)])
        #expect(throws: LimiterError.self) { try h.check(cost: -1) }
    }

    @Test func organizationLimitsAreSharedByAllKeysOfTheOrganization() throws {
        let h = try Harness([bucket("key", capacity: 10), Limit(name: "org", algorithm: .fixedWindow(limit: 4, window: minute), scope: .organization)])
        let other = Partition(organization: "org_1", apiKey: "key_2")
        let foreign = Partition(organization: "org_2", apiKey: "key_3")
        #expect(try h.drain() == 4)
        #expect(try h.check(partition: other).isAllowed == false)
        #expect(try h.drain(partition: foreign) == 4)
    }

    @Test func decisionsFromResultsFollowTheSameRules() {
        func result(_ index: Int, admits: Bool, shadow: Bool = false, tooLarge: Bool = false, retry: Int64?) -> LimitResult {
            LimitResult(
                index: index, admits: admits, exceedsCapacity: tooLarge, shadow: shadow, quota: 10, windowMicroseconds: second,
                remaining: 0, resetAfterMicroseconds: 0, retryAfterMicroseconds: retry)
        }
        let limited = Decision(instant: 0, results: [result(0, admits: false, retry: 5), result(1, admits: false, retry: 9), result(2, admits: false, shadow: true, retry: 100)])
        #expect(limited.denial == .limited && limited.retryAfterMicroseconds == 9)
        let never = Decision(instant: 0, results: [result(0, admits: false, retry: 5), result(1, admits: false, tooLarge: true, retry: nil)])
        #expect(never.denial == .costExceedsCapacity && never.retryAfterMicroseconds == nil)
        let shadowOnly = Decision(instant: 0, results: [result(0, admits: true, retry: 0), result(1, admits: false, shadow: true, retry: 7)])
        #expect(shadowOnly.isAllowed && shadowOnly.retryAfterMicroseconds == nil)
    }
}
