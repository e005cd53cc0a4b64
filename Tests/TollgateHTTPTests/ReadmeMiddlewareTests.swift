import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import Tollgate
import TollgateHTTP

/// The gateway example for README.md: this code is compiled and run here.
@Suite struct ReadmeMiddlewareTests {
    // README-MIDDLEWARE-BEGIN
    /// The gateway's key lookup. A real one hashes the key and asks its own store; here, one key.
    struct GatewayKeys: APIKeyResolver {
        func resolve(_ key: APIKey) async throws -> KeyResolution {
            guard key.constantTimeEquals("wz_test_readme_0123456789") else { return .unknown }
            return .active(APIKeyIdentity(organization: "org_123", plan: "free", scopes: ["messages:send"], keyID: "9f86d081884c7d65"))
        }
    }

    func gateway(configurationFile: String = "Config/tollgate.yaml", store: MemoryStore = MemoryStore()) throws -> some ApplicationProtocol {
        let configuration = try TollgateConfiguration.load(contentsOfFile: configurationFile)
        let router = Router()
        router.add(middleware: RateLimitMiddleware(store: store, keys: GatewayKeys(), policy: RateLimitPolicy(configuration: configuration)))
        router.post("/api/v1/messages/send") { _, _ in "queued" }
        return Application(router: router)
    }
    // README-MIDDLEWARE-END

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func exampleRuns() async throws {
        // A clock that stands still, so that no token refills however slowly the test runs.
        let store = MemoryStore(clock: ManualClock())
        let app = try gateway(configurationFile: Self.root.appendingPathComponent("Config/tollgate.yaml").path, store: store)
        try await app.test(.router) { client in
            var statuses: [Int] = []
            for _ in 0..<7 {
                let response = try await client.execute(
                    uri: "/api/v1/messages/send", method: .post, headers: [.authorization: "Bearer wz_test_readme_0123456789"])
                statuses.append(response.status.code)
                #expect(response.headers[HTTPField.Name("RateLimit-Policy")!] != nil)
            }
            // The free plan's burst of five passes; the next two wait for a token.
            #expect(statuses == [200, 200, 200, 200, 200, 429, 429])
            let anonymous = try await client.execute(uri: "/api/v1/messages/send", method: .post)
            #expect(anonymous.status == .unauthorized)
            #expect(anonymous.headers[.wwwAuthenticate] == "Bearer realm=\"tollgate\"")
        }
    }

    /// The snippet the README shows: the lines between the markers, one indentation level removed.
    @Test func snippetIsExtractable() throws {
        let source = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let begin = try #require(source.range(of: "    // README-MIDDLEWARE-BEGIN\n"))
        let end = try #require(source.range(of: "    // README-MIDDLEWARE-END"))
        let lines = source[begin.upperBound..<end.lowerBound].split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.allSatisfy { $0.isEmpty || $0.hasPrefix("    ") })
        #expect(lines.count < 25, "a few lines")
        let snippet = lines.map { $0.hasPrefix("    ") ? String($0.dropFirst(4)) : String($0) }.joined(separator: "\n")
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(readme.contains(snippet), "README.md must contain the middleware example exactly as compiled here")
    }
}
