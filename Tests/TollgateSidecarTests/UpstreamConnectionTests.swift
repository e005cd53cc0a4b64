import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import Testing
import TollgateSidecar

/// A plain NIO HTTP/1.1 upstream that numbers its connections and the requests on each, for the tests
/// of connection reuse:
///
/// - `/keep`: 200, connection kept open.
/// - `/close`: 200 with `Connection: close`, then the connection is closed.
/// - `/flaky`: 200 when it is the first request on its connection; a later one on the same connection
///   is not answered: the connection closes, as an upstream closing an idle connection just as a
///   request arrives would.
/// - `/old`: an HTTP/1.0 answer without `Connection: keep-alive` (so the connection is not to be
///   reused); a later request on the same connection gets no answer at all.
final class CountingUpstream: Sendable {
    struct Seen: Sendable, Equatable {
        var connection: Int
        var method: String
        var path: String
        /// `Content-Length` value, `chunked`, or `none`.
        var framing: String
    }

    let channel: any Channel
    let seen = Mutex<[Seen]>([])
    private let connections = Atomic<Int>(0)

    var port: Int { channel.localAddress!.port! }
    let scheme: String
    var url: String { "\(scheme)://127.0.0.1:\(port)" }
    var connectionCount: Int { Set(seen.withLock { $0.map(\.connection) }).count }

    private init(channel: any Channel, scheme: String) {
        self.channel = channel
        self.scheme = scheme
    }

    /// Starts it on a free loopback port; with `tls`, it speaks HTTPS.
    static func start(tls: NIOSSLContext? = nil) async throws -> CountingUpstream {
        let box = Mutex<CountingUpstream?>(nil)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let upstream = box.withLock({ $0 }) else { throw ChannelError.ioOnClosedChannel }
                    let number = upstream.connections.wrappingAdd(1, ordering: .relaxed).newValue
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(upstream: upstream, connection: number))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let upstream = CountingUpstream(channel: channel, scheme: tls == nil ? "http" : "https")
        box.withLock { $0 = upstream }
        return upstream
    }

    func stop() async {
        try? await channel.close()
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let upstream: CountingUpstream
        let connection: Int
        var requests = 0
        var path = ""

        init(upstream: CountingUpstream, connection: Int) {
            self.upstream = upstream
            self.connection = connection
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                requests += 1
                path = head.uri
                let framing = head.headers.first(name: "content-length")
                    ?? (head.headers.first(name: "transfer-encoding") == nil ? "none" : "chunked")
                upstream.seen.withLock {
                    $0.append(Seen(connection: connection, method: head.method.rawValue, path: head.uri, framing: framing))
                }
            case .body:
                break
            case .end:
                if path == "/flaky", requests > 1 {
                    context.close(promise: nil)
                    return
                }
                if path == "/old", requests > 1 { return }
                var headers = HTTPHeaders([("Content-Length", "2"), ("Content-Type", "text/plain")])
                if path == "/close" { headers.add(name: "Connection", value: "close") }
                let version: HTTPVersion = path == "/old" ? .http1_0 : .http1_1
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: .ok, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
                if path == "/close" {
                    let channel = context.channel
                    context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
                } else {
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                }
            }
        }
    }
}

extension EndToEnd {
    /// Each client connection's keep-alive connection to the upstream: reused, given up when the
    /// upstream says so, and a request on a connection the upstream closed is sent again only when that
    /// is safe.
    @Suite struct UpstreamConnectionTests {
        static func withCountingUpstream(_ body: (CountingUpstream) async throws -> Void) async throws {
            try await using(try await CountingUpstream.start(), stop: { await $0.stop() }, body)
        }

