import NIOCore
import NIOEmbedded
import NIOPosix
import Testing
import TollgateTestSupport

@testable import TollgateSidecar

/// A `ByteListenerHandler` listening on a free port in front of `upstream` (nil: a port where nothing
/// listens), with the limiter, keys and settings of a sidecar made from the tests' configuration, and
/// `tracing` (nil: off).
func withByteListener(
    upstream: String?, upstreamOptions: String = "response_timeout: 1s", tracing: ListenerTracing? = nil,
    _ body: (_ port: Int) async throws -> Void
) async throws {
    let folder = try TestDirectory()
    defer { folder.remove() }
    _ = try folder.write("keys.yaml", keyFile(TestKey.all))
    let sidecar = try Sidecar(
        configurationFile: try folder.write("tollgate.yaml", configuration(upstream: upstream, upstreamOptions: upstreamOptions)),
        logger: quietLogger)
    let shared = try byteListenerShared(sidecar, upstream: upstream ?? "http://127.0.0.1:1", tracing: tracing)
    let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .childChannelOption(.allowRemoteHalfClosure, value: true)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(ByteListenerHandler(shared: shared, idleTimeout: .seconds(30)))
            }
        }
        .bind(host: "127.0.0.1", port: 0).get()
    do {
        try await body(server.localAddress!.port!)
    } catch {
        try? await server.close()
        throw error
    }
    try await server.close()
}

/// What a test's byte listener shares: in front of `upstream`, or of the built-in stand-in when `standIn`.
func byteListenerShared(
    _ sidecar: Sidecar, upstream: String, standIn: Bool = false, tracing: ListenerTracing? = nil
) throws -> ByteListenerShared {
    guard let target = UpstreamTarget(url: upstream) else { throw TestSetupError(description: "not an upstream URL: \(upstream)") }
    return ByteListenerShared(
        limiter: sidecar.limiter, live: sidecar.live, target: standIn ? StandInUpstream.target : target, tls: nil,
        accessLog: sidecar.accessLog, logger: quietLogger, maxHeadSize: 8192, connectTimeout: .seconds(5),
        standIn: standIn ? StandInUpstream() : nil, tracing: tracing)
}

extension EndToEnd {
    /// The byte-level data path (`ByteListenerHandler`) against a real HTTP upstream: forwarding with
    /// the RateLimit fields, pipelining in order, refusals that never reach the upstream, bodies
    /// relayed in either framing, an upstream that is down.
    @Suite struct ByteListenerTests {
        static let roomy = TestKey.roomy.authorizationLine
        static let sender = TestKey.sender.authorizationLine

        static func count(_ status: String, in text: String) -> Int {
            text.components(separatedBy: "HTTP/1.1 \(status)").count - 1
        }

        /// Sends `request` on one connection through a byte listener in front of a fresh upstream: the
        /// answer, and what reached the upstream.
        static func exchange(_ request: String) async throws -> (answer: RawAnswer, received: [Received]) {
            var result: (RawAnswer, [Received])?
            try await withUpstream { upstream in
                try await withByteListener(upstream: upstream.url) { port in
                    let answer = try await rawExchange(port: port, Array(request.utf8))
                    result = (answer, upstream.received)
                }
            }
            return try #require(result)
        }

        @Test func forwardsAnAdmittedRequestAndAddsTheRateLimitFields() async throws {
            let (answer, received) = try await Self.exchange(
                "POST /api/v1/messages/send HTTP/1.1\r\nHost: api.example\r\n\(Self.roomy)Content-Type: application/json\r\n"
                    + "Connection: close\r\nContent-Length: 11\r\n\r\n{\"to\":\"+1\"}")
            #expect(answer.status == 200, "\(answer.text)")
            #expect(answer.text.contains("RateLimit: \"burst\""))
            #expect(answer.text.contains("{\"queued\":true}"))
            #expect(answer.text.contains("Connection: close"))
            // The upstream's hop-by-hop fields stay between it and the proxy.
            #expect(!answer.text.contains("X-Up-Hop") && !answer.text.contains("Keep-Alive"))
            #expect(answer.text.contains("X-Up-Plain: 1"))
            #expect(answer.closedByServer)
            #expect(received.count == 1)
            let first = try #require(received.first)
            #expect(first.path == "/api/v1/messages/send")
            #expect(first.authority == "api.example")
            #expect(first.headers[values: .init("X-Forwarded-For")!] == ["127.0.0.1"])
            #expect(first.headers[.init("X-Tollgate-Organization")!] == "org_1")
        }

