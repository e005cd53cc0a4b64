import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Tollgate
import TollgateHTTP
import TollgateRedis

/// What every connection's `FastPath` shares.
struct FastPathShared: Sendable {
    let limiter: RateLimiter
    let live: LiveSettings
    /// The upstream; nil with the built-in stand-in, whose requests all take the middleware chain.
    let forwarder: HTTPForwarder?
    let accessLog: AccessLog
    let logger: Logger
}

/// The Hummingbird listener's data path for the common request (the listener of an `https://`
/// upstream or the stand-in; an `http://` upstream has the byte-level `ByteListenerService`), on the
/// connection's event loop from the first byte to the last: a request without a body or with a
/// `Content-Length` body of at most 64 KiB (and within `server.max_body_size`), while an upstream is
/// configured.
///
/// Such a request is read whole, decided by the same `RateLimiter` as the middleware — in line when the
/// key's lookup is cached and the store answers at once (the in-memory store), else in a task that runs
/// on this event loop (Redis, a registry lookup) — and forwarded on an upstream connection of the same
/// loop, with the same fields, framing, timeouts, retry and answers as `HTTPForwarder` (whose helpers it
/// uses). No task hops between threads, no per-request async machinery: this is where the sidecar's
/// throughput comes from. Every other request — chunked or large bodies (streamed), a `TRACE` with a
/// body, requests behind one the middleware chain is still answering — passes on to Hummingbird's
/// middleware chain (`AccessLogMiddleware`, `BodyLimitMiddleware`, `RateLimitMiddleware`,
/// `ForwardMiddleware`), unchanged.
///
/// Responses leave in request order: what arrives while this handler answers a request — the next
/// requests, a parse error, the client closing its side — is held until that answer is complete, and
/// reading stops while anything is held. The handler also owns the connection's idle timeout (no inbound
/// byte for `idleTimeout` while no answer is being written, the rule Hummingbird applies) and graceful
/// shutdown (`ChannelShouldQuiesceEvent`: close once every request received has been answered), since
/// Hummingbird's own state handler never sees the requests answered here. Its answers carry a `Date`;
/// a request whose client left before it could be forwarded is logged with status 499 (as nginx does)
/// and not forwarded.
final class FastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// A request this handler answers, as read so far.
    struct Exchange: Sendable {
        var head: HTTPRequest
        var body: ByteBuffer?
        /// The body's `Content-Length`, nil when it had none.
        var declared: Int?
        var started: ContinuousClock.Instant
        /// The client asked to close the connection after this answer.
        var closeAfter: Bool
    }

    private enum Mode {
        /// Between requests, or in a request that the middleware chain handles (its parts pass on).
        case passing
        /// Reading the body of a request this handler answers.
        case collecting(Exchange)
        /// Deciding, forwarding or answering a request that has been read whole.
        case answering
    }

    private let shared: FastPathShared
    private let idleTimeout: TimeAmount?
    private var mode = Mode.passing
    private var context: ChannelHandlerContext?
    private var executor: EventLoopTaskExecutor?
    /// What arrived while a request was being answered (pipelining), replayed in order after it.
    private enum Held {
        case part(HTTPRequestPart)
        case error(any Error)
        /// The client closed its side (`ChannelEvent.inputClosed`).
        case inputClosed
    }

    private var held = CircularBuffer<Held>()
    /// A read asked for while a request waited behind the one being answered, done once that is through.
    private var readHeld = false
    /// Requests passed to the middleware chain whose response has not ended.
    private var passedOutstanding = 0
    /// Parts passed on since the last `channelReadComplete` went by: Hummingbird's inbound stream hands
    /// reads over on that event, so parts replayed after an answer need one of their own.
    private var passedSinceReadComplete = false

    // Idle timeout and graceful shutdown, over both paths.
    private var requestsInProgress = 0
    private var requestBeingRead = false
    private var lastRead = NIODeadline.now()
    private var idleTask: Scheduled<Void>?
    private var closeWhenDone = false

    init(shared: FastPathShared, idleTimeout: TimeAmount?) {
        self.shared = shared
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        executor = EventLoopTaskExecutor(context.eventLoop)
        if context.channel.isActive { scheduleIdleCheck(context: context, in: idleTimeout) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTask?.cancel()
        idleTask = nil
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        scheduleIdleCheck(context: context, in: idleTimeout)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTask?.cancel()
        idleTask = nil
        context.fireChannelInactive()
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastRead = .now()
        let part = unwrapInboundIn(data)
        if isBusy {
            held.append(.part(part))
            return
        }
        handle(part, context: context)
    }

    private func handle(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch (mode, part) {
        case (.passing, .head(let head)):
            requestsInProgress += 1
            requestBeingRead = true
            if passedOutstanding == 0, let exchange = takeOn(head) {
                mode = .collecting(exchange)
            } else {
                passedOutstanding += 1
                pass(part, context: context)
            }
        case (.passing, .body):
            pass(part, context: context)
        case (.passing, .end):
            requestBeingRead = false
            pass(part, context: context)
        case (.collecting(var exchange), .body(let chunk)):
            mode = .answering  // a placeholder while the body grows, so its buffer is not copied
            if exchange.body == nil {
                exchange.body = chunk
            } else {
                exchange.body!.writeImmutableBuffer(chunk)
            }
            mode = .collecting(exchange)
        case (.collecting(let exchange), .end):
            requestBeingRead = false
            mode = .answering
            context.eventLoop.assumeIsolated().execute {
                self.decide(exchange, context: context)
            }
        case (.collecting, .head), (.answering, _):
            // A head inside a body cannot come from the decoder; parts while answering are held.
            held.append(.part(part))
        }
    }

    private func pass(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        passedSinceReadComplete = true
        context.fireChannelRead(wrapInboundOut(part))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        passedSinceReadComplete = false
        context.fireChannelReadComplete()
    }

    /// Completes the read of parts passed on outside a read (replayed after an answer).
    private func completePassedReads(context: ChannelHandlerContext) {
        if passedSinceReadComplete { channelReadComplete(context: context) }
    }

    /// Answering a request, or holding what came after one: what arrives now waits its turn.
    private var isBusy: Bool {
        isBusyAnswering || !held.isEmpty
    }

    /// The exchange for a request this handler answers, or nil to pass it on.
    private func takeOn(_ head: HTTPRequest) -> Exchange? {
        guard shared.forwarder != nil, head.method != .connect else { return nil }
        let fields = head.headerFields
        if fields[.transferEncoding] != nil { return nil }
        var declared: Int?
        if let length = fields[.contentLength] {
            guard let value = Int(length), value >= 0,
                value <= min(HTTPForwarder.bufferedBodySize, shared.live.current.maxBodySize)
            else { return nil }
            declared = value
        }
        if head.method == .trace, (declared ?? 0) > 0 { return nil }
        let closeAfter = fields[values: .connection].contains(where: HopByHop.saysClose)
        return Exchange(head: head, body: nil, declared: declared, started: .now, closeAfter: closeAfter)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !isCollecting, isBusy {
            // It belongs to a request behind the one being answered: it waits its turn.
            held.append(.error(error))
            return
        }
        handleError(error, context: context)
    }

    private func handleError(_ error: any Error, context: ChannelHandlerContext) {
        guard case .collecting(let exchange) = mode else {
            context.fireErrorCaught(error)
            return
        }
        requestBeingRead = false
        guard error is HTTPParserError else {
            // The connection failed (reset, say): nobody to answer.
            mode = .passing
            requestsInProgress = max(0, requestsInProgress - 1)
            context.close(promise: nil)
            return
        }
        // The body broke off (a parse error half way): the request cannot be forwarded.
        mode = .answering
        var closing = exchange
        closing.closeAfter = true
        shared.forwarder?.metrics.upstream("aborted")
        answer(.badRequest("the request body could not be read"), closing, outcome: nil, context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            closeWhenDone = true
            settle(context: context)
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed, isBusy || isCollecting {
            // Hummingbird would end the connection on it, before this handler's answer is out: it waits.
            held.append(.inputClosed)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private var isCollecting: Bool {
        if case .collecting = mode { return true }
        return false
    }

    // MARK: Outbound (the middleware chain's answers)

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data), passedOutstanding > 0 else {
            // Not the end of an answer to a request passed on (Hummingbird also answers a parse error
            // that came without a request; that one was counted by nobody).
            context.write(data, promise: promise)
            return
        }
        passedOutstanding -= 1
        requestsInProgress = max(0, requestsInProgress - 1)
        context.write(data, promise: promise)
        settle(context: context)
    }

    func read(context: ChannelHandlerContext) {
        // Reading stops only once a request is waiting behind the one being answered (pipelining):
        // stopping for every answer would cost two `epoll_ctl` calls a request.
        if isBusyAnswering, !held.isEmpty {
            readHeld = true
            return
        }
        context.read()
    }

    // MARK: Deciding

    private func decide(_ exchange: Exchange, context: ChannelHandlerContext) {
        let limiter = shared.limiter
        let head = exchange.head
        if let judgement = limiter.judgeNow(
            method: head.method, path: head.path ?? "", headers: head.headerFields, body: exchange.body ?? ByteBuffer())
        {
            proceed(judgement, exchange, context: context)
            return
        }
        // A registry lookup or a Redis round trip: in a task, on this loop.
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let body = exchange.body
        Task(executorPreference: executor) {
            let judgement = await limiter.judge(method: head.method, path: head.path ?? "", headers: head.headerFields) { limit in
                guard let body else { return ByteBuffer() }
                if body.readableBytes > limit { throw NIOTooManyBytesError(maxBytes: limit) }
                return body
            }
            loop.execute {
                let (handler, context) = bound.value
                handler.proceed(judgement, exchange, context: context)
            }
        }
    }

    private func proceed(_ judgement: RateLimiter.Judgement, _ exchange: Exchange, context: ChannelHandlerContext) {
        switch judgement {
        case .refused(let problem, let outcome):
            answer(problem, exchange, outcome: outcome, context: context)
        case .admitted(let outcome):
            guard let forwarder = shared.forwarder, context.channel.isActive else {
                // The client left while its request was decided: nobody would read the answer.
                log(status: 499, exchange, outcome: outcome, context: context)
                return
            }
            forward(exchange, outcome: outcome, through: forwarder, context: context)
        }
    }

    // MARK: Forwarding

    private func forward(_ exchange: Exchange, outcome: RateLimitOutcome, through forwarder: HTTPForwarder, context: ChannelHandlerContext) {
        let settings = shared.live.current.forwarding
        var head = forwarder.upstreamHead(
            exchange.head, client: context.channel.remoteAddress?.ipAddress, outcome: outcome, settings: settings)
        HTTPForwarder.frameWholeBody(&head, declared: exchange.declared)
        send(head, exchange, outcome: outcome, forwarder: forwarder, settings: settings, retried: false, started: .now, context: context)
    }

    private func send(
        _ head: HTTPRequest, _ exchange: Exchange, outcome: RateLimitOutcome, forwarder: HTTPForwarder,
        settings: ForwardingSettings, retried: Bool, started: ContinuousClock.Instant, context: ChannelHandlerContext
    ) {
        let body = (exchange.body?.readableBytes ?? 0) > 0 ? exchange.body : nil
        forwarder.pool.connectionFuture(on: context.eventLoop).assumeIsolated().whenComplete { result in
            let connection: UpstreamConnection
            switch result {
            case .success(let made):
                connection = made
            case .failure(let error):
                self.answer(forwarder.problem(for: Self.failure(error)), exchange, outcome: outcome, context: context)
                return
            }
            connection.sendOnLoop(head, body: body, responseTimeout: settings.responseTimeout, readTimeout: settings.readTimeout)
                .assumeIsolated().whenComplete { result in
                    switch result {
                    case .success(let start):
                        context.eventLoop.assumeIsolated().execute {
                            self.relay(start, from: connection, exchange, outcome: outcome, forwarder: forwarder, started: started, context: context)
                        }
                    case .failure(let error):
                        connection.close()
                        let failure = Self.failure(error)
                        if !retried, HTTPForwarder.maySendAgain(head, after: failure, on: connection) {
                            self.send(
                                head, exchange, outcome: outcome, forwarder: forwarder, settings: settings, retried: true,
                                started: started, context: context)
                        } else {
                            self.answer(forwarder.problem(for: failure), exchange, outcome: outcome, context: context)
                        }
                    }
                }
        }
    }

    private static func failure(_ error: any Error) -> UpstreamFailure {
        error as? UpstreamFailure ?? .closed(responded: false)
    }

    /// Writes the upstream's answer: whole when it was read whole, else part by part, one write in
    /// flight, so that a slow client slows the upstream rather than filling memory.
    private func relay(
        _ start: UpstreamResponseStart, from connection: UpstreamConnection, _ exchange: Exchange, outcome: RateLimitOutcome,
        forwarder: HTTPForwarder, started: ContinuousClock.Instant, context: ChannelHandlerContext
    ) {
        var fields = forwarder.answered(start, started: started)
        outcome.apply(to: &fields)
        if fields[.date] == nil { fields[.date] = HTTPDate.now() }
        if exchange.closeAfter { fields[.connection] = "close" }
        let status = start.head.status.code
        context.write(wrapOutboundOut(.head(HTTPResponse(status: start.head.status, headerFields: fields))), promise: nil)
        if let body = start.body {
            if body.readableBytes > 0 { context.write(wrapOutboundOut(.body(body)), promise: nil) }
            forwarder.pool.release(connection)
            finish(status: status, exchange, outcome: outcome, context: context)
            return
        }
        context.flush()
        pump(connection, status: status, exchange, outcome: outcome, forwarder: forwarder, context: context)
    }

    private func pump(
        _ connection: UpstreamConnection, status: Int, _ exchange: Exchange, outcome: RateLimitOutcome, forwarder: HTTPForwarder,
        context: ChannelHandlerContext
    ) {
        connection.nextBodyPartOnLoop().assumeIsolated().whenComplete { result in
            switch result {
            case .success(.some(let part)):
                context.writeAndFlush(self.wrapOutboundOut(.body(part))).assumeIsolated().whenComplete { written in
                    switch written {
                    case .success:
                        self.pump(connection, status: status, exchange, outcome: outcome, forwarder: forwarder, context: context)
                    case .failure:
                        // The client has gone: the rest of the answer has nowhere to go.
                        connection.close()
                        self.cutOff(status: status, exchange, outcome: outcome, context: context)
                    }
                }
            case .success(.none):
                forwarder.pool.release(connection)
                self.finish(status: status, exchange, outcome: outcome, context: context)
            case .failure(let error):
                connection.close()
                forwarder.logger.warning("upstream response broke off", metadata: ["error": "\(error)"])
                self.cutOff(status: status, exchange, outcome: outcome, context: context)
            }
        }
    }

    // MARK: Answering

    private func answer(_ problem: Problem, _ exchange: Exchange, outcome: RateLimitOutcome?, context: ChannelHandlerContext) {
        var (head, body) = problem.responseParts()
        if let outcome, outcome.refusal == nil {
            // Admitted and counted, then the upstream failed (502, 504): the fields say what it cost.
            outcome.apply(to: &head.headerFields)
        }
        head.headerFields[.date] = HTTPDate.now()
        if exchange.closeAfter { head.headerFields[.connection] = "close" }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        finish(status: head.status.code, exchange, outcome: outcome, context: context)
    }

    /// Ends the answer, logs it and goes on to what was held meanwhile.
    private func finish(status: Int, _ exchange: Exchange, outcome: RateLimitOutcome?, context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        log(status: status, exchange, outcome: outcome, context: context)
        mode = .passing
        requestsInProgress = max(0, requestsInProgress - 1)
        guard context.channel.isActive else { return }
        while !isBusyAnswering, let next = held.popFirst() {
            switch next {
            case .part(let part):
                handle(part, context: context)
            case .error(let error):
                completePassedReads(context: context)
                handleError(error, context: context)
            case .inputClosed:
                completePassedReads(context: context)
                context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            }
        }
        completePassedReads(context: context)
        if isBusyAnswering { return }
        settle(context: context)
        if readHeld {
            readHeld = false
            context.read()
        }
    }

    private var isBusyAnswering: Bool {
        if case .answering = mode { return true }
        return false
    }

    /// An answer that began and cannot be completed: the client learns it from the connection closing.
    private func cutOff(status: Int, _ exchange: Exchange, outcome: RateLimitOutcome?, context: ChannelHandlerContext) {
        log(status: status, exchange, outcome: outcome, context: context)
        context.close(promise: nil)
    }

    private func log(status: Int, _ exchange: Exchange, outcome: RateLimitOutcome?, context: ChannelHandlerContext) {
        shared.accessLog.record(
            status: status, method: exchange.head.method, path: exchange.head.path, started: exchange.started,
            client: context.channel.remoteAddress?.ipAddress, outcome: outcome, logger: shared.logger)
    }

    // MARK: Idle timeout and graceful shutdown

    /// After an answer ended (either path), or at shutdown: with nothing in progress or held, close if
    /// shutting down, else the idle clock starts again.
    private func settle(context: ChannelHandlerContext) {
        guard requestsInProgress == 0, held.isEmpty, !isBusyAnswering, !isCollecting else { return }
        if closeWhenDone {
            context.flush()
            context.close(promise: nil)
            return
        }
        lastRead = .now()
        scheduleIdleCheck(context: context, in: idleTimeout)
    }

    private func scheduleIdleCheck(context: ChannelHandlerContext, in delay: TimeAmount?) {
        guard let delay, idleTask == nil else { return }
        idleTask = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            self.idleTask = nil
            self.idleCheck(context: context)
        }
    }

    private func idleCheck(context: ChannelHandlerContext) {
        guard let idleTimeout, context.channel.isActive else { return }
        // A request read whole and being answered: the answer's end starts the clock again.
        if !requestBeingRead, requestsInProgress > 0 { return }
        let deadline = lastRead + idleTimeout
        let now = NIODeadline.now()
        if now >= deadline {
            context.close(promise: nil)
        } else {
            scheduleIdleCheck(context: context, in: deadline - now)
        }
    }
}
