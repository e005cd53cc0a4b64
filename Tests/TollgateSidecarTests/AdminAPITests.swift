import AsyncHTTPClient
import Foundation
import NIOCore
import Testing
import Tollgate
import TollgateSidecar
import TollgateTestSupport

extension EndToEnd {
    /// The admin API (`/v1/usage`, `/v1/config`, `/v1/reload`) on both stores, through real HTTP.
    @Suite struct AdminAPITests {
        static let token = "admin-token-0123456789abcdef"

        var authorization: [(String, String)] { [("Authorization", "Bearer \(Self.token)")] }

        /// The `RateLimit` field's `r` for policy `name`.
        func remaining(_ answer: Answer, _ name: String) -> Int? {
            guard let field = answer.header("RateLimit") else { return nil }
            for item in field.split(separator: ",") where item.contains("\"\(name)\"") {
                for parameter in item.split(separator: ";") where parameter.hasPrefix("r=") {
                    return Int(parameter.dropFirst(2))
                }
            }
            return nil
        }

        /// The limit `name` of the first key of a usage answer.
        func limit(_ answer: Answer, _ name: String) -> [String: Any]? {
            let keys = answer.json?["keys"] as? [[String: Any]]
            return (keys?.first?["limits"] as? [[String: Any]])?.first { $0["name"] as? String == name }
        }

        func withStore(_ backend: String, _ body: (String) async throws -> Void) async throws {
            if backend == "memory" {
                try await body("store: { backend: memory }")
            } else {
                try await withRedisServer { redis in try await body("store: { backend: redis, url: \"\(redis.url)\" }") }
            }
        }

