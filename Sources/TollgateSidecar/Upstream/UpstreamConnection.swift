import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// Why an exchange with the upstream failed.
enum UpstreamFailure: Error, Equatable {
    /// No connection could be made (refused, unreachable). A TLS handshake that fails afterwards ends
    /// the first exchange as `closed`.
    case connect(String)
    /// No connection within `upstream.connect_timeout`.
    case connectTimeout
    /// No response head within `upstream.response_timeout`; or a streamed body silent for
    /// `upstream.read_timeout`, or a small body (read whole) not complete within it of the head.
    case timeout
    /// The connection closed or failed before the response was complete; `responded` says whether a
    /// response head had arrived.
    case closed(responded: Bool)
    /// The upstream's response could not be parsed.
    case malformedResponse
}

/// The start of an upstream response: its head, and its body whole when it was small enough to wait for.
struct UpstreamResponseStart: Sendable {
    var head: HTTPResponse
    /// The whole body (possibly empty), or nil when it streams through `UpstreamConnection.nextBodyPart()`.
    var body: ByteBuffer?
}

/// One keep-alive HTTP/1.1 connection to the upstream, carrying one exchange at a time.
///
/// The connection's handler does everything on the connection's event loop; these methods hop there
/// once per call. The request is written whole (head, buffered body, end) in one flush; a response
/// whose `Content-Length` is at most `bufferLimit` is read whole before the caller resumes, any other
/// is pulled part by part (`nextBodyPart()`), one read at a time, so a slow client slows the upstream
/// rather than filling memory.
final class UpstreamConnection: Sendable {
    let channel: any Channel
    private let handler: NIOLoopBound<UpstreamExchangeHandler>
    private let status: UpstreamExchangeHandler.Status
    /// When the connection was last handed back idle (uptime nanoseconds), for the pool's idle limit.
    let idleSince = Atomic<UInt64>(0)

    private init(channel: any Channel, handler: NIOLoopBound<UpstreamExchangeHandler>, status: UpstreamExchangeHandler.Status) {
        self.channel = channel
        self.handler = handler
        self.status = status
    }

    /// Whether the last exchange is complete and the connection can carry another.
    var isReusable: Bool {
        !closing.load(ordering: .acquiring) && channel.isActive && status.reusable.load(ordering: .acquiring)
    }

    /// Whether an exchange has completed on it before: a failure on such a connection before any answer
    /// may be the upstream closing it while it sat idle.
    var wasUsed: Bool {
        status.completed.load(ordering: .relaxed) > 0
    }

    /// Set by `close()`, which takes effect on the event loop a little later.
    private let closing = Atomic<Bool>(false)

