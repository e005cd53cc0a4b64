import AsyncHTTPClient
import Crypto
import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1
import RawStructuredFieldValues
import Testing
import Tollgate
import TollgateSidecar
import TollgateTestSupport

extension EndToEnd {
    /// End to end, in process: a real upstream (Hummingbird on a free port), the sidecar, a real client.
    @Suite struct ProxyTests {
        static func list(_ value: String?) throws -> [(name: String, params: [String: Int64])] {
            var parser = StructuredFieldValueParser(Array((value ?? "").utf8))
            return try parser.parseListFieldValue().map { member in
                guard case .item(let item) = member, case .string(let name) = item.rfc9651BareItem else { throw TestSetupError(description: "not a string item") }
                var params: [String: Int64] = [:]
                for (key, value) in item.rfc9651Parameters {
                    guard case .integer(let number) = value else { throw TestSetupError(description: "not an integer") }
                    params[key] = number
                }
                return (name, params)
            }
        }

        @Test func admittedRequestsAreForwarded() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    try await withHTTPClient { client in
                        let answer = try await client.send(
                            .POST, sidecar.base + "/api/v1/messages/send?dry_run=1", key: .sender,
                            headers: [
                                ("Content-Type", "application/json"), ("X-Forwarded-For", "203.0.113.7"), ("Connection", "X-Client-Hop"),
                                ("X-Client-Hop", "1"), ("X-Tollgate-Plan", "enterprise"), ("Proxy-Authorization", "Basic eA=="),
                            ],
                            body: ByteBuffer(string: "{\"to\":\"+15550100\",\"text\":\"hello\"}"))
                        #expect(answer.status == 200)
                        #expect(answer.text == "{\"queued\":true}")
                        // The upstream's own hop-by-hop fields are gone; its end-to-end fields stay.
                        #expect(answer.header("X-Up-Plain") == "1")
                        #expect(answer.header("X-Up-Hop") == nil)
                        #expect(answer.header("Keep-Alive") == nil)
                        #expect(answer.header("Proxy-Authenticate") == nil)
                        // RateLimit fields on the admitted response.
                        let policy = try Self.list(answer.header("RateLimit-Policy"))
                        #expect(policy.map(\.name) == ["burst", "day"])
                        #expect(policy[0].params == ["q": 3, "w": 30])
                        #expect(try Self.list(answer.header("RateLimit"))[0].params["r"] == 2)

                        let received = try #require(upstream.received.last)
                        #expect(received.path == "/api/v1/messages/send?dry_run=1")
                        #expect(received.headers[HTTPField.Name("X-Forwarded-For")!] == "203.0.113.7, 127.0.0.1")
                        #expect(received.headers[HTTPField.Name("X-Forwarded-Proto")!] == "http")
                        #expect(received.headers[HTTPField.Name("X-Tollgate-Organization")!] == "org_1")
                        #expect(received.headers[HTTPField.Name("X-Tollgate-Plan")!] == "basic")  // not the client's
                        #expect(received.headers[HTTPField.Name("X-Tollgate-Key-Id")!] == String(TestKey.sender.hash.prefix(16)))
                        #expect(received.headers[HTTPField.Name("X-Client-Hop")!] == nil)
                        #expect(received.headers[.proxyAuthorization] == nil)
                        #expect(received.headers[.authorization] == "Bearer \(TestKey.sender.text)")
                        #expect(received.authority == "127.0.0.1:\(sidecar.proxyPort)")

                        // Redirects come back to the client, never followed.
                        let redirect = try await client.send(.GET, sidecar.base + "/redirect", key: .roomy)
                        #expect(redirect.status == 302)
                        #expect(redirect.header("Location") == "/api/v1/messages/send")

                        let metrics = try await client.send(.GET, sidecar.admin + "/metrics").text
                        #expect(metrics.contains("tollgate_upstream_responses_total{status=\"200\"} 1"))
                        #expect(metrics.contains("tollgate_upstream_responses_total{status=\"302\"} 1"))
                        #expect(metrics.contains("tollgate_upstream_duration_seconds_count 2"))
                    }
                }
            }
        }

        @Test func credentialsCanBeKeptFromTheUpstream() async throws {
            try await withUpstream { upstream in
                let config = configuration(upstream: upstream.url, upstreamOptions: "response_timeout: 1s, forward_credentials: false")
                try await withSidecar(config) { sidecar in
                    try await withHTTPClient { client in
                        let answer = try await client.send(.POST, sidecar.base + "/api/v1/messages/send", headers: [("wazzapi-api-key", TestKey.sender.text)])
                        #expect(answer.status == 200)
                        let received = try #require(upstream.received.last)
                        #expect(received.headers[HTTPField.Name("wazzapi-api-key")!] == nil)
                        #expect(received.headers[.authorization] == nil)
                    }
                }
            }
        }

        @Test func invalidKeysAre401AndNeverForwarded() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    try await withHTTPClient { client in
                        let url = sidecar.base + "/api/v1/messages/send"
                        let cases: [(String, [(String, String)])] = [
                            ("missing", []),
                            ("malformed", [("Authorization", "Bearer not a key")]),
                            ("not bearer", [("Authorization", "Token \(TestKey.sender.text)")]),
                            ("unknown", [("Authorization", "Bearer wz_test_unknown_0001")]),
                            ("revoked", [("Authorization", "Bearer \(TestKey.revokedKey.text)")]),
                            ("expired", [("wazzapi-api-key", TestKey.expired.text)]),
                            ("10 KB", [("Authorization", "Bearer " + String(repeating: "k", count: 10_240))]),
                        ]
                        for (label, headers) in cases {
                            let answer = try await client.send(.POST, url, headers: headers)
                            #expect(answer.status == 401, "\(label)")
                            #expect(answer.header("WWW-Authenticate")?.hasPrefix("Bearer realm=\"tollgate\"") == true, "\(label)")
                            #expect(answer.header("Content-Type") == "application/problem+json", "\(label)")
                            #expect(answer.json?["status"] as? Int == 401, "\(label)")
                            #expect(!answer.text.contains(TestKey.revokedKey.text) && !answer.text.contains("kkkkkkkk"), "\(label)")
                        }
                        // Non-ASCII bytes in the key, as raw bytes on the wire.
                        let raw = try await rawExchange(
                            port: sidecar.proxyPort,
                            Array("POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\nAuthorization: Bearer wz_".utf8)
                                + [0xC3, 0xA9, 0xFF] + Array("\r\n\r\n".utf8))
                        #expect(raw.status == 401)
                        #expect(raw.text.contains("WWW-Authenticate: Bearer realm=\"tollgate\", error=\"invalid_token\""))
                    }
                    #expect(upstream.count == 0)
                }
            }
        }

        @Test func scopeAndOrganizationAre403() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    try await withHTTPClient { client in
                        let scope = try await client.send(.POST, sidecar.base + "/api/v1/messages/send", key: .reader)
                        #expect(scope.status == 403)
                        #expect(scope.json?["required_scope"] as? String == "messages:send")
                        #expect((scope.json?["detail"] as? String)?.contains("messages:send") == true)
                        #expect(scope.header("WWW-Authenticate")?.contains("scope=\"messages:send\"") == true)

                        let other = try await client.send(.GET, sidecar.base + "/api/v1/orgs/org_1/messages/m1", key: .otherOrg)
                        #expect(other.status == 403)
                        #expect(other.header("Content-Type") == "application/problem+json")
                        #expect(upstream.count == 0)

                        let own = try await client.send(.GET, sidecar.base + "/api/v1/orgs/org_2/messages/m1", key: .otherOrg)
                        #expect(own.status == 200)
                        #expect(own.text == "{\"id\":\"m1\"}")
                    }
                }
            }
        }

        @Test func limitReachedIs429WithRetryGuidance() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    try await withHTTPClient { client in
                        let url = sidecar.base + "/api/v1/messages/send"
                        for expected in [2, 1, 0] {
                            let answer = try await client.send(.POST, url, key: .sender)
                            #expect(answer.status == 200)
                            #expect(try Self.list(answer.header("RateLimit"))[0].params["r"] == Int64(expected))
                        }
                        let refused = try await client.send(.POST, url, key: .sender)
                        #expect(refused.status == 429)
                        #expect(upstream.count == 3)

                        // The fields, parsed as RFC 9651 lists, against the plan and the refusal.
                        let policy = try Self.list(refused.header("RateLimit-Policy"))
                        #expect(policy.map(\.name) == ["burst", "day"])
                        #expect(policy[0].params == ["q": 3, "w": 30])
                        #expect(policy[1].params == ["q": 1000, "w": 86_400])
                        let limits = try Self.list(refused.header("RateLimit"))
                        #expect(limits[0].params["r"] == 0)
                        #expect(limits[1].params["r"] == 997)  // the refusal consumed nothing
                        let burstReset = try #require(limits[0].params["t"])
                        let retryAfter = try #require(refused.header("Retry-After").flatMap { Int64($0) })
                        // One token every 10 s: the next comes within 10 s, and Retry-After says exactly when.
                        #expect((1...10).contains(retryAfter))
                        #expect(burstReset == retryAfter)

                        let problem = try #require(refused.json)
                        #expect(refused.header("Content-Type") == "application/problem+json")
                        #expect(problem["type"] as? String == "https://iana.org/assignments/http-problem-types#quota-exceeded")
                        #expect(problem["status"] as? Int == 429)
                        #expect(problem["violated-policies"] as? [String] == ["burst"])
                        #expect(problem["retry_after"] as? Int == Int(retryAfter))
                    }
                }
            }
        }

        @Test func perRecipientCost() async throws {
            try await withSidecar(configuration(upstream: nil)) { sidecar in
                try await withHTTPClient { client in
                    let url = sidecar.base + "/api/v1/messages/bulk"
                    let two = try await client.send(.POST, url, key: .sender, body: ByteBuffer(string: "{\"recipients\":[\"+1\",\"+2\"],\"text\":\"hi\"}"))
                    #expect(two.status == 200)
                    #expect(two.json?["accepted"] as? Int == 2)  // the stand-in got the body the sidecar read
                    #expect(try Self.list(two.header("RateLimit"))[0].params["r"] == 1)
                    let bad = try await client.send(.POST, url, key: .sender, body: ByteBuffer(string: "{\"recipients\":"))
                    #expect(bad.status == 400)
                    #expect(bad.header("Content-Type") == "application/problem+json")
                    let big = try await client.send(
                        .POST, url, key: .sender, body: ByteBuffer(string: "{\"recipients\":[" + String(repeating: "\"+15550100\",", count: 500) + "\"x\"]}"))
                    #expect(big.status == 413)
                }
            }
        }

        @Test func unmatchedRoutesCanBe404() async throws {
            try await withSidecar(configuration(upstream: nil, unmatched: "not_found")) { sidecar in
                try await withHTTPClient { client in
                    let answer = try await client.send(.GET, sidecar.base + "/api/v1/nothing/here", key: .sender)
                    #expect(answer.status == 404)
                    #expect(answer.header("Content-Type") == "application/problem+json")
                    // Authentication still comes first.
                    #expect(try await client.send(.GET, sidecar.base + "/api/v1/nothing/here").status == 401)
                }
            }
        }

        @Test func standInAnswersWithoutAnUpstream() async throws {
            try await withSidecar(configuration(upstream: nil)) { sidecar in
                try await withHTTPClient { client in
                    let answer = try await client.send(.POST, sidecar.base + "/api/v1/messages/send", key: .sender, body: ByteBuffer(string: "{}"))
                    #expect(answer.status == 200)
                    #expect(answer.header("X-Stand-In") == "tollgate")
                    #expect(answer.json?["status"] as? String == "queued")
                    #expect((answer.json?["id"] as? String)?.hasPrefix("msg_") == true)
                }
            }
        }

        @Test func oversizedBodiesAre413() async throws {
            try await withUpstream { upstream in
                let config = configuration(upstream: upstream.url, server: "max_body_size: 64KiB, idle_timeout: 5s")
                try await withSidecar(config) { sidecar in
                    try await withHTTPClient { client in
                        // Declared too large: refused before any of it is read or forwarded.
                        let declared = try await client.send(.POST, sidecar.base + "/echo", key: .roomy, body: ByteBuffer(repeating: 7, count: 100_000))
                        #expect(declared.status == 413)
                        #expect(declared.json?["max_body_size"] as? Int == 65_536)
                        #expect(upstream.count == 0)

                        // Chunked, no length: cut off while streaming (to an endpoint that reads the whole body
                        // before it answers; one that answers first has its answer cut short instead).
                        var request = HTTPClientRequest(url: sidecar.base + "/api/v1/messages/send")
                        request.method = .POST
                        request.headers.add(name: "Authorization", value: "Bearer \(TestKey.roomy.text)")
                        let chunks = (0..<40).map { _ in ByteBuffer(repeating: 1, count: 4096) }
                        request.body = .stream(BufferStream(chunks), length: .unknown)
                        let response = try await client.execute(request, timeout: .seconds(10))
                        #expect(response.status.code == 413)
                    }
                }
            }
        }

        @Test func oversizedHeadersAre431() async throws {
            try await withSidecar(configuration(upstream: nil, server: "max_header_size: 8KiB, idle_timeout: 5s")) { sidecar in
                let raw = try await rawExchange(
                    port: sidecar.proxyPort,
                    Array(("GET /api/v1/messages/send HTTP/1.1\r\nHost: x\r\nX-Filler: " + String(repeating: "f", count: 9_000) + "\r\n\r\n").utf8))
                #expect(raw.status == 431)
                #expect(raw.text.contains("Content-Type: application/problem+json"))
                #expect(raw.text.contains("\"status\":431"))
                #expect(raw.closedByServer)
            }
        }

        @Test func ambiguousFramingIs400AndNeverForwarded() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url, server: "idle_timeout: 5s")) { sidecar in
                    let key = TestKey.roomy.authorizationLine
                    let both = try await rawExchange(
                        port: sidecar.proxyPort,
                        Array("POST /echo HTTP/1.1\r\nHost: x\r\n\(key)Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".utf8))
                    #expect(both.status == 400)
                    #expect(both.text.contains("application/problem+json"))
                    #expect(both.closedByServer)
                    let twice = try await rawExchange(
                        port: sidecar.proxyPort,
                        Array("POST /echo HTTP/1.1\r\nHost: x\r\n\(key)Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".utf8))
                    #expect(twice.status == 400)
                    #expect(twice.closedByServer)
                    // A well-framed request on the same sidecar does reach the upstream.
                    let fine = try await rawExchange(
                        port: sidecar.proxyPort, Array("POST /echo HTTP/1.1\r\nHost: x\r\n\(key)Content-Length: 5\r\nConnection: close\r\n\r\nhello".utf8))
                    #expect(fine.status == 200)
                    #expect(fine.text.hasSuffix("hello") || fine.text.contains("5\r\nhello\r\n"))
                    #expect(upstream.received.map(\.path) == ["/echo"])
                }
            }
        }

        @Test func expectContinueIsAnswered() async throws {
            try await withSidecar(configuration(upstream: nil, server: "idle_timeout: 5s")) { sidecar in
                let raw = try await rawExchange(
                    port: sidecar.proxyPort,
                    Array(
                        ("POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(TestKey.sender.text)\r\n"
                            + "Expect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}").utf8))
                #expect(raw.text.hasPrefix("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"))
            }
        }

        @Test func stalledClientIsCutOff() async throws {
            try await withSidecar(configuration(upstream: nil, server: "idle_timeout: 1s")) { sidecar in
                let started = ContinuousClock.now
                let raw = try await rawExchange(
                    port: sidecar.proxyPort, Array("POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\nContent-Le".utf8), timeout: .seconds(10))
                #expect(raw.closedByServer)
                #expect(ContinuousClock.now - started < .seconds(9))
                // Mid-body too.
                let body = try await rawExchange(
                    port: sidecar.proxyPort,
                    Array("POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(TestKey.sender.text)\r\nContent-Length: 100\r\n\r\n{\"to\"".utf8),
                    timeout: .seconds(10))
                #expect(body.closedByServer)
            }
        }

        @Test func upstreamDownIs502() async throws {
            let port = try await freePort()  // nothing listens there
            let config = configuration(upstream: "http://127.0.0.1:\(port)", upstreamOptions: "connect_timeout: 20s, response_timeout: 20s")
            try await withSidecar(config) { sidecar in
                try await withHTTPClient { client in
                    let started = ContinuousClock.now
                    let answer = try await client.send(.POST, sidecar.base + "/api/v1/messages/send", key: .sender)
                    #expect(answer.status == 502)
                    #expect(answer.header("Content-Type") == "application/problem+json")
                    // At once: a refused connection is not retried until the deadline.
                    #expect(ContinuousClock.now - started < .seconds(10))
                    let metrics = try await client.send(.GET, sidecar.admin + "/metrics").text
                    #expect(metrics.contains("tollgate_upstream_responses_total{status=\"refused\"} 1"))
                }
            }
        }

        @Test func slowUpstreamIs504() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url, upstreamOptions: "response_timeout: 500ms")) { sidecar in
                    try await withHTTPClient { client in
                        let started = ContinuousClock.now
                        let answer = try await client.send(.GET, sidecar.base + "/slow?ms=30000", key: .roomy)
                        #expect(answer.status == 504)
                        #expect(answer.json?["status"] as? Int == 504)
                        #expect(ContinuousClock.now - started < .seconds(20))  // long before the upstream answers
                    }
                }
            }
        }

        /// 10 MB up and the same 10 MB back, streamed through the sidecar in both directions.
        @Test func tenMegabytesStreamBothWays() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url, upstreamOptions: "response_timeout: 30s")) { sidecar in
                    try await withHTTPClient { client in
                        var generator = SystemRandomNumberGenerator()
                        let chunkSize = 64 * 1024
                        let chunks = (0..<160).map { _ in ByteBuffer(bytes: (0..<chunkSize).map { _ in UInt8.random(in: 0...255, using: &generator) }) }
                        var sent = SHA256()
                        for chunk in chunks { sent.update(data: Array(chunk.readableBytesView)) }

                        var request = HTTPClientRequest(url: sidecar.base + "/echo")
                        request.method = .POST
                        request.headers.add(name: "Authorization", value: "Bearer \(TestKey.roomy.text)")
                        request.body = .stream(BufferStream(chunks), length: .known(Int64(chunkSize * chunks.count)))
                        let response = try await client.execute(request, timeout: .seconds(60))
                        #expect(response.status == .ok)
                        var received = SHA256()
                        var count = 0
                        var pieces = 0
                        for try await piece in response.body {
                            received.update(data: Array(piece.readableBytesView))
                            count += piece.readableBytes
                            pieces += 1
                        }
                        #expect(count == 10_485_760)
                        #expect(Array(received.finalize()) == Array(sent.finalize()))
                        #expect(pieces > 1)  // it arrived as a stream, not as one buffer
                    }
                }
            }
        }

        @Test func adminEndpoints() async throws {
            try await withSidecar(configuration(upstream: nil)) { sidecar in
                try await withHTTPClient { client in
                    _ = try await client.send(.POST, sidecar.base + "/api/v1/messages/send", key: .sender)
                    _ = try await client.send(.POST, sidecar.base + "/api/v1/messages/send")
                    let health = try await client.send(.GET, sidecar.admin + "/healthz")
                    #expect(health.status == 200)
                    let ready = try await client.send(.GET, sidecar.admin + "/readyz")
                    #expect(ready.status == 200)
                    #expect(ready.json?["store"] as? String == "ok")
                    let metrics = try await client.send(.GET, sidecar.admin + "/metrics")
                    #expect(metrics.status == 200)
                    for line in [
                        "tollgate_checks_total{plan=\"basic\",outcome=\"allowed\",origin=\"store\"} 1",
                        "tollgate_decisions_total{plan=\"basic\",limit=\"burst\",outcome=\"allowed\"} 1",
                        "tollgate_refusals_total{reason=\"missing_key\"} 1",
                        "tollgate_http_responses_total{status=\"200\"} 1",
                        "tollgate_http_responses_total{status=\"401\"} 1",
                        "tollgate_store_check_duration_seconds_count 1",
                        "tollgate_store_info{backend=\"memory\",failure_policy=\"none\"}",
                        "tollgate_key_lookups_total{result=\"miss\"} 1",
                        "tollgate_deny_cache_hits_total 0",
                    ] {
                        #expect(metrics.text.contains(line), "\(line)")
                    }
                    // The API listener does not serve them.
                    let hidden = try await client.send(.GET, sidecar.base + "/metrics")
                    #expect(hidden.status == 401)
                }
            }
        }

        @Test func gracefulShutdownFinishesRequestsInFlight() async throws {
            try await withUpstream { upstream in
                let folder = try TestDirectory()
                defer { folder.remove() }
                _ = try folder.write("keys.yaml", keyFile(TestKey.all))
                let path = try folder.write("tollgate.yaml", configuration(upstream: upstream.url, upstreamOptions: "response_timeout: 10s"))
                let sidecar = try Sidecar(configurationFile: path, logger: quietLogger)
                let run = Task { try await sidecar.run() }
                let ports = try await sidecar.listeningPorts()
                try await withHTTPClient { client in
                    async let slow = client.send(.GET, "http://127.0.0.1:\(ports.proxy)/slow", key: .roomy)
                    try await Task.sleep(for: .milliseconds(500))
                    await sidecar.shutdown()
                    let answer = try await slow
                    #expect(answer.status == 200)
                    #expect(answer.text == "late")
                    try await run.value
                    // Stopped: nothing listens any more.
                    await #expect(throws: (any Error).self) {
                        _ = try await client.send(.GET, "http://127.0.0.1:\(ports.proxy)/slow", key: .roomy)
                    }
                }
            }
        }

        @Test func invalidConfigurationRefusesToStart() throws {
            let folder = try TestDirectory()
            defer { folder.remove() }
            _ = try folder.write("keys.yaml", keyFile(TestKey.all))
            let bad = try folder.write("bad.yaml", configuration(store: "store: { backend: redis, url: \"redis://127.0.0.1:notaport\" }"))
            #expect {
                _ = try Sidecar(configurationFile: bad, logger: quietLogger)
            } throws: { error in
                let error = error as? ConfigurationError
                return error?.path == "store.url" && error?.message.contains("port") == true
            }
            _ = try folder.write("keys.yaml", "keys:\n  - sha256: abc\n    org: o\n    plan: basic\n")
            let good = try folder.write("good.yaml", configuration())
            #expect {
                _ = try Sidecar(configurationFile: good, logger: quietLogger)
            } throws: { error in
                let error = error as? ConfigurationError
                return error?.path == "keys[0].sha256" && error?.line == 2 && error?.message.contains("64 hex digits") == true
            }
        }

        /// `upstream.ca_file`: only for an https upstream, and it must hold PEM certificates.
        @Test func badCertificateFilesRefuseToStart() throws {
            let folder = try TestDirectory()
            defer { folder.remove() }
            _ = try folder.write("keys.yaml", keyFile(TestKey.all))
            _ = try folder.write("not-pem.pem", "hello\n")
            let cases: [(options: String, upstream: String, expected: String)] = [
                ("ca_file: missing.pem", "https://127.0.0.1:1", "missing.pem"),
                ("ca_file: not-pem.pem", "https://127.0.0.1:1", "not-pem.pem"),
                ("ca_file: not-pem.pem", "http://127.0.0.1:1", "https"),
            ]
            for (options, upstream, expected) in cases {
                let file = try folder.write("tollgate.yaml", configuration(upstream: upstream, upstreamOptions: options))
                #expect {
                    _ = try Sidecar(configurationFile: file, logger: quietLogger)
                } throws: { error in
                    let error = error as? ConfigurationError
                    return error?.path == "upstream.ca_file" && error?.message.contains(expected) == true
                        && error?.file == file
                }
            }
        }
    }
}