        @Test(arguments: ["memory", "redis"])
        func usageAndResetMatchDecisions(backend: String) async throws {
            try await withStore(backend) { store in
                let config = configuration(store: store, server: "admin_token: \(Self.token), watch_files: false")
                try await withSidecar(config) { sidecar in
                    try await withHTTPClient { client in
                        let send = sidecar.base + "/api/v1/messages/send"
                        let keyID = String(TestKey.sender.hash.prefix(16))
                        let usage = sidecar.admin + "/v1/usage?key=\(keyID)"

                        var last = try await client.send(.POST, send, key: .sender)
                        last = try await client.send(.POST, send, key: .sender)
                        #expect(last.status == 200)

                        // The token is required, compared whole.
                        #expect(try await client.send(.GET, usage).status == 401)
                        let wrong = try await client.send(.GET, usage, headers: [("Authorization", "Bearer \(Self.token)x")])
                        #expect(wrong.status == 401)
                        #expect(wrong.header("Content-Type") == "application/problem+json")
                        #expect(wrong.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)

                        let read = try await client.send(.GET, usage, headers: authorization)
                        #expect(read.status == 200)
                        #expect(limit(read, "burst")?["remaining"] as? Int == remaining(last, "burst"))
                        #expect(limit(read, "burst")?["quota"] as? Int == 3)
                        #expect(limit(read, "day")?["used"] as? Int == 2)
                        #expect(limit(read, "day")?["remaining"] as? Int == remaining(last, "day"))
                        // Reading consumed nothing.
                        let again = try await client.send(.GET, usage, headers: authorization)
                        #expect(limit(again, "burst")?["remaining"] as? Int == remaining(last, "burst"))

                        // The last token, then a refusal.
                        #expect(try await client.send(.POST, send, key: .sender).status == 200)
                        #expect(try await client.send(.POST, send, key: .sender).status == 429)

                        let reset = try await client.send(.DELETE, usage, headers: authorization)
                        #expect(reset.status == 200)
                        let entries = reset.json?["reset"] as? [[String: Any]]
                        #expect(entries?.first?["limits"] as? [String] == ["burst"])
                        let passed = try await client.send(.POST, send, key: .sender)
                        #expect(passed.status == 200)
                        #expect(remaining(passed, "burst") == 2)
                        // The organization's limit is shared: a key's reset leaves it.
                        #expect(remaining(passed, "day") == 996)

                        let orgReset = try await client.send(
                            .DELETE, sidecar.admin + "/v1/usage?org=org_1&limit=day", headers: authorization)
                        #expect(orgReset.status == 200)
                        let afterOrg = try await client.send(.GET, usage, headers: authorization)
                        #expect(limit(afterOrg, "day")?["used"] as? Int == 0)
                        #expect(limit(afterOrg, "burst")?["remaining"] as? Int == 2)

                        // Bad requests.
                        #expect(try await client.send(.GET, sidecar.admin + "/v1/usage", headers: authorization).status == 400)
                        #expect(
                            try await client.send(.GET, sidecar.admin + "/v1/usage?key=\(TestKey.sender.text)", headers: authorization).status
                                == 400)
                        #expect(
                            try await client.send(.GET, sidecar.admin + "/v1/usage?key=00000000000000000", headers: authorization).status
                                == 404)
                        #expect(
                            try await client.send(.DELETE, usage + "&limit=nope", headers: authorization).status == 404)
                    }
                }
            }
        }

        @Test func configIsRedactedAndReloadReportsErrors() async throws {
            let folder = try TestDirectory()
            defer { folder.remove() }
            let config = configuration(server: "admin_token: \(Self.token), watch_files: false")
            try await withSidecar(config, directory: folder) { sidecar in
                try await withHTTPClient { client in
                    let shown = try await client.send(.GET, sidecar.admin + "/v1/config", headers: authorization)
                    #expect(shown.status == 200)
                    #expect(!shown.text.contains(Self.token))
                    #expect(shown.text.contains("<redacted>"))
                    #expect((shown.json?["sha256"] as? String)?.count == 64)
                    let plans = (shown.json?["configuration"] as? [String: Any])?["plans"] as? [String: Any]
                    #expect(plans?["basic"] != nil)

                    _ = try folder.write("tollgate.yaml", config.replacingOccurrences(of: "capacity: 3", with: "capacity: -3"))
                    let refused = try await client.send(.POST, sidecar.admin + "/v1/reload", headers: authorization)
                    #expect(refused.status == 422)
                    #expect(refused.header("Content-Type") == "application/problem+json")
                    #expect((refused.json?["detail"] as? String)?.contains("capacity") == true)
                    let unchanged = try await client.send(.GET, sidecar.admin + "/v1/config", headers: authorization)
                    #expect(unchanged.json?["sha256"] as? String == shown.json?["sha256"] as? String)

                    _ = try folder.write("tollgate.yaml", config.replacingOccurrences(of: "capacity: 3", with: "capacity: 4"))
                    let applied = try await client.send(.POST, sidecar.admin + "/v1/reload", headers: authorization)
                    #expect(applied.status == 200)
                    #expect(applied.json?["sha256"] as? String != shown.json?["sha256"] as? String)
                    let metrics = try await client.send(.GET, sidecar.admin + "/metrics")
                    #expect(metrics.text.contains("tollgate_config_reloads_total{result=\"refused\"} 1"))
                    #expect(metrics.text.contains("tollgate_config_reloads_total{result=\"applied\"} 1"))
                }
            }
        }

        @Test func withoutATokenOnlyTheProbesAnswer() async throws {
            try await withSidecar(configuration()) { sidecar in
                try await withHTTPClient { client in
                    let health = try await client.send(.GET, sidecar.admin + "/healthz")
                    #expect(health.status == 200)
                    #expect(try await client.send(.GET, sidecar.admin + "/metrics").status == 200)
                    let config = try await client.send(.GET, sidecar.admin + "/v1/config", headers: authorization)
                    #expect(config.status == 404)
                    #expect(config.header("Content-Type") == "application/problem+json")
                    #expect(try await client.send(.POST, sidecar.admin + "/v1/reload", headers: authorization).status == 404)
                }
            }
        }
    }
}