    /// Connects on `eventLoop` to `target`; the future fails with an `UpstreamFailure`.
    static func connecting(
        to target: UpstreamTarget, on eventLoop: any EventLoop, connectTimeout: Duration, bufferLimit: Int,
        tls: NIOSSLContext?
    ) -> EventLoopFuture<UpstreamConnection> {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(connectTimeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: false)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tls, serverHostname: target.isIPAddress ? nil : target.host))
                    }
                    // The forwarder frames every request itself (Content-Length, or chunked for a chunked
                    // body); the encoder must not add or remove framing on its own (it would drop the
                    // framing of a TRACE with a body, and chunk a POST without one).
                    var encoder = HTTPRequestEncoder.Configuration()
                    encoder.automaticallySetFramingHeaders = false
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(encoderConfiguration: encoder)
                    try channel.pipeline.syncOperations.addHandler(KeepAliveMarker())
                    try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPClientCodec())
                    try channel.pipeline.syncOperations.addHandler(UpstreamExchangeHandler(bufferLimit: bufferLimit, eventLoop: channel.eventLoop))
                }
            }
        return bootstrap.connect(host: target.host, port: target.port).flatMapThrowing { channel in
            let handler = try channel.pipeline.syncOperations.handler(type: UpstreamExchangeHandler.self)
            return UpstreamConnection(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop), status: handler.status)
        }.flatMapErrorThrowing { error in
            if let failure = error as? UpstreamFailure { throw failure }
            if let error = error as? ChannelError, case .connectTimeout = error { throw UpstreamFailure.connectTimeout }
            throw UpstreamFailure.connect("\(error)")
        }
    }

    /// `send`, for a caller on the connection's event loop: the future of the response's start.
    func sendOnLoop(_ head: HTTPRequest, body: ByteBuffer?, responseTimeout: Duration, readTimeout: Duration) -> EventLoopFuture<UpstreamResponseStart> {
        handler.value.start(head, body: body, end: true, responseTimeout: responseTimeout, readTimeout: readTimeout)
    }

    /// `nextBodyPart`, for a caller on the connection's event loop.
    func nextBodyPartOnLoop() -> EventLoopFuture<ByteBuffer?> {
        handler.value.nextBodyPart()
    }

    /// Sends a request whose body is `body` (nil: none) and waits for the response head.
    func send(
        _ head: HTTPRequest, body: ByteBuffer?, responseTimeout: Duration, readTimeout: Duration
    ) async throws(UpstreamFailure) -> UpstreamResponseStart {
        let future = channel.eventLoop.flatSubmit {
            self.sendOnLoop(head, body: body, responseTimeout: responseTimeout, readTimeout: readTimeout)
        }
        return try await Self.result(of: future)
    }

    /// Sends a request head whose body follows with `write(_:)` and `finish()`; the response head is
    /// waited for with `response()`.
    func begin(_ head: HTTPRequest, responseTimeout: Duration, readTimeout: Duration) async throws(UpstreamFailure) {
        let future = channel.eventLoop.flatSubmit {
            let response = self.handler.value.start(
                head, body: nil, end: false, responseTimeout: responseTimeout, readTimeout: readTimeout)
            self.handler.value.pendingResponse = response
            return self.channel.eventLoop.makeSucceededVoidFuture()
        }
        _ = try await Self.result(of: future)
    }

    /// Writes one part of a streamed request body; returns once it is written (one part in flight).
    func write(_ part: ByteBuffer) async throws(UpstreamFailure) {
        try await Self.result(of: channel.writeAndFlush(HTTPRequestPart.body(part)))
    }

    /// Ends a streamed request body.
    func finish() async throws(UpstreamFailure) {
        try await Self.result(of: channel.writeAndFlush(HTTPRequestPart.end(nil)))
    }

    /// The response to a request sent with `begin`.
    func response() async throws(UpstreamFailure) -> UpstreamResponseStart {
        let future = channel.eventLoop.flatSubmit {
            self.handler.value.pendingResponse ?? self.channel.eventLoop.makeFailedFuture(UpstreamFailure.closed(responded: false))
        }
        return try await Self.result(of: future)
    }

    /// The next part of a streamed response body; nil at its end.
    func nextBodyPart() async throws(UpstreamFailure) -> ByteBuffer? {
        try await Self.result(of: channel.eventLoop.flatSubmit { self.nextBodyPartOnLoop() })
    }

    /// Closes the connection (an exchange abandoned half way cannot be reused).
    func close() {
        closing.store(true, ordering: .releasing)
        channel.close(promise: nil)
    }

    /// The value of `future`, its failure as an `UpstreamFailure`.
    static func result<T: Sendable>(of future: EventLoopFuture<T>) async throws(UpstreamFailure) -> T {
        do {
            return try await future.get()
        } catch let failure as UpstreamFailure {
            throw failure
        } catch {
            throw .closed(responded: false)
        }
    }
}

/// Marks a response after which the connection will not stay open (an HTTP/1.0 answer without
/// `Connection: keep-alive`) with `Connection: close`, which the HTTP types the handler sees, having no
/// version, could not otherwise tell.
final class KeepAliveMarker: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias InboundOut = HTTPClientResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data), !head.isKeepAlive else {
            context.fireChannelRead(data)
            return
        }
        head.headers.add(name: "connection", value: "close")
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }
}

