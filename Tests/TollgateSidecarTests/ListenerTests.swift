import Testing
import TollgateSidecar
import TollgateTestSupport

extension EndToEnd {
    /// The listener's data path at its edges: half-closed clients, bodies of either framing behind one
    /// another, errors in pipelined requests, graceful shutdown with requests waiting, upstream failures.
    @Suite struct ListenerTests {
        static let key = TestKey.roomy.authorizationLine

        static func count(_ status: String, in text: String) -> Int {
            text.components(separatedBy: "HTTP/1.1 \(status)").count - 1
        }

        /// A client that sends its request and closes its sending side still gets its answer, whatever its
        /// body's framing.
        @Test func halfClosedClientsAreAnswered() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    let fast = try await rawExchange(
                        port: sidecar.proxyPort, Array("GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\(Self.key)\r\n".utf8), halfClose: true)
                    #expect(fast.status == 200)
                    let both = try await rawExchange(
                        port: sidecar.proxyPort,
                        Array(
                            ("POST /echo HTTP/1.1\r\nHost: x\r\n\(Self.key)Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
                                + "GET /slow?ms=100 HTTP/1.1\r\nHost: x\r\n\(Self.key)\r\n").utf8),
                        halfClose: true)
                    #expect(Self.count("200", in: both.text) == 2, "\(both.text)")
                }
            }
        }

        /// A request with a chunked body sent behind one without, on the connection's first bytes: it is
        /// handled once that answer is out, and answered at once (not left until the next read).
        @Test func chunkedRequestBehindAnotherIsAnsweredAtOnce() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    let requests =
                        "GET /slow?ms=100 HTTP/1.1\r\nHost: x\r\n\(Self.key)\r\n"
                        + "POST /echo HTTP/1.1\r\nHost: x\r\n\(Self.key)Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        + "2\r\nhi\r\n0\r\n\r\n"
                    let started = ContinuousClock.now
                    let answer = try await rawExchange(port: sidecar.proxyPort, Array(requests.utf8), timeout: .seconds(10))
                    #expect(Self.count("200", in: answer.text) == 2, "\(answer.text)")
                    #expect(answer.closedByServer)
                    #expect(ContinuousClock.now - started < .seconds(5))
                }
            }
        }

        /// A pipelined request whose body breaks waits its turn: the request before it is answered first.
        @Test func brokenPipelinedRequestIsAnsweredInTurn() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    let requests =
                        "GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\(Self.key)\r\n"
                        + "POST /echo HTTP/1.1\r\nHost: x\r\n\(Self.key)Transfer-Encoding: chunked\r\n\r\nzz\r\n"
                    let answer = try await rawExchange(port: sidecar.proxyPort, Array(requests.utf8))
                    // The first answer is the first request's (`/slow` answers "late"); for the broken one
                    // the chain answers 400, or relays the echo's 200 and cuts it off, or just closes,
                    // depending on how far it got.
                    let first = answer.text.components(separatedBy: "HTTP/1.1 ").dropFirst().first ?? ""
                    #expect(first.hasPrefix("200") && first.hasSuffix("late"), "\(answer.text)")
                    #expect(answer.closedByServer)
                }
            }
        }

        /// Graceful shutdown answers the requests already received, the one in flight and one behind it.
        @Test func shutdownAnswersRequestsWaitingBehindOne() async throws {
            try await withUpstream { upstream in
                let folder = try TestDirectory()
                defer { folder.remove() }
                _ = try folder.write("keys.yaml", keyFile(TestKey.all))
                let path = try folder.write("tollgate.yaml", configuration(upstream: upstream.url))
                let sidecar = try Sidecar(configurationFile: path, logger: quietLogger)
                let run = Task { try await sidecar.run() }
                let ports = try await sidecar.listeningPorts()
                let requests =
                    "GET /slow?ms=800 HTTP/1.1\r\nHost: x\r\n\(Self.key)\r\n"
                    + "GET /slow?ms=10 HTTP/1.1\r\nHost: x\r\n\(Self.key)\r\n"
                async let answer = rawExchange(port: ports.proxy, Array(requests.utf8), timeout: .seconds(8))
                try await Task.sleep(for: .milliseconds(300))
                await sidecar.shutdown()
                let text = try await answer.text
                #expect(Self.count("200", in: text) == 2, "\(text)")
                try await run.value
            }
        }

        /// An admitted request whose upstream cannot be reached is answered 502 with the rate-limit fields
        /// (it was counted) and a `Date`, whatever its body's framing.
        @Test func upstreamFailuresCarryTheRateLimitFields() async throws {
            let port = try await freePort()
            try await withSidecar(configuration(upstream: "http://127.0.0.1:\(port)")) { sidecar in
                let fast = try await rawExchange(
                    port: sidecar.proxyPort, Array("GET /x HTTP/1.1\r\nHost: x\r\n\(Self.key)Connection: close\r\n\r\n".utf8))
                let chain = try await rawExchange(
                    port: sidecar.proxyPort,
                    Array(
                        "POST /x HTTP/1.1\r\nHost: x\r\n\(Self.key)Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
                            .utf8))
                for answer in [fast, chain] {
                    #expect(answer.status == 502, "\(answer.text)")
                    #expect(answer.text.contains("RateLimit-Policy:"), "\(answer.text)")
                    #expect(answer.text.contains("RateLimit:"), "\(answer.text)")
                    #expect(answer.text.lowercased().contains("\r\ndate:"), "\(answer.text)")
                }
            }
        }
    }
}
