import NIOCore
import NIOPosix
import Synchronization
import Testing
import TollgateSidecar

/// A WebSocket-style upstream on a free loopback port, over raw bytes: a request asking for
/// `Upgrade: websocket` is answered `101 Switching Protocols`, after which every byte it receives is
/// echoed back unchanged (the bytes `close!` make it close the connection); any other request is
/// answered `200 plain` on a connection that stays open.
final class EchoTunnelUpstream: Sendable {
    let channel: any Channel
    /// The request heads received, as text.
    let heads = Mutex<[String]>([])
    /// Connections that have ended.
    let closedConnections = Atomic<Int>(0)

    var url: String { "http://127.0.0.1:\(channel.localAddress!.port!)" }

    private init(channel: any Channel) {
        self.channel = channel
    }

    static func start() async throws -> EchoTunnelUpstream {
        let box = Mutex<EchoTunnelUpstream?>(nil)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let upstream = box.withLock({ $0 }) else { throw ChannelError.ioOnClosedChannel }
                    try channel.pipeline.syncOperations.addHandler(Handler(upstream: upstream))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let upstream = EchoTunnelUpstream(channel: channel)
        box.withLock { $0 = upstream }
        return upstream
    }

    func stop() async {
        try? await channel.close()
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let upstream: EchoTunnelUpstream
        var pending = ByteBuffer()
        var tunnel = false

        init(upstream: EchoTunnelUpstream) {
            self.upstream = upstream
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            pending.writeBuffer(&bytes)
            while !tunnel {
                let text = String(buffer: pending)
                guard let end = text.range(of: "\r\n\r\n") else { break }
                let head = String(text[..<end.upperBound])
                upstream.heads.withLock { $0.append(head) }
                pending.moveReaderIndex(forwardBy: head.utf8.count)
                if head.lowercased().contains("\r\nupgrade: websocket\r\n") {
                    tunnel = true
                    context.write(
                        wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")),
                        promise: nil)
                } else {
                    context.write(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")), promise: nil)
                }
            }
            if tunnel, pending.readableBytes > 0 {
                let echoed = pending
                pending.clear()
                if echoed.readableBytes >= 6, echoed.getString(at: echoed.writerIndex - 6, length: 6) == "close!" {
                    let channel = context.channel
                    context.writeAndFlush(wrapOutboundOut(echoed)).whenComplete { _ in channel.close(promise: nil) }
                    return
                }
                context.write(wrapOutboundOut(echoed), promise: nil)
            }
            context.flush()
        }

        func channelInactive(context: ChannelHandlerContext) {
            upstream.closedConnections.add(1, ordering: .relaxed)
            context.fireChannelInactive()
        }
    }
}

/// Reads from `inbound` until `done` says the bytes received so far are enough, or the connection ends.
func read(
    _ inbound: inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator, into received: inout ByteBuffer, until done: (ByteBuffer) -> Bool
) async throws -> Bool {
    while !done(received) {
        guard let buffer = try await inbound.next() else { return false }
        received.writeImmutableBuffer(buffer)
    }
    return true
}

extension EndToEnd {
    /// `Upgrade` (WebSocket) through the real sidecar: tunnelled both ways after the check and the
    /// upstream's 101, refused before the upstream when the limit is reached, and a normal answer to an
    /// upgrade request relayed as one.
    @Suite struct TunnelTests {
        static let upgrade = "GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"

        static func withEchoUpstream(_ body: (EchoTunnelUpstream) async throws -> Void) async throws {
            try await using(try await EchoTunnelUpstream.start(), stop: { await $0.stop() }, body)
        }

        /// A raw client connection through a sidecar in front of a fresh echo upstream: `body` has its
        /// bytes in and out, in its own order; `after` runs once the client's connection is closed.
        static func withTunnelClient(
            _ body: (NIOAsyncChannelInboundStream<ByteBuffer>, NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws -> Void,
            after: (EchoTunnelUpstream) async throws -> Void
        ) async throws {
            try await withEchoUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                        .connect(host: "127.0.0.1", port: sidecar.proxyPort) { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                            }
                        }
                    try await client.executeThenClose { inbound, outbound in try await body(inbound, outbound) }
                    try await after(upstream)
                }
            }
        }