        /// An absolute-form target goes upstream as a path, its authority as the Host; an HTTP/1.0
        /// client's request goes as HTTP/1.0, so its answer is not chunked.
        @Test func absoluteFormAndHTTP10() async throws {
            let (absolute, received) = try await Self.exchange(
                "GET http://api.example/api/v1/orgs/org_1/messages/abs HTTP/1.1\r\nHost: other\r\n\(Self.roomy)Connection: close\r\n\r\n")
            #expect(absolute.status == 200, "\(absolute.text)")
            #expect(absolute.text.hasSuffix("{\"id\":\"abs\"}"))
            #expect(received.first?.path == "/api/v1/orgs/org_1/messages/abs")
            #expect(received.first?.authority == "api.example")
            let (old, _) = try await Self.exchange(
                "POST /echo HTTP/1.0\r\n\(Self.roomy)Content-Length: 5\r\n\r\nhello")
            #expect(old.status == 200, "\(old.text)")
            #expect(!old.text.contains("chunked"))
            #expect(old.text.hasSuffix("\r\n\r\nhello"))
            #expect(old.closedByServer)
        }

        @Test(arguments: [
            ("/a?b", HTTP1Method.get, "/a?b", String?.none), ("http://h:8/p/q?x", .get, "/p/q?x", "h:8"), ("https://h", .get, "/", "h"),
            ("http://h?x=1", .get, "/?x=1", "h"), ("*", .options, "*", nil), ("h:443", .connect, "h:443", nil),
        ])
        func targetsAreSplitIntoPathAndAuthority(target: String, method: HTTP1Method, path: String, authority: String?) {
            let split = ByteListenerHandler.originForm(target, method: method)
            #expect(split.path == path)
            #expect(split.authority == authority)
        }

        @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
            var requests = ""
            for id in 1...3 {
                requests += "GET /api/v1/orgs/org_1/messages/m\(id) HTTP/1.1\r\nHost: x\r\n\(Self.roomy)"
                requests += id == 3 ? "Connection: close\r\n\r\n" : "\r\n"
            }
            let (answer, received) = try await Self.exchange(requests)
            #expect(Self.count("200", in: answer.text) == 3, "\(answer.text)")
            let first = try #require(answer.text.range(of: "\"m1\""))
            let second = try #require(answer.text.range(of: "\"m2\""))
            let third = try #require(answer.text.range(of: "\"m3\""))
            #expect(first.upperBound <= second.lowerBound && second.upperBound <= third.lowerBound)
            #expect(received.count == 3)
        }

        /// Many requests on one connection, sent at once: every one answered, the buffers reused.
        @Test func aLongPipelineIsAnsweredWhole() async throws {
            let one = "GET /api/v1/orgs/org_1/messages/x HTTP/1.1\r\nHost: x\r\n\(Self.roomy)X-Pad: \(String(repeating: "p", count: 200))\r\n\r\n"
            let requests = String(repeating: one, count: 199) + one.replacingOccurrences(of: "Host: x\r\n", with: "Host: x\r\nConnection: close\r\n")
            let (answer, received) = try await Self.exchange(requests)
            #expect(Self.count("200", in: answer.text) == 200)
            #expect(received.count == 200)
            #expect(answer.closedByServer)
        }

