import Foundation
import Testing
import Tollgate

@testable import TollgateRedis

@Suite struct CircuitBreakerTests {
    @Test func opensAfterConsecutiveFailuresAndProbesOncePerInterval() {
        var breaker = CircuitBreaker(failureThreshold: 3, probeInterval: 1_000)
        #expect(breaker.permission(now: 0) == .call)
        breaker.recordFailure(now: 0)
        breaker.recordFailure(now: 1)
        #expect(breaker.permission(now: 2) == .call)  // two failures: still closed
        breaker.recordFailure(now: 2)
        #expect(breaker.permission(now: 3) == .refuse)
        #expect(breaker.permission(now: 1_001) == .refuse)  // open until 1,002
        #expect(breaker.permission(now: 1_002) == .probe)
        #expect(breaker.permission(now: 1_003) == .refuse)  // one probe at a time
        breaker.recordFailure(now: 1_010)
        #expect(breaker.permission(now: 2_009) == .refuse)
        #expect(breaker.permission(now: 2_010) == .probe)
        breaker.recordSuccess()
        #expect(breaker.permission(now: 2_011) == .call)
        #expect(!breaker.isOpen)
    }

    @Test func aSuccessResetsTheFailureCount() {
        var breaker = CircuitBreaker(failureThreshold: 2, probeInterval: 10)
        breaker.recordFailure(now: 0)
        breaker.recordSuccess()
        breaker.recordFailure(now: 1)
        #expect(breaker.permission(now: 2) == .call)
    }
}

@Suite struct DenyCacheTests {
    func refusal(retry: Int64) -> Decision {
        Decision(instant: 0, results: [
            LimitResult(
                index: 0, admits: false, exceedsCapacity: false, shadow: false, quota: 5, windowMicroseconds: 1_000_000,
                remaining: 0, resetAfterMicroseconds: retry, retryAfterMicroseconds: retry)
        ])
    }

    @Test func answersOnlyEqualOrLargerCostsUntilTheRetryInstant() throws {
        let cache = DenyCache(capacity: 100)
        let plan = try Plan(name: "p", limits: [Limit(name: "b", algorithm: .fixedWindow(limit: 5, window: 1_000_000))])
        let key = DenyCache.Key(plan: ObjectIdentifier(plan.compiled), partition: Partition(organization: "o", apiKey: "k"))
        cache.record(key, cost: 2, sentAt: 1_000, decision: refusal(retry: 500))
        #expect(cache.lookup(key, cost: 1, now: 1_100) == nil)  // a cheaper request may pass: ask the store
        #expect(cache.lookup(key, cost: 0, now: 1_100) == nil)  // peeks always go to the store
        let cached = try #require(cache.lookup(key, cost: 3, now: 1_100))
        #expect(cached.retryAfterMicroseconds == 400)
        #expect(cache.lookup(key, cost: 2, now: 1_500) == nil)  // the retry instant has come
        #expect(cache.count == 0)
    }

    @Test func staysWithinItsCapacity() throws {
        let cache = DenyCache(capacity: 32)
        let plan = try Plan(name: "p", limits: [Limit(name: "b", algorithm: .fixedWindow(limit: 5, window: 1_000_000))])
        for i in 0..<1_000 {
            let key = DenyCache.Key(plan: ObjectIdentifier(plan.compiled), partition: Partition(organization: "o", apiKey: "k\(i)"))
            cache.record(key, cost: 1, sentAt: Int64(i), decision: refusal(retry: 1_000_000))
        }
        #expect(cache.count <= 32)
    }

    @Test func neverRecordsWhatIsNotARetriableRefusal() throws {
        let cache = DenyCache(capacity: 10)
        let plan = try Plan(name: "p", limits: [Limit(name: "b", algorithm: .fixedWindow(limit: 5, window: 1_000_000))])
        let key = DenyCache.Key(plan: ObjectIdentifier(plan.compiled), partition: Partition(organization: "o", apiKey: "k"))
        cache.record(key, cost: 1, sentAt: 0, decision: .unchecked(instant: 0, origin: .failClosed, retryAfterMicroseconds: 5))
        cache.record(key, cost: 1, sentAt: 0, decision: Decision(instant: 0, results: []))
        #expect(cache.count == 0)
    }
}
