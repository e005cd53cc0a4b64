import HTTPTypes
import Logging
import NIOCore
import Testing
import Tollgate
import TollgateHTTP

@testable import TollgateSidecar

/// `RateLimiter.Admission`: a request like the last one of a connection is checked against the store
/// alone, and only while every answer it skips would still be the same.
@Suite struct AdmissionReuseTests {
    typealias Source = KeyRegistryTests.MemorySource
    typealias Clocks = KeyRegistryTests.Clocks

    static let key = "wz_test_reuse_0001"
    static let headers: HTTPFields = [.authorization: "Bearer \(key)"]
    static let route = RouteSettings(
        method: "POST", path: "/api/v1/messages/send", segments: [.literal("api"), .literal("v1"), .literal("messages"), .literal("send")],
        scope: "messages:send", cost: .fixed(1), limits: .all)

    static func plan(burst: Int64 = 3) throws -> Plan {
        try Plan(name: "test", limits: [Limit(name: "burst", algorithm: .tokenBucket(capacity: burst, refillTokens: 1, refillPeriod: 3_600_000_000))])
    }

    struct Harness {
        let source = Source()
        let clocks = Clocks()
        let registry: KeyRegistry
        let limiter: RateLimiter

        init(expiresAt: Int64? = nil) throws {
            source.set(AdmissionReuseTests.key, KeyRecord(organization: "org_1", plan: "test", scopes: ["messages:send"], expiresAt: expiresAt))
            let clocks = clocks
            registry = KeyRegistry(
                source: source, policy: .init(ttl: .seconds(5), negativeTTL: .seconds(2), capacity: 10, staleIfError: .seconds(60)),
                logger: KeyRegistryTests.logger, wallClock: { clocks.unix.load(ordering: .relaxed) }, now: { clocks.instant })
            limiter = RateLimiter(
                store: MemoryStore(), keys: registry, policy: RateLimitPolicy(plans: [try AdmissionReuseTests.plan()], routes: [AdmissionReuseTests.route]),
                logger: KeyRegistryTests.logger)
        }

        /// Judges the request in full (warming the key cache first), keeping its admission.
        func admission() async throws -> RateLimiter.Admission {
            _ = try await registry.resolve(APIKey(AdmissionReuseTests.key)!)
            var admission: RateLimiter.Admission?
            let judgement = limiter.judgeNow(
                method: .post, path: "/api/v1/messages/send", headers: AdmissionReuseTests.headers, body: nil, keeping: &admission)
            #expect(judgement.map(Self.status) == "admitted 2")
            return try #require(admission)
        }

        static func status(_ judgement: RateLimiter.Judgement) -> String {
            switch judgement {
            case .admitted(let outcome): "admitted \(outcome.decision?.results.first?.remaining ?? -1)"
            case .refused(let problem, _): "refused \(problem.status.code)"
            }
        }
    }

    @Test func aReusedAdmissionCountsOnTheSameCountersAsAFullJudgement() async throws {
        let h = try Harness()
        let admission = try await h.admission()
        #expect(h.limiter.judgeNow(reusing: admission).map(Harness.status) == "admitted 1")
        #expect(h.limiter.judgeNow(reusing: admission).map(Harness.status) == "admitted 0")
        #expect(h.limiter.judgeNow(reusing: admission).map(Harness.status) == "refused 429")
        // The full judgement sees the same counters.
        let full = h.limiter.judgeNow(method: .post, path: "/api/v1/messages/send", headers: Self.headers, body: nil)
        #expect(full.map(Harness.status) == "refused 429")
    }

    @Test func itStandsUntilTheKeysCacheEntryAges() async throws {
        let h = try Harness()
        let admission = try await h.admission()
        // Revoked at the source: the cached answer (and so the admission) stands for the cache's TTL.
        h.source.set(Self.key, KeyRecord(organization: "org_1", plan: "test", scopes: ["messages:send"], revoked: true))
        h.clocks.advance(milliseconds: 4_999)
        #expect(h.limiter.judgeNow(reusing: admission) != nil)
        h.clocks.advance(milliseconds: 1)
        #expect(h.limiter.judgeNow(reusing: admission) == nil)
        #expect(try await h.registry.resolve(APIKey(Self.key)!).status == .revoked)
    }

    @Test func aReloadOfTheKeysEndsIt() async throws {
        let h = try Harness()
        let admission = try await h.admission()
        h.registry.replace(source: h.source, policy: .init(ttl: .seconds(5)))
        #expect(h.limiter.judgeNow(reusing: admission) == nil)
    }

    @Test func theAsynchronousReuseStandsAndEndsAlike() async throws {
        let h = try Harness()
        let admission = try await h.admission()
        #expect(await h.limiter.judge(reusing: admission).map(Harness.status) == "admitted 1")
        h.registry.replace(source: h.source, policy: .init(ttl: .seconds(5)))
        #expect(await h.limiter.judge(reusing: admission) == nil)
        // Judged in full again: the key's answer is looked up, and an admission comes with it once cached.
        let full = await h.limiter.judgeKeeping(method: .post, path: "/api/v1/messages/send", headers: Self.headers) { _ in ByteBuffer() }
        #expect(Harness.status(full.judgement) == "admitted 0")
        #expect(full.admission == nil)  // looked up, not cached: nothing to reuse yet
        let again = await h.limiter.judgeKeeping(method: .post, path: "/api/v1/messages/send", headers: Self.headers) { _ in ByteBuffer() }
        #expect(Harness.status(again.judgement) == "refused 429")
        #expect(again.admission != nil)
    }

    @Test func aNewPolicyEndsIt() async throws {
        let h = try Harness()
        let admission = try await h.admission()
        h.limiter.update(RateLimitPolicy(plans: [try Self.plan(burst: 1)], routes: [Self.route]))
        #expect(h.limiter.judgeNow(reusing: admission) == nil)
    }

    @Test func theKeysExpiryEndsIt() async throws {
        let h = try Harness(expiresAt: Clocks().unix.load(ordering: .relaxed) + 2)  // two seconds from the clocks' start
        let admission = try await h.admission()
        h.clocks.advance(milliseconds: 1_000)
        #expect(h.limiter.judgeNow(reusing: admission) != nil)
        h.clocks.advance(milliseconds: 1_000)
        #expect(h.limiter.judgeNow(reusing: admission) == nil)
    }

    @Test func aRefusedKeyKeepsNothing() async throws {
        let h = try Harness()
        h.source.set(Self.key, KeyRecord(organization: "org_1", plan: "test", scopes: [], revoked: true))
        _ = try await h.registry.resolve(APIKey(Self.key)!)
        var admission: RateLimiter.Admission?
        let judgement = h.limiter.judgeNow(method: .post, path: "/api/v1/messages/send", headers: Self.headers, body: nil, keeping: &admission)
        #expect(judgement.map(Harness.status) == "refused 401")
        #expect(admission == nil)
    }
}