        @Test func connectionsAreReused() async throws {
            try await Self.withCountingUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    try await withHTTPClient { client in
                        for _ in 0..<20 {
                            let answer = try await client.send(.GET, sidecar.base + "/keep", key: .roomy)
                            #expect(answer.status == 200)
                        }
                    }
                }
                #expect(upstream.seen.withLock { $0.count } == 20)
                // One client connection, on one event loop: one upstream connection carries them all.
                #expect(upstream.connectionCount == 1)
            }
        }

        @Test func connectionCloseIsHonoured() async throws {
            try await Self.withCountingUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    try await withHTTPClient { client in
                        for _ in 0..<3 {
                            let answer = try await client.send(.GET, sidecar.base + "/close", key: .roomy)
                            #expect(answer.status == 200)
                            #expect(answer.header("Connection") == nil)  // hop-by-hop: not relayed
                        }
                    }
                }
                #expect(upstream.connectionCount == 3)
            }
        }

        @Test func framingIsTheForwardersOwn() async throws {
            try await Self.withCountingUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url, server: "idle_timeout: 5s")) { sidecar in
                    let key = TestKey.roomy.authorizationLine
                    // A TRACE has no body: one that comes with a body is refused and never forwarded.
                    let trace = try await rawExchange(
                        port: sidecar.proxyPort,
                        Array("TRACE /keep HTTP/1.1\r\nHost: x\r\n\(key)Content-Length: 30\r\n\r\nGET /keep HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
                    #expect(trace.status == 400)
                    #expect(upstream.seen.withLock { $0.isEmpty })

                    try await withHTTPClient { client in
                        let empty = try await client.send(.POST, sidecar.base + "/keep", key: .roomy)
                        let get = try await client.send(.GET, sidecar.base + "/keep", key: .roomy)
                        let small = try await client.send(.POST, sidecar.base + "/keep", key: .roomy, body: ByteBuffer(string: "hello"))
                        #expect([empty.status, get.status, small.status] == [200, 200, 200])
                    }
                    #expect(upstream.seen.withLock { $0.map(\.framing) } == ["0", "none", "5"])
                }
            }
        }

        /// Requests sent back to back on one connection, without a body, with a small one and with
        /// chunked ones: forwarded and answered in order, and the last one's `Connection: close` ends the
        /// connection.
        @Test func pipelinedRequestsAreAnsweredInOrderWhateverTheirFraming() async throws {
            try await Self.withCountingUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    let key = TestKey.roomy.authorizationLine
                    let chunked = "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
                    let requests =
                        "POST /keep?n=1 HTTP/1.1\r\nHost: x\r\n\(key)\(chunked)"
                        + "GET /keep?n=2 HTTP/1.1\r\nHost: x\r\n\(key)\r\n"
                        + "POST /keep?n=3 HTTP/1.1\r\nHost: x\r\n\(key)Content-Length: 2\r\n\r\nok"
                        + "POST /keep?n=4 HTTP/1.1\r\nHost: x\r\n\(key)\(chunked)"
                        + "GET /keep?n=5 HTTP/1.1\r\nHost: x\r\n\(key)Connection: close\r\n\r\n"
                    let answer = try await rawExchange(port: sidecar.proxyPort, Array(requests.utf8))
                    #expect(answer.closedByServer)
                    #expect(answer.text.components(separatedBy: "HTTP/1.1 200 OK").count - 1 == 5)
                    #expect(answer.text.components(separatedBy: "RateLimit-Policy:").count - 1 == 5)
                    #expect(upstream.seen.withLock { $0.map(\.path) } == (1...5).map { "/keep?n=\($0)" })
                    #expect(upstream.seen.withLock { $0.map(\.framing) } == ["chunked", "none", "2", "chunked", "none"])
                }
            }
        }

        /// An https upstream whose certificate a private authority signed: trusted through
        /// `upstream.ca_file` by the byte-level data path, for a body of known length and a chunked one.
        /// Without it the system's roots do not know that authority: 502, and nothing reaches the
        /// upstream.
        @Test func httpsUpstreamIsVerifiedAgainstTheConfiguredAuthority() async throws {
            let tls = try NIOSSLContext(
                configuration: .makeServerConfiguration(
                    certificateChain: [.certificate(try NIOSSLCertificate(bytes: Array(TestCertificates.server.utf8), format: .pem))],
                    privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(TestCertificates.serverKey.utf8), format: .pem))))
            try await using(try await CountingUpstream.start(tls: tls), stop: { await $0.stop() }) { upstream in
                #expect(upstream.url.hasPrefix("https://127.0.0.1:"))
                let folder = try TestDirectory()
                defer { folder.remove() }
                _ = try folder.write("ca.pem", TestCertificates.authority)
                let trusting = configuration(upstream: upstream.url, upstreamOptions: "response_timeout: 1s, ca_file: ca.pem")
                try await withSidecar(trusting, directory: folder) { sidecar in
                    let key = TestKey.roomy.authorizationLine
                    let requests =
                        "POST /keep?n=1 HTTP/1.1\r\nHost: x\r\n\(key)Content-Length: 2\r\n\r\nok"
                        + "POST /keep?n=2 HTTP/1.1\r\nHost: x\r\n\(key)Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        + "2\r\nhi\r\n0\r\n\r\n"
                    let answer = try await rawExchange(port: sidecar.proxyPort, Array(requests.utf8))
                    #expect(answer.text.components(separatedBy: "HTTP/1.1 200 OK").count - 1 == 2, "\(answer.text)")
                }
                #expect(upstream.seen.withLock { $0.map(\.framing) } == ["2", "chunked"])

                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    try await withHTTPClient { client in
                        let answer = try await client.send(.GET, sidecar.base + "/keep", key: .roomy)
                        #expect(answer.status == 502)
                        #expect(answer.header("Content-Type") == "application/problem+json")
                    }
                }
                #expect(upstream.seen.withLock { $0.count } == 2)
            }
        }

        /// A keep-alive connection that goes quiet after its answers is closed after `server.idle_timeout`.
        @Test func idleConnectionsAreClosed() async throws {
            try await Self.withCountingUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url, server: "idle_timeout: 1s")) { sidecar in
                    let key = TestKey.roomy.authorizationLine
                    let started = ContinuousClock.now
                    let answer = try await rawExchange(
                        port: sidecar.proxyPort, Array("GET /keep HTTP/1.1\r\nHost: x\r\n\(key)\r\n".utf8), timeout: .seconds(10))
                    let elapsed = ContinuousClock.now - started
                    #expect(answer.status == 200)
                    #expect(answer.closedByServer)
                    #expect(elapsed >= .milliseconds(900) && elapsed < .seconds(5), "closed after \(elapsed)")
                }
            }
        }

        @Test func http10AnswersEndTheirConnection() async throws {
            try await Self.withCountingUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    try await withHTTPClient { client in
                        let first = try await client.send(.GET, sidecar.base + "/old", key: .roomy)
                        let second = try await client.send(.GET, sidecar.base + "/old", key: .roomy)
                        #expect([first.status, second.status] == [200, 200])
                    }
                }
                #expect(upstream.connectionCount == 2)
            }
        }

        @Test func onlyIdempotentRequestsAreSentAgain() async throws {
            try await Self.withCountingUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    try await withHTTPClient { client in
                        // GET: the second request finds its connection closed unanswered and goes again
                        // on a new one.
                        #expect(try await client.send(.GET, sidecar.base + "/flaky", key: .roomy).status == 200)
                        #expect(try await client.send(.GET, sidecar.base + "/flaky", key: .roomy).status == 200)
                        #expect(upstream.seen.withLock { $0.map(\.method) } == ["GET", "GET", "GET"])
                        #expect(upstream.connectionCount == 2)

                        // POST, on that second connection: the upstream may have acted on it, so it is not
                        // sent twice and the client gets 502; the next one goes on a new connection.
                        let refused = try await client.send(.POST, sidecar.base + "/flaky", key: .roomy)
                        #expect(refused.status == 502)
                        #expect(try await client.send(.POST, sidecar.base + "/flaky", key: .roomy).status == 200)
                        #expect(upstream.seen.withLock { $0.filter { $0.method == "POST" }.count } == 2)
                        #expect(upstream.connectionCount == 3)
                    }
                }
            }
        }
    }
}
