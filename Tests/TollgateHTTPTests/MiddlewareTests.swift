import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import RawStructuredFieldValues
import Synchronization
import Testing
import Tollgate

@testable import TollgateHTTP

/// Tests never bootstrap logging; this logger drops everything.
let quietLogger = Logger(label: "tollgate.http.tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// Keys of the tests, each with its registry answer; counts lookups.
final class StaticKeys: APIKeyResolver {
    let table: [String: KeyResolution.Status]
    let lookups = Atomic<Int>(0)
    let failing = Atomic<Bool>(false)

    init(_ table: [String: KeyResolution.Status]) {
        self.table = table
    }

    struct Down: Error {}

    func resolve(_ key: APIKey) async throws -> KeyResolution {
        lookups.add(1, ordering: .relaxed)
        if failing.load(ordering: .relaxed) { throw Down() }
        for (text, status) in table where key.constantTimeEquals(text) {
            return KeyResolution(status, fingerprint: String(text.suffix(8)))
        }
        return KeyResolution(.unknown, fingerprint: "00000000")
    }
}

/// A store that cannot answer.
struct BrokenStore: LimitStore {
    func check(_ plan: Plan, partition: Partition, cost: Int) async throws -> Decision {
        throw LimiterError(.storeUnavailable, "down")
    }
}

/// A store whose failure policy refuses (as the Redis store's `deny` does).
struct FailClosedStore: LimitStore {
    func check(_ plan: Plan, partition: Partition, cost: Int) async throws -> Decision {
        .unchecked(instant: 0, origin: .failClosed, retryAfterMicroseconds: 2_000_000)
    }
}

/// What the handlers saw.
final class Seen: Sendable {
    private let value = Mutex<[String]>([])
    func append(_ entry: String) { value.withLock { $0.append(entry) } }
    var all: [String] { value.withLock { $0 } }
}

/// A context that keeps the outcome, as a gateway's would.
struct GatewayContext: RateLimitRequestContext {
    var coreContext: CoreRequestContextStorage
    var rateLimit: RateLimitOutcome?
    init(source: ApplicationRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
    }
}

@Suite struct MiddlewareTests {
    static let second: Int64 = 1_000_000

    static func plan() throws -> Plan {
        try Plan(
            name: "test",
            limits: [
                Limit(name: "burst", algorithm: .tokenBucket(capacity: 3, refillTokens: 1, refillPeriod: 10 * second)),
                Limit(name: "minute", algorithm: .fixedWindow(limit: 10, window: 60 * second)),
                Limit(name: "month", algorithm: .calendar(limit: 100, unit: .month), scope: .organization),
            ])
    }

    static func route(_ method: String?, _ path: String, scope: String? = nil, cost: RouteSettings.Cost = .fixed(1), limits: RouteSettings.LimitSelection = .all) -> RouteSettings {
        let segments: [RouteSettings.Segment] = path.split(separator: "/").map { part in
            if part == "*" { return .rest }
            if part.hasPrefix("{") { return .parameter(String(part.dropFirst().dropLast())) }
            return .literal(String(part))
        }
        return RouteSettings(method: method, path: path, segments: segments, scope: scope, cost: cost, limits: limits)
    }

    static let routes = [
        route("POST", "/api/v1/messages/send", scope: "messages:send"),
        route("POST", "/api/v1/messages/bulk", scope: "messages:send", cost: .perItem(field: ["message", "recipients"], maxBodySize: 256)),
        route("GET", "/api/v1/orgs/{org}/messages/{id}", scope: "messages:read", limits: .key),
        route("GET", "/api/v1/free/*", limits: .none),
        route("GET", "/api/v1/peek", cost: .fixed(0)),
    ]

    static let keys: [String: KeyResolution.Status] = [
        "wz_test_sender": .active(APIKeyIdentity(organization: "org_1", plan: "test", scopes: ["messages:send", "messages:read"], keyID: "k-sender")),
        "wz_test_reader": .active(APIKeyIdentity(organization: "org_1", plan: "test", scopes: ["messages:read"], keyID: "k-reader")),
        "wz_test_orphan": .active(APIKeyIdentity(organization: "org_1", plan: "gold", scopes: [], keyID: "k-orphan")),
        "wz_test_revoked": .revoked,
        "wz_test_expired": .expired,
    ]

    struct Harness {
        let keys = StaticKeys(MiddlewareTests.keys)
        let clock = ManualClock()
        let store: MemoryStore
        let plan: Plan
        let app: Application<RouterResponder<GatewayContext>>
        let seen = Seen()

        init(store: (any LimitStore)? = nil, unmatched: UnmatchedRoutes = .pass, legacy: Bool = false) throws {
            let plan = try MiddlewareTests.plan()
            self.plan = plan
            let memory = MemoryStore(clock: clock)
            self.store = memory
            let router = Router(context: GatewayContext.self)
            router.add(
                middleware: RateLimitMiddleware(
                    store: store ?? memory, keys: keys,
                    policy: RateLimitPolicy(plans: [plan], routes: MiddlewareTests.routes, unmatched: unmatched, legacyHeaders: legacy),
                    logger: quietLogger))
            let seen = self.seen
            router.post("/api/v1/messages/send") { request, context -> String in
                seen.append("send \(context.rateLimit?.identity?.organization ?? "?")")
                return "sent"
            }
            router.post("/api/v1/messages/bulk") { request, context -> String in
                let body = try await request.body.collect(upTo: 1024)
                seen.append("bulk \(context.rateLimit?.cost ?? -1) \(body.readableBytes)")
                return "queued"
            }
            router.get("/api/v1/orgs/{org}/messages/{id}") { _, _ in "delivered" }
            router.get("/api/v1/free/thing") { _, _ in "free" }
            router.get("/api/v1/peek") { _, _ in "peek" }
            router.get("/api/v1/conflict") { _, _ -> String in throw HTTPError(.conflict) }
            app = Application(router: router)
        }
    }

    static func bearer(_ key: String) -> HTTPFields { [.authorization: "Bearer \(key)"] }

    func parseList(_ value: String?) throws -> [(name: String, params: [String: Int])] {
        var parser = StructuredFieldValueParser(Array((value ?? "").utf8))
        return try parser.parseListFieldValue().map { member in
            guard case .item(let item) = member, case .string(let name) = item.rfc9651BareItem else { throw ParseFailure() }
            var params: [String: Int] = [:]
            for (key, value) in item.rfc9651Parameters {
                guard case .integer(let number) = value else { throw ParseFailure() }
                params[key] = Int(number)
            }
            return (name, params)
        }
    }

    struct ParseFailure: Error {}

    @Test func admittedRequestsCarryTheDecisionsHeaders() async throws {
        let h = try Harness()
        // A second store at the same instant replays the same checks: the headers must be its decisions'.
        let reference = MemoryStore(clock: h.clock)
        let partition = Partition(organization: "org_1", apiKey: "k-sender")
        try await h.app.test(.router) { client in
            for round in 0..<4 {
                let response = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
                let expected = try reference.checkNow(h.plan, partition: partition, cost: 1)
                var fields = HTTPFields()
                for (name, value) in RateLimitHeaders.fields(expected, plan: h.plan) {
                    fields.append(HTTPField(name: HTTPField.Name(name)!, value: value))
                }
                #expect(response.headers[.rateLimitPolicy] == fields[.rateLimitPolicy])
                #expect(response.headers[.rateLimit] == fields[.rateLimit])
                #expect(response.headers[.retryAfter] == fields[.retryAfter])

                let policy = try parseList(response.headers[.rateLimitPolicy])
                #expect(policy.map(\.name) == ["burst", "minute", "month"])
                #expect(policy[0].params == ["q": 3, "w": 30])
                #expect(policy[1].params == ["q": 10, "w": 60])
                let limits = try parseList(response.headers[.rateLimit])
                let results = Array(expected.results)
                for (index, limit) in limits.enumerated() {
                    #expect(limit.params["r"] == Int(results[index].remaining))
                    #expect(limit.params["t"] == Int(RateLimitHeaders.wholeSeconds(results[index].resetAfterMicroseconds, minimum: 0)))
                }
                if round < 3 {
                    #expect(response.status == .ok)
                    #expect(String(buffer: response.body) == "sent")
                } else {
                    #expect(response.status == .tooManyRequests)
                    #expect(response.headers[.retryAfter] == "10")
                    #expect(limits[0].params["r"] == 0)
                }
            }
        }
        #expect(h.seen.all == ["send org_1", "send org_1", "send org_1"])
    }

    @Test func refusalIsProblemJSONAndNeverReachesTheHandler() async throws {
        let h = try Harness()
        try await h.app.test(.router) { client in
            for _ in 0..<3 {
                _ = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
            }
            h.clock.advance(by: .seconds(4))
            let response = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
            #expect(response.status == .tooManyRequests)
            #expect(response.headers[.contentType] == "application/problem+json")
            // 10 s per token, 4 s gone: 6 s to wait.
            #expect(response.headers[.retryAfter] == "6")
            let body = try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any])
            #expect(body["type"] as? String == "https://iana.org/assignments/http-problem-types#quota-exceeded")
            #expect(body["status"] as? Int == 429)
            #expect(body["violated-policies"] as? [String] == ["burst"])
            #expect(body["retry_after"] as? Int == 6)
            #expect(body["title"] as? String != nil)
        }
        #expect(h.seen.all.count == 3)
    }

    @Test func legacyHeadersOnRequest() async throws {
        let h = try Harness(legacy: true)
        try await h.app.test(.router) { client in
            let response = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
            #expect(response.headers[HTTPField.Name("X-RateLimit-Limit")!] == "3")
            #expect(response.headers[HTTPField.Name("X-RateLimit-Remaining")!] == "2")
        }
    }

    @Test(arguments: [
        ("", "missing_key", "Bearer realm=\"tollgate\""),
        ("Bearer ", "malformed", "invalid_token"),
        ("Bearer wz_test_unknown", "unknown", "invalid_token"),
        ("Bearer wz_test_revoked", "revoked", "invalid_token"),
        ("Bearer wz_test_expired", "expired", "invalid_token"),
        ("Basic dXNlcjpwYXNz", "not bearer", "invalid_token"),
    ])
    func unauthorized(authorization: String, label: String, challenge: String) async throws {
        let h = try Harness()
        try await h.app.test(.router) { client in
            let headers: HTTPFields = authorization.isEmpty ? [:] : [.authorization: authorization]
            let response = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: headers)
            #expect(response.status == .unauthorized, "\(label)")
            #expect(response.headers[.wwwAuthenticate]?.contains(challenge) == true, "\(label)")
            #expect(response.headers[.contentType] == "application/problem+json")
            #expect(response.headers[.rateLimit] == nil)
        }
        #expect(h.seen.all.isEmpty)
    }

    @Test func oversizedAndNonASCIIKeysAreNotLookedUp() async throws {
        let h = try Harness()
        try await h.app.test(.router) { client in
            for key in [String(repeating: "k", count: 10_240), "wz_tëst", "wz test"] {
                let response = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: [APIKeyExtractor.keyHeader: key])
                #expect(response.status == .unauthorized)
                #expect(response.headers[.wwwAuthenticate]?.contains("invalid_token") == true)
            }
        }
        #expect(h.keys.lookups.load(ordering: .relaxed) == 0)
    }

    @Test func forbiddenScopeAndOrganization() async throws {
        let h = try Harness()
        try await h.app.test(.router) { client in
            let scope = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_reader"))
            #expect(scope.status == .forbidden)
            #expect(scope.headers[.wwwAuthenticate]?.contains("error=\"insufficient_scope\", scope=\"messages:send\"") == true)
            let body = try #require(try JSONSerialization.jsonObject(with: Data(scope.body.readableBytesView)) as? [String: Any])
            #expect(body["required_scope"] as? String == "messages:send")
            #expect((body["detail"] as? String)?.contains("messages:send") == true)

            let other = try await client.execute(uri: "/api/v1/orgs/org_2/messages/m1", method: .get, headers: Self.bearer("wz_test_reader"))
            #expect(other.status == .forbidden)
            let own = try await client.execute(uri: "/api/v1/orgs/org_1/messages/m1", method: .get, headers: Self.bearer("wz_test_reader"))
            #expect(own.status == .ok)
        }
    }

    @Test func unknownPlanIsAnOperatorError() async throws {
        let h = try Harness()
        try await h.app.test(.router) { client in
            let response = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_orphan"))
            #expect(response.status == .forbidden)  // no scope; an unmatched path shows the plan problem:
            let unmatched = try await client.execute(uri: "/elsewhere", method: .get, headers: Self.bearer("wz_test_orphan"))
            #expect(unmatched.status == .internalServerError)
        }
    }

    @Test func unmatchedRoutes() async throws {
        let pass = try Harness()
        try await pass.app.test(.router) { client in
            // Passes the limiter with cost 1 and reaches the router, which has no such route.
            let response = try await client.execute(uri: "/elsewhere", method: .get, headers: Self.bearer("wz_test_reader"))
            #expect(response.status == .notFound)
            #expect(try parseList(response.headers[.rateLimit])[0].params["r"] == 2)
        }
        let strict = try Harness(unmatched: .notFound)
        try await strict.app.test(.router) { client in
            let response = try await client.execute(uri: "/elsewhere", method: .get, headers: Self.bearer("wz_test_reader"))
            #expect(response.status == .notFound)
            #expect(response.headers[.contentType] == "application/problem+json")
            #expect(response.headers[.rateLimit] == nil)
        }
    }

    @Test func errorsFromHandlersStillCarryHeaders() async throws {
        let h = try Harness()
        try await h.app.test(.router) { client in
            let response = try await client.execute(uri: "/api/v1/conflict", method: .get, headers: Self.bearer("wz_test_reader"))
            #expect(response.status == .conflict)
            #expect(response.headers[.rateLimitPolicy] != nil)
        }
    }

    @Test func perItemCost() async throws {
        let h = try Harness()
        try await h.app.test(.router) { client in
            let body = ByteBuffer(string: #"{"message":{"recipients":["+1","+2"],"text":"hi"}}"#)
            let response = try await client.execute(uri: "/api/v1/messages/bulk", method: .post, headers: Self.bearer("wz_test_sender"), body: body)
            #expect(response.status == .ok)
            #expect(try parseList(response.headers[.rateLimit])[0].params["r"] == 1)  // 3 - 2
            // Two more would exceed the burst left (1): refused, nothing consumed.
            let more = try await client.execute(uri: "/api/v1/messages/bulk", method: .post, headers: Self.bearer("wz_test_sender"), body: body)
            #expect(more.status == .tooManyRequests)
            // More than the burst can ever hold: 429 without Retry-After.
            let huge = ByteBuffer(string: #"{"message":{"recipients":["1","2","3","4"]}}"#)
            let never = try await client.execute(uri: "/api/v1/messages/bulk", method: .post, headers: Self.bearer("wz_test_sender"), body: huge)
            #expect(never.status == .tooManyRequests)
            #expect(never.headers[.retryAfter] == nil)
            let problem = try #require(try JSONSerialization.jsonObject(with: Data(never.body.readableBytesView)) as? [String: Any])
            #expect(problem["cost"] as? Int == 4)
            #expect(problem["retry_after"] == nil)

            for bad in ["not json", #"{"message":{"recipients":"+1"}}"#, #"{"recipients":["+1"]}"#, "[]"] {
                let response = try await client.execute(
                    uri: "/api/v1/messages/bulk", method: .post, headers: Self.bearer("wz_test_sender"), body: ByteBuffer(string: bad))
                #expect(response.status == .badRequest, "\(bad)")
                #expect(response.headers[.contentType] == "application/problem+json")
            }
            let large = ByteBuffer(string: #"{"message":{"recipients":["# + String(repeating: "\"+1\",", count: 100) + "\"+1\"]}}")
            let tooLarge = try await client.execute(uri: "/api/v1/messages/bulk", method: .post, headers: Self.bearer("wz_test_sender"), body: large)
            #expect(tooLarge.status == .contentTooLarge)
        }
        // The handler got the body the limiter read.
        #expect(h.seen.all == ["bulk 2 50"])
    }

    /// Routes narrowed to the per-key limits count on the same counters as the full plan.
    @Test func narrowedRoutesShareCounters() async throws {
        let h = try Harness()
        try await h.app.test(.router) { client in
            _ = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
            let read = try await client.execute(uri: "/api/v1/orgs/org_1/messages/m1", method: .get, headers: Self.bearer("wz_test_sender"))
            #expect(read.status == .ok)
            let limits = try parseList(read.headers[.rateLimit])
            #expect(limits.map(\.name) == ["burst", "minute"])  // no monthly quota on reads
            #expect(limits[0].params["r"] == 1)
            #expect(limits[1].params["r"] == 8)
            let send = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
            let after = try parseList(send.headers[.rateLimit])
            #expect(after[0].params["r"] == 0)
            #expect(after[2].params["r"] == 98)  // month: the read did not count

            let free = try await client.execute(uri: "/api/v1/free/thing", method: .get, headers: Self.bearer("wz_test_sender"))
            #expect(free.status == .ok)
            #expect(free.headers[.rateLimit] == nil)
            let peek = try await client.execute(uri: "/api/v1/peek", method: .get, headers: Self.bearer("wz_test_sender"))
            #expect(peek.status == .ok)  // cost 0 reads without consuming, even with the bucket empty
        }
    }

    @Test func storeFailures() async throws {
        let broken = try Harness(store: BrokenStore())
        try await broken.app.test(.router) { client in
            let response = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
            #expect(response.status == .serviceUnavailable)
            #expect(response.headers[.retryAfter] == "1")
        }
        let closed = try Harness(store: FailClosedStore())
        try await closed.app.test(.router) { client in
            let response = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
            #expect(response.status == .serviceUnavailable)
            #expect(response.headers[.retryAfter] == "2")
            let body = try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any])
            #expect(body["retry_after"] as? Int == 2)
        }
        #expect(broken.seen.all.isEmpty && closed.seen.all.isEmpty)
    }

    @Test func registryOutageIs503() async throws {
        let h = try Harness()
        h.keys.failing.store(true, ordering: .relaxed)
        try await h.app.test(.router) { client in
            let response = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
            #expect(response.status == .serviceUnavailable)
            #expect(response.headers[.retryAfter] == "1")
        }
    }

    @Test func badPathsAre400() async throws {
        let h = try Harness()
        try await h.app.test(.router) { client in
            let response = try await client.execute(uri: "/api/v1/x/../messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
            #expect(response.status == .badRequest)
        }
    }

    @Test func reloadKeepsCounters() async throws {
        let h = try Harness()
        let limiter = RateLimiter(
            store: h.store, keys: h.keys, policy: RateLimitPolicy(plans: [h.plan], routes: Self.routes), logger: quietLogger)
        let router = Router(context: GatewayContext.self)
        router.add(middleware: RateLimitMiddleware(limiter: limiter))
        router.post("/api/v1/messages/send") { _, _ in "sent" }
        try await Application(router: router).test(.router) { client in
            for _ in 0..<2 {
                _ = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
            }
            // The same plan, defined anew (as a reload reads it): counters continue.
            limiter.update(RateLimitPolicy(plans: [try Self.plan()], routes: Self.routes))
            let third = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
            #expect(third.status == .ok)
            let fourth = try await client.execute(uri: "/api/v1/messages/send", method: .post, headers: Self.bearer("wz_test_sender"))
            #expect(fourth.status == .tooManyRequests)
        }
    }
}