        /// The `basic` plan's burst of 3: the fourth request is refused with a problem+json 429, its
        /// body drained, and it never reaches the upstream; the connection stays for the next request.
        @Test func aRefusedRequestIsAnsweredHereAndTheConnectionGoesOn() async throws {
            var requests = ""
            for _ in 1...4 {
                requests += "POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\n\(Self.sender)Content-Length: 2\r\n\r\n{}"
            }
            requests += "GET /api/v1/orgs/org_1/messages/last HTTP/1.1\r\nHost: x\r\n\(Self.roomy)Connection: close\r\n\r\n"
            let (answer, received) = try await Self.exchange(requests)
            #expect(Self.count("200", in: answer.text) == 4, "\(answer.text)")
            #expect(Self.count("429", in: answer.text) == 1)
            #expect(answer.text.contains("application/problem+json"))
            #expect(answer.text.contains("Retry-After: "))
            #expect(!answer.text.contains(TestKey.sender.text))
            #expect(answer.text.hasSuffix("{\"id\":\"last\"}"))
            #expect(received.count == 4)
        }

        @Test(arguments: [
            ("POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\n\(roomy)Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            ("POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\n\(roomy)Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
            ("POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\n\(roomy)Transfer-Encoding: gzip\r\n\r\n", 400),
            ("GET /api/v1/orgs/org_1/messages/1 HTTP/1.1\r\n\(roomy)\r\n", 400),
            ("GET /api/v1/orgs/org_1/messages/1 HTTP/1.1\r\nHost: x\r\nX: " + String(repeating: "a", count: 9000) + "\r\n\r\n", 431),
        ])
        func badFramingIsRefusedAndNeverForwarded(request: String, status: Int) async throws {
            let (answer, received) = try await Self.exchange(request)
            #expect(answer.status == status, "\(answer.text)")
            #expect(answer.text.contains("application/problem+json"))
            #expect(answer.text.contains("Connection: close"))
            #expect(answer.closedByServer)
            #expect(received.isEmpty)
        }

        @Test func chunkedBodiesAreRelayedBothWays() async throws {
            let (answer, _) = try await Self.exchange(
                "POST /echo HTTP/1.1\r\nHost: x\r\n\(Self.roomy)Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            #expect(answer.status == 200, "\(answer.text)")
            // The echo answers chunked; the chunks may be cut differently, the bytes are the same.
            let body = answer.text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            #expect(Self.dechunk(body) == "hello world", "\(answer.text)")
        }

        /// The upstream has `upstream.response_timeout` (1 s here) to begin its answer.
        @Test func anUpstreamTooSlowToAnswerIsA504() async throws {
            let started = ContinuousClock.now
            let (answer, received) = try await Self.exchange(
                "GET /slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\(Self.roomy)Connection: close\r\n\r\n")
            #expect(answer.status == 504, "\(answer.text)")
            #expect(answer.text.contains("application/problem+json"))
            #expect(ContinuousClock.now - started < .seconds(3))
            #expect(received.count == 1)
        }

        /// An answer that stops half way for longer than `upstream.read_timeout` is cut off: the client
        /// has its beginning and learns of the rest from the connection closing.
        @Test func anAnswerThatStallsIsCutOff() async throws {
            try await withUpstream { upstream in
                try await withByteListener(upstream: upstream.url, upstreamOptions: "response_timeout: 1s, read_timeout: 500ms") { port in
                    let started = ContinuousClock.now
                    let answer = try await rawExchange(
                        port: port, Array("GET /stall HTTP/1.1\r\nHost: x\r\n\(Self.roomy)\r\n".utf8), timeout: .seconds(4))
                    #expect(answer.status == 200, "\(answer.text)")
                    #expect(answer.text.contains("part") && !answer.text.contains("rest"))
                    #expect(answer.closedByServer)
                    #expect(ContinuousClock.now - started < .seconds(4))
                }
            }
        }

        /// A body larger than the sockets' buffers goes through whole, both ways: the relay waits for
        /// each side to take what it was sent.
        @Test func aLargeBodyIsRelayedWhole() async throws {
            let size = 8 << 20
            let request =
                "POST /echo HTTP/1.1\r\nHost: x\r\n\(Self.roomy)Content-Length: \(size)\r\nConnection: close\r\n\r\n"
                + String(repeating: "0123456789abcdef", count: size / 16)
            let (answer, _) = try await Self.exchange(request)
            #expect(answer.status == 200)
            let body = answer.text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            let data = try #require(Self.dechunk(body))
            #expect(data.utf8.count == size)
            #expect(data.hasPrefix("0123456789abcdef0123") && data.hasSuffix("abcdef"))
        }

        /// The listener as a service: it reports its port, serves, and returns once cancelled (a graceful
        /// shutdown: connections finish their request first).
        @Test func theServiceServesAndStops() async throws {
            try await withUpstream { upstream in
                let folder = try TestDirectory()
                defer { folder.remove() }
                _ = try folder.write("keys.yaml", keyFile(TestKey.all))
                let sidecar = try Sidecar(
                    configurationFile: try folder.write("tollgate.yaml", configuration(upstream: upstream.url)), logger: quietLogger)
                let bound = AsyncStream.makeStream(of: Int?.self)
                let service = ByteListenerService(
                    host: "127.0.0.1", port: 0, shared: try byteListenerShared(sidecar, upstream: upstream.url), idleTimeout: .seconds(5),
                    onRunning: { bound.continuation.yield($0) })
                let task = Task { try await service.run() }
                var ports = bound.stream.makeAsyncIterator()
                let port = try #require(await ports.next() ?? nil)
                let answer = try await rawExchange(
                    port: port, Array("GET /api/v1/orgs/org_1/messages/s HTTP/1.1\r\nHost: x\r\n\(Self.roomy)Connection: close\r\n\r\n".utf8))
                #expect(answer.status == 200)
                task.cancel()
                try await task.value
                #expect(upstream.count == 1)
            }
        }

        /// The data of a chunked body (bytes, not characters: CRLF is one `Character`).
        static func dechunk(_ text: String) -> String? {
            var rest = Array(text.utf8)[...]
            var out: [UInt8] = []
            while let cr = rest.firstIndex(of: 13), cr + 1 < rest.endIndex, rest[cr + 1] == 10 {
                guard let size = Int(String(decoding: rest[..<cr], as: UTF8.self), radix: 16) else { return nil }
                rest = rest[(cr + 2)...]
                if size == 0 { return String(decoding: out, as: UTF8.self) }
                guard rest.count >= size + 2 else { return nil }
                out += rest.prefix(size)
                rest = rest.dropFirst(size + 2)
            }
            return nil
        }

        @Test func anUpstreamThatIsDownIsA502() async throws {
            try await withByteListener(upstream: nil) { port in
                let request = "GET /api/v1/orgs/org_1/messages/1 HTTP/1.1\r\nHost: x\r\n\(Self.roomy)Connection: close\r\n\r\n"
                let answer = try await rawExchange(port: port, Array(request.utf8))
                #expect(answer.status == 502, "\(answer.text)")
                #expect(answer.text.contains("application/problem+json"))
                // Admitted and counted before the upstream failed: the fields say what it cost.
                #expect(answer.text.contains("RateLimit: "))
            }
        }
    }
}

/// The byte-level handler on a `NIOAsyncTestingChannel`, for what it answers without an upstream.
@Suite struct ByteListenerChannelTests {
    static func channel() async throws -> (NIOAsyncTestingChannel, TestDirectory) {
        let folder = try TestDirectory()
        _ = try folder.write("keys.yaml", keyFile(TestKey.all))
        let sidecar = try Sidecar(
            configurationFile: try folder.write("tollgate.yaml", configuration(upstream: "http://127.0.0.1:1")), logger: quietLogger)
        let shared = try byteListenerShared(sidecar, upstream: "http://127.0.0.1:1")
        let channel = NIOAsyncTestingChannel()
        try await channel.testingEventLoop.executeInContext {
            try channel.pipeline.syncOperations.addHandler(ByteListenerHandler(shared: shared, idleTimeout: nil))
        }
        try await channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 8080))
        return (channel, folder)
    }

    static func answer(of channel: NIOAsyncTestingChannel) async throws -> String {
        var text = ""
        while let buffer = try await channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        return text
    }

    @Test func aHeadSplitAcrossReadsWithWhitespaceBeforeAColonIsA400() async throws {
        let (channel, folder) = try await Self.channel()
        defer { folder.remove() }
        try await channel.writeInbound(ByteBuffer(string: "GET /api/v1/orgs/org_1/messages/1 HTTP/1.1\r\nHo"))
        #expect(try await Self.answer(of: channel).isEmpty)
        try await channel.writeInbound(ByteBuffer(string: "st : x\r\n\r\n"))
        let text = try await Self.answer(of: channel)
        #expect(text.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(text)")
        #expect(text.contains("Content-Type: application/problem+json"))
        #expect(text.contains("whitespace between its name and the colon"))
        #expect(text.contains("Connection: close"))
        _ = try? await channel.finish()
    }

    /// The bulk route counts its cost from the body (one per recipient): a body that comes after its
    /// head, with a length or chunked, is waited for and the decision uses it (5 recipients: more than
    /// the burst of 3 can ever admit, refused without a Retry-After).
    @Test(arguments: [false, true])
    func aBodyThatComesLaterIsWaitedForBeforeTheDecision(chunked: Bool) async throws {
        let (channel, folder) = try await Self.channel()
        defer { folder.remove() }
        let body = "{\"recipients\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}"
        let framing = chunked ? "Transfer-Encoding: chunked" : "Content-Length: \(body.utf8.count)"
        try await channel.writeInbound(
            ByteBuffer(string: "POST /api/v1/messages/bulk HTTP/1.1\r\nHost: x\r\n\(TestKey.sender.authorizationLine)\(framing)\r\n\r\n"))
        #expect(try await Self.answer(of: channel).isEmpty)
        if chunked {
            let half = body.utf8.count / 2
            try await channel.writeInbound(ByteBuffer(string: String(half, radix: 16) + "\r\n" + body.prefix(half) + "\r\n"))
            #expect(try await Self.answer(of: channel).isEmpty)
            let rest = body.dropFirst(half)
            try await channel.writeInbound(ByteBuffer(string: String(rest.utf8.count, radix: 16) + "\r\n" + rest + "\r\n0\r\n\r\n"))
        } else {
            try await channel.writeInbound(ByteBuffer(string: body))
        }
        // The key's first lookup goes through the registry, in a task: the answer comes when it is done.
        let first = try await channel.waitForOutboundWrite(as: ByteBuffer.self)
        let text = String(buffer: first) + (try await Self.answer(of: channel))
        #expect(text.hasPrefix("HTTP/1.1 429 "), "\(text)")
        #expect(!text.contains("Retry-After"))
        _ = try? await channel.finish()
    }

    @Test func aRequestWithoutAKeyIsA401WithoutForwarding() async throws {
        let (channel, folder) = try await Self.channel()
        defer { folder.remove() }
        try await channel.writeInbound(ByteBuffer(string: "POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"))
        let text = try await Self.answer(of: channel)
        #expect(text.hasPrefix("HTTP/1.1 401 "), "\(text)")
        #expect(text.contains("application/problem+json"))
        // Answered, body drained: the connection stays for the next request.
        #expect(!text.contains("Connection: close"))
        try await channel.writeInbound(ByteBuffer(string: "GET /api/v1/orgs/org_1/messages/1 HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(try await Self.answer(of: channel).hasPrefix("HTTP/1.1 401 "))
        _ = try? await channel.finish()
    }
}
