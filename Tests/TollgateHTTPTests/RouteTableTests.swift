import HTTPTypes
import Testing
import Tollgate

@testable import TollgateHTTP

@Suite struct RouteTableTests {
    static let routes = [
        RouteSettings(method: "POST", path: "/api/v1/messages/send", segments: [.literal("api"), .literal("v1"), .literal("messages"), .literal("send")], scope: "messages:send"),
        RouteSettings(
            method: "GET", path: "/api/v1/orgs/{org}/messages/{id}",
            segments: [.literal("api"), .literal("v1"), .literal("orgs"), .parameter("org"), .literal("messages"), .parameter("id")],
            scope: "messages:read"),
        RouteSettings(method: nil, path: "/api/v1/media/*", segments: [.literal("api"), .literal("v1"), .literal("media"), .rest], scope: nil),
    ]
    let table = RouteTable(routes: routes)

    @Test func matchesMethodAndPattern() {
        #expect(table.match(method: .post, path: "/api/v1/messages/send") == .route(index: 0, organization: nil))
        #expect(table.match(method: .post, path: "/api/v1/messages/send?dry_run=1") == .route(index: 0, organization: nil))
        #expect(table.match(method: .post, path: "/api/v1/messages/send/") == .route(index: 0, organization: nil))
        #expect(table.match(method: .get, path: "/api/v1/messages/send") == .unmatched)
        #expect(table.match(method: .get, path: "/api/v1/orgs/org_1/messages/m1") == .route(index: 1, organization: "org_1"))
        #expect(table.match(method: .get, path: "/api/v1/orgs/org_1/messages") == .unmatched)
        #expect(table.match(method: .get, path: "/api/v1/orgs/org_1/messages/m1/x") == .unmatched)
        #expect(table.match(method: .put, path: "/api/v1/media") == .route(index: 2, organization: nil))
        #expect(table.match(method: .put, path: "/api/v1/media/a/b/c") == .route(index: 2, organization: nil))
    }

    /// Spelling a path differently does not dodge its rule.
    @Test func matchesDecodedSegments() {
        #expect(table.match(method: .post, path: "/api/v1/messages/%73end") == .route(index: 0, organization: nil))
        #expect(table.match(method: .get, path: "/api/v1/orgs/org%5F1/messages/m1") == .route(index: 1, organization: "org_1"))
    }

    @Test func refusesPathsThatCannotBeMatchedSafely() {
        for path in [
            "/api//v1/messages/send", "/api/v1/./messages/send", "/api/v1/x/../messages/send", "/api/v1/messages%2Fsend",
            "/api/v1/%zz", "/api/v1/%2e%2e/send", "*", "/api/v1/%ff", "/api/v1/messages/\u{301}send", "/api/v1/messagés/send",
        ] {
            guard case .invalidPath = table.match(method: .post, path: path) else {
                Issue.record("\(path) should be refused")
                continue
            }
        }
    }

    @Test func unmatchedPolicyIsKept() {
        #expect(RouteTable(routes: [], unmatched: .notFound).unmatched == .notFound)
        #expect(RouteTable(routes: []).match(method: .get, path: "/") == .unmatched)
    }
}
