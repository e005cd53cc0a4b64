import PropertyBased
import Testing

@testable import Tollgate

/// Each algorithm against its reference model over random request sequences at manual-clock instants:
/// same verdict, same remaining quota, exact retry-after and reset, on every step.
@Suite struct AlgorithmPropertyTests {
    /// Gaps are drawn in "ticks" of 1/1000 of the limit's window, so every sequence crosses boundaries.
    static let steps = zip(Gen.int64(in: 0...700), Gen.int64(in: 0...6)).array(of: 1...250)

    @Test func tokenBucketMatchesGCRA() async throws {
        await propertyCheck(
            count: 400, input: Gen.int64(in: 1...40), Gen.int64(in: 1...9), Gen.int64(in: 1...3_000_000_000), Self.steps
        ) { capacity, tokens, period, steps in
            let reference = ReferenceTokenBucket(capacity: capacity, tokens: tokens, period: period)
            let limit = Limit(name: "bucket", algorithm: .tokenBucket(capacity: capacity, refillTokens: tokens, refillPeriod: period))
            try replay(limit, reference: reference, tick: max(1, reference.horizon / 1000), steps: steps)
        }
    }

    @Test func slidingLogMatchesHistory() async throws {
        await propertyCheck(count: 300, input: Gen.int64(in: 1...30), Gen.int64(in: 1...5_000_000_000), Self.steps) {
            capacity, window, steps in
            let limit = Limit(name: "log", algorithm: .slidingLog(limit: capacity, window: window))
            try replay(limit, reference: ReferenceSlidingLog(capacity: capacity, window: window), tick: max(1, window / 300), steps: steps)
        }
    }

    @Test func slidingCounterMatchesWindowCounts() async throws {
        await propertyCheck(count: 400, input: Gen.int64(in: 1...30), Gen.int64(in: 1...5_000_000_000), Self.steps) {
            capacity, window, steps in
            let limit = Limit(name: "counter", algorithm: .slidingCounter(limit: capacity, window: window))
            try replay(
                limit, reference: ReferenceSlidingCounter(capacity: capacity, window: window), tick: max(1, window / 300), steps: steps)
        }
    }

    @Test func fixedWindowMatchesWindowCounts() async throws {
        await propertyCheck(count: 300, input: Gen.int64(in: 1...30), Gen.int64(in: 1...5_000_000_000), Self.steps) {
            capacity, window, steps in
            let limit = Limit(name: "fixed", algorithm: .fixedWindow(limit: capacity, window: window))
            try replay(
                limit, reference: ReferenceFixedWindow(capacity: capacity, window: window), tick: max(1, window / 300), steps: steps)
        }
    }

    /// Also exercises very large numbers: a bucket of a billion tokens refilled at a prime rate.
    @Test func tokenBucketLargeNumbers() throws {
        var random = SplitMix64(seed: 7)
        let capacity: Int64 = 1_000_000_000
        let limit = Limit(name: "big", algorithm: .tokenBucket(capacity: capacity, refillTokens: 999_999_937, refillPeriod: 1_000_000))
        let reference = ReferenceTokenBucket(capacity: capacity, tokens: 999_999_937, period: 1_000_000)
        let steps = (0..<300).map { _ in (Int64.random(in: 0...400_000_000, using: &random), Int64.random(in: 0...400_000_000, using: &random)) }
        try replay(limit, reference: reference, tick: 1_000_000, steps: steps)
    }
}

/// Runs `steps` (gap in ticks, cost) against a one-limit plan on a fresh store and the reference model.
func replay<R: ReferenceLimit>(_ limit: Limit, reference: R, tick: Int64, steps: [(Int64, Int64)]) throws {
    var reference = reference
    let clock = ManualClock()
    let store = MemoryStore(configuration: .init(maximumEntries: 16, shards: 1), clock: clock)
    let plan = try Plan(name: "p", limits: [limit])
    let partition = Partition(organization: "org", apiKey: "key")
    for (step, (gap, cost)) in steps.enumerated() {
        clock.advance(microseconds: gap * tick)
        let now = clock.now()
        let decision = try store.checkNow(plan, partition: partition, cost: Int(cost))
        let expectedAdmit = cost <= reference.capacity && reference.admits(at: now, cost: cost)
        let context = Comment(rawValue: "step \(step) at +\(now - ManualClock().now())us cost \(cost) \(limit.algorithm)")
        try #require(decision.isAllowed == expectedAdmit, context)
        if expectedAdmit && cost > 0 { reference.record(at: now, cost: cost) }
        let result = decision.results[0]
        try #require(result.remaining == reference.remaining(at: now), context)
        if cost > reference.capacity {
            try #require(decision.denial == .costExceedsCapacity, context)
            try #require(decision.retryAfterMicroseconds == nil, context)
        } else if !expectedAdmit {
            let earliest = try #require(reference.earliestAdmission(at: now, cost: cost))
            try #require(decision.retryAfterMicroseconds == earliest - now, context)
            try #require(result.retryAfterMicroseconds == earliest - now, context)
        } else {
            try #require(decision.retryAfterMicroseconds == nil, context)
        }
        // Reset: the earliest instant at which one more unit than `remaining` is available.
        if result.remaining < reference.capacity {
            let more = try #require(reference.earliestAdmission(at: now, cost: result.remaining + 1))
            try #require(result.resetAfterMicroseconds == more - now, context)
        } else {
            try #require(result.resetAfterMicroseconds == 0, context)
        }
    }
}