/// The connection's end of one exchange at a time: sends the request parts, collects the response.
final class UpstreamExchangeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPRequestPart

    private enum State {
        /// No exchange, or the last one is complete.
        case idle
        /// Waiting for the response head.
        case awaitingHead(EventLoopPromise<UpstreamResponseStart>)
        /// Reading a small body whole before answering.
        case buffering(HTTPResponse, ByteBuffer, EventLoopPromise<UpstreamResponseStart>)
        /// Streaming the body: parts received and not yet taken, and whoever waits for the next one.
        case streaming(CircularBuffer<ByteBuffer>, waiter: EventLoopPromise<ByteBuffer?>?, ended: Bool)
        /// The connection failed or closed; nothing more comes.
        case failed(UpstreamFailure)
    }

    /// What the connection's users may read from any thread.
    final class Status: Sendable {
        /// Idle with keep-alive: another exchange may start.
        let reusable = Atomic<Bool>(true)
        /// Exchanges completed on the connection.
        let completed = Atomic<Int>(0)
    }

    let status = Status()
    private let bufferLimit: Int
    private var state = State.idle {
        didSet {
            let reusable = keepAlive && { if case .idle = state { true } else { false } }()
            status.reusable.store(reusable, ordering: .releasing)
        }
    }
    private var context: ChannelHandlerContext?
    private var timeout: Scheduled<Void>?
    private var readTimeout: TimeAmount = .seconds(30)
    private var keepAlive = true
    private var responded = false
    /// A read has been asked for and not yet completed (`channelReadComplete`).
    private var reading = false
    /// The response future of a request whose body streams (see `UpstreamConnection.begin`).
    var pendingResponse: EventLoopFuture<UpstreamResponseStart>?

    /// The connection's loop, kept after the handler is removed (for failed futures).
    private let eventLoop: any EventLoop

    init(bufferLimit: Int, eventLoop: any EventLoop) {
        self.bufferLimit = bufferLimit
        self.eventLoop = eventLoop
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Writes the request (the body and its end when given) and returns the response's start.
    func start(
        _ head: HTTPRequest, body: ByteBuffer?, end: Bool, responseTimeout: Duration, readTimeout: Duration
    ) -> EventLoopFuture<UpstreamResponseStart> {
        guard let context else { return failedFuture(.closed(responded: false)) }
        let promise = context.eventLoop.makePromise(of: UpstreamResponseStart.self)
        guard case .idle = state, keepAlive else {
            promise.fail(UpstreamFailure.closed(responded: false))
            return promise.futureResult
        }
        state = .awaitingHead(promise)
        responded = false
        pendingResponse = nil
        self.readTimeout = TimeAmount(readTimeout)
        arm(TimeAmount(responseTimeout), context: context)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body, body.readableBytes > 0 { context.write(wrapOutboundOut(.body(body)), promise: nil) }
        if end { context.write(wrapOutboundOut(.end(nil)), promise: nil) }
        context.flush()
        read(context)
        return promise.futureResult
    }

    func nextBodyPart() -> EventLoopFuture<ByteBuffer?> {
        guard let context else { return failedFuture(.closed(responded: true)) }
        switch state {
        case .streaming(var parts, let waiter, let ended):
            if let part = parts.popFirst() {
                state = .streaming(parts, waiter: waiter, ended: ended)
                return context.eventLoop.makeSucceededFuture(part)
            }
            if ended {
                completeExchange()
                return context.eventLoop.makeSucceededFuture(nil)
            }
            let promise = context.eventLoop.makePromise(of: ByteBuffer?.self)
            state = .streaming(parts, waiter: promise, ended: false)
            arm(readTimeout, context: context)
            read(context)
            return promise.futureResult
        case .failed(let failure):
            return context.eventLoop.makeFailedFuture(failure)
        case .idle:
            return context.eventLoop.makeSucceededFuture(nil)
        case .awaitingHead, .buffering:
            return context.eventLoop.makeFailedFuture(UpstreamFailure.closed(responded: false))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            // Interim answers (100 Continue and the like) are not relayed: the final head follows.
            guard head.status.kind != .informational, case .awaitingHead(let promise) = state else { return }
            responded = true
            disarm()
            if head.headerFields[values: .connection].contains(where: HopByHop.saysClose) { keepAlive = false }
            let length = head.headerFields[.contentLength].flatMap { Int($0) }
            if let length, length <= bufferLimit {
                arm(readTimeout, context: context)
                state = .buffering(head, context.channel.allocator.buffer(capacity: length), promise)
            } else {
                state = .streaming(CircularBuffer(), waiter: nil, ended: false)
                promise.succeed(UpstreamResponseStart(head: head, body: nil))
            }
        case .body(let part):
            switch state {
            case .buffering(let head, var buffer, let promise):
                state = .failed(.closed(responded: true))  // a placeholder, so the buffer is not copied
                buffer.writeImmutableBuffer(part)
                state = .buffering(head, buffer, promise)
            case .streaming(var parts, let waiter, _):
                if let waiter {
                    disarm()
                    state = .streaming(parts, waiter: nil, ended: false)
                    waiter.succeed(part)
                } else {
                    parts.append(part)
                    state = .streaming(parts, waiter: nil, ended: false)
                }
            default:
                break
            }
        case .end:
            disarm()
            switch state {
            case .buffering(let head, let buffer, let promise):
                completeExchange()
                promise.succeed(UpstreamResponseStart(head: head, body: buffer))
            case .streaming(let parts, let waiter, _):
                if let waiter {
                    completeExchange()
                    waiter.succeed(nil)
                } else {
                    state = .streaming(parts, waiter: nil, ended: true)
                }
            default:
                break
            }
        }
    }

    private func read(_ context: ChannelHandlerContext) {
        guard !reading else { return }
        reading = true
        context.read()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        // Reading goes on, idle or not (an idle connection that the upstream closes is noticed at once,
        // and keeping the socket's read interest saves two `epoll_ctl` calls an exchange), except while
        // streamed parts wait to be taken: a slow client then slows the upstream down.
        switch state {
        case .streaming(_, let waiter, let ended) where waiter == nil && !ended: break
        default: read(context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error is HTTPParserError ? .malformedResponse : .closed(responded: responded))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        keepAlive = false
        fail(.closed(responded: responded))
        context.fireChannelInactive()
    }

    /// The response is through: the connection may carry another exchange (unless it is to close).
    private func completeExchange() {
        status.completed.add(1, ordering: .relaxed)
        state = .idle
    }

    private func fail(_ failure: UpstreamFailure) {
        disarm()
        keepAlive = false
        status.reusable.store(false, ordering: .releasing)
        switch state {
        case .awaitingHead(let promise), .buffering(_, _, let promise):
            state = .failed(failure)
            promise.fail(failure)
        case .streaming(_, let waiter, let ended):
            if ended { return }
            state = .failed(failure)
            waiter?.fail(failure)
        case .idle, .failed:
            state = .failed(failure)
        }
    }

    private func arm(_ after: TimeAmount, context: ChannelHandlerContext) {
        timeout?.cancel()
        let channel = context.channel
        timeout = context.eventLoop.assumeIsolated().scheduleTask(in: after) { [weak self] in
            self?.fail(.timeout)
            channel.close(promise: nil)
        }
    }

    private func disarm() {
        timeout?.cancel()
        timeout = nil
    }

    /// A failed future on the connection's own loop (callers on the loop use it isolated).
    private func failedFuture<T>(_ failure: UpstreamFailure) -> EventLoopFuture<T> {
        eventLoop.makeFailedFuture(failure)
    }
}