        /// After the 101, bytes go both ways unchanged — the first ones sent right behind the head, a
        /// small message, then 4 MiB that cannot fit in the sockets' buffers (relayed with back-pressure)
        /// — until the upstream closes, which closes the client's connection.
        @Test(.timeLimit(.minutes(2))) func anAcceptedUpgradeIsTunnelledBothWays() async throws {
            try await Self.withTunnelClient { inbound, outbound in
                var iterator = inbound.makeAsyncIterator()
                var received = ByteBuffer()
                try await outbound.write(ByteBuffer(string: Self.upgrade + TestKey.roomy.authorizationLine + "\r\nearly"))
                #expect(try await read(&iterator, into: &received) { String(buffer: $0).hasSuffix("early") })
                let text = String(buffer: received)
                #expect(text.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"), "\(text)")
                #expect(text.contains("Upgrade: websocket\r\n"), "\(text)")
                #expect(text.lowercased().contains("connection: upgrade\r\n"), "\(text)")
                #expect(text.contains("RateLimit-Policy: "), "\(text)")
                let headEnd = try #require(text.range(of: "\r\n\r\n"))
                received.moveReaderIndex(forwardBy: text.utf8.distance(from: text.startIndex, to: headEnd.upperBound))

                try await outbound.write(ByteBuffer(string: "ping"))
                #expect(try await read(&iterator, into: &received) { $0.readableBytes >= 9 })
                #expect(String(buffer: received) == "earlyping")
                received.clear()

                // Every byte value, in a pattern that does not repeat with the relay's buffer sizes.
                let large = ByteBuffer(bytes: (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) })
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for start in stride(from: 0, to: large.readableBytes, by: 64 << 10) {
                            try await outbound.write(large.getSlice(at: start, length: min(64 << 10, large.readableBytes - start))!)
                        }
                    }
                    #expect(try await read(&iterator, into: &received) { $0.readableBytes >= large.readableBytes })
                    try await group.waitForAll()
                }
                #expect(received == large)

                try await outbound.write(ByteBuffer(string: "close!"))
                received.clear()
                // The upstream echoes and closes: so does the sidecar's side of the client connection.
                #expect(try await read(&iterator, into: &received) { _ in false } == false)
                #expect(String(buffer: received) == "close!")
            } after: { upstream in
                let head = try #require(upstream.heads.withLock { $0.first })
                #expect(head.contains("\r\nUpgrade: websocket\r\n"), "\(head)")
                #expect(head.lowercased().contains("\r\nconnection: upgrade\r\n"), "\(head)")
                #expect(head.contains("\r\nSec-WebSocket-Version: 13\r\n"), "\(head)")
            }
        }

        /// The client closing its connection ends the tunnel: the upstream's connection closes too.
        @Test(.timeLimit(.minutes(2))) func theClientClosingEndsTheTunnel() async throws {
            try await Self.withTunnelClient { inbound, outbound in
                var iterator = inbound.makeAsyncIterator()
                var received = ByteBuffer()
                try await outbound.write(ByteBuffer(string: Self.upgrade + TestKey.roomy.authorizationLine + "\r\n"))
                #expect(try await read(&iterator, into: &received) { String(buffer: $0).hasSuffix("\r\n\r\n") })
                try await outbound.write(ByteBuffer(string: "hello"))
                #expect(try await read(&iterator, into: &received) { String(buffer: $0).hasSuffix("hello") })
            } after: { upstream in
                // Polled, not slept: the upstream sees its connection end once the sidecar closes it.
                let deadline = ContinuousClock.now + .seconds(30)
                while upstream.closedConnections.load(ordering: .relaxed) == 0, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(upstream.closedConnections.load(ordering: .relaxed) == 1)
            }
        }

        /// An upgrade the limiter refuses is answered 429 by the sidecar and never reaches the upstream.
        @Test(.timeLimit(.minutes(2))) func aRefusedUpgradeNeverReachesTheUpstream() async throws {
            try await Self.withEchoUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url, basicCapacity: 1)) { sidecar in
                    let key = TestKey.sender.authorizationLine
                    // Admitted: tunnelled, and ended by the upstream once it echoes `close!`.
                    let first = try await rawExchange(port: sidecar.proxyPort, Array((Self.upgrade + key + "\r\nclose!").utf8))
                    #expect(first.status == 101, "\(first.text)")
                    #expect(first.text.hasSuffix("close!"), "\(first.text)")
                    let refused = try await rawExchange(port: sidecar.proxyPort, Array((Self.upgrade + key + "\r\n").utf8), halfClose: true)
                    #expect(refused.status == 429, "\(refused.text)")
                    #expect(refused.text.contains("application/problem+json"))
                    #expect(!refused.text.contains("Upgrade: websocket"))
                    #expect(upstream.heads.withLock { $0.count } == 1)
                }
            }
        }

        /// An upgrade request the upstream answers without switching: relayed as a normal answer, and
        /// the connection serves the next request.
        @Test(.timeLimit(.minutes(2))) func anUpgradeAnsweredNormallyIsANormalResponse() async throws {
            try await Self.withEchoUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    let key = TestKey.roomy.authorizationLine
                    let requests =
                        "GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\(key)\r\n"
                        + "GET /plain HTTP/1.1\r\nHost: x\r\n\(key)Connection: close\r\n\r\n"
                    let answer = try await rawExchange(port: sidecar.proxyPort, Array(requests.utf8))
                    #expect(answer.text.components(separatedBy: "HTTP/1.1 200 OK\r\n").count - 1 == 2, "\(answer.text)")
                    #expect(answer.text.hasSuffix("plain"), "\(answer.text)")
                    #expect(answer.closedByServer)
                    let heads = upstream.heads.withLock { $0 }
                    #expect(heads.count == 2)
                    #expect(heads.first?.contains("\r\nUpgrade: h2c\r\n") == true, "\(heads)")
                }
            }
        }
    }
}
