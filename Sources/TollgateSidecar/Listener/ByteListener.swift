import HTTPTypes
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Tollgate
import TollgateHTTP
import TollgateRedis

/// What every connection of the byte-level listener shares.
struct ByteListenerShared: Sendable {
    let limiter: RateLimiter
    let live: LiveSettings
    /// The upstream, reached in HTTP/1.1, over TLS when `tls` is set (an `https://` URL).
    let target: UpstreamTarget
    let tls: NIOSSLContext?
    let accessLog: AccessLog
    let logger: Logger
    /// `server.max_header_size`.
    let maxHeadSize: Int
    /// `upstream.connect_timeout`.
    let connectTimeout: Duration
    /// Answers admitted requests in process when no upstream is configured (`target` then names it).
    var standIn: StandInUpstream? = nil
    /// Nil when tracing is off.
    var tracing: ListenerTracing? = nil

    /// A request body of at most this many bytes is read whole before the decision (a route may count
    /// the request's cost from it).
    static let collectedBodySize = 64 * 1024
}

/// The sidecar's data path over bytes for one client connection: the request head is parsed where it
/// lies in the inbound buffer (`RequestHeadParser`), decided by the `RateLimiter` on this event loop
/// (in line when the key's lookup is cached and the store answers at once, else in a task on this
/// loop), written upstream with the hop-by-hop fields replaced by the forwarding fields, and its body
/// relayed as it arrives, framing unchanged (`BodyFramer` says where it ends); the response head is
/// scanned (`ResponseHeadScanner`), written to the client with the RateLimit fields, and its body
/// relayed the same way. The upstream connection belongs to this client connection and lives on the
/// same event loop, so no byte changes threads. `ConnectionStateMachine` decides what happens when;
/// this handler only carries its actions out.
///
/// Bodies flow with back-pressure both ways: the client is read only while the upstream takes what it
/// is sent, and the upstream only while the client does. The upstream has `upstream.response_timeout`
/// to begin its answer (504 after it), and `upstream.read_timeout` for each next part of it. An idempotent request without a body whose reused upstream
/// connection closes before any answer goes once more on a new connection.
///
/// Heads are rewritten as bytes (`FieldRewriter`): the request's head for the upstream is written
/// once, as it is parsed, and the answer's head is copied with the RateLimit fields added. The limiter
/// is given the fields that carry the key, and nothing else of the head. The upstream's time
/// (`upstream.response_timeout`, `upstream.read_timeout`) is a deadline watched by one timer per
/// connection, not a timer per request.
///
/// With no upstream configured, the built-in `StandInUpstream` takes the place of the upstream
/// connection: it is written the same bytes, and its answer is relayed by the same code.
///
/// A protocol switch (`Upgrade`, WebSocket) is checked like any request and forwarded with its
/// `Upgrade` and `Connection: upgrade` fields; after the upstream's `101 Switching Protocols` the
/// connection is a tunnel: bytes go both ways unchanged, with the same back-pressure, until either side
/// closes. Any other answer to it is relayed as a normal answer.
///
/// Not yet done here: a cost counted from a body over 64 KiB.
final class ByteListenerHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The request being handled (a reference: it is handed from step to step without copying its
    /// outcome's fields).
    private final class Exchange {
        private(set) var method: HTTPRequest.Method?
        private(set) var path: String?
        private(set) var started: ContinuousClock.Instant
        var outcome: RateLimitOutcome?
        private(set) var version: HTTP1Version

        init(method: HTTPRequest.Method? = nil, path: String? = nil, started: ContinuousClock.Instant, version: HTTP1Version = .http11) {
            self.method = method
            self.path = path
            self.started = started
            self.version = version
        }

        /// The exchange of another request, in this object.
        func reset(method: HTTPRequest.Method?, path: String?, started: ContinuousClock.Instant, version: HTTP1Version) {
            self.method = method
            self.path = path
            self.started = started
            self.version = version
            outcome = nil
        }
    }

    /// The last exchange made, used again for the next request once nothing else holds it (its
    /// request answered and logged): no allocation per request.
    private var lastExchange: Exchange?

    private func makeExchange(method: HTTPRequest.Method?, path: String?, version: HTTP1Version) -> Exchange {
        if isKnownUniquelyReferenced(&lastExchange), let reused = lastExchange {
            reused.reset(method: method, path: path, started: .now, version: version)
            return reused
        }
        let made = Exchange(method: method, path: path, started: .now, version: version)
        lastExchange = made
        return made
    }

    private enum Response {
        case none
        case head(ResponseHeadScanner)
        case body(BodyFramer, reusable: Bool, status: Int)
        /// After a `101`: what the upstream sends goes to the client as it is.
        case tunnel
    }

    private let shared: ByteListenerShared
    /// The reloadable settings in force for the request being handled (`LiveSettings`).
    private var settings: LiveSettings.Values
    /// `shared.tracing`, read once for the connection: with tracing off, no span is made.
    private let tracing: ListenerTracing?
    /// The spans of the request in progress (tracing on).
    private var trace: RequestTrace?
    private var machine: ConnectionStateMachine<ContinuousClock>
    private var parser: RequestHeadParser
    /// Client bytes not used yet: a head in progress, body bytes not relayed, pipelined requests.
    private var inbound = ByteBuffer()
    private var requestBody = BodyFramer(.none)
    private var exchange: Exchange?
    /// The answer to write when the state machine says `answer`.
    private var problem: Problem?
    /// The proxy's answer is out; the request body is still being drained before the next request.
    private var answeredAwaitingBody = false
    private var upstream: Channel?
    private var upstreamBytes = ByteBuffer()
    private var response = Response.none
    private var context: ChannelHandlerContext?
    private var executor: EventLoopTaskExecutor?
    private var idleTask: Scheduled<Void>?
    /// When the upstream's time is up: `upstream.response_timeout` after the request went, until its
    /// answer's head; `upstream.read_timeout` after each part of the answer. Nil when nothing is awaited.
    private var upstreamDeadline: NIODeadline?
    /// The one timer that watches `upstreamDeadline`, and when it fires. It is not moved as the deadline
    /// moves later: when it fires early it sets itself again for the deadline then in force, so a
    /// connection has one timer per timeout period, not one per request or per read.
    private var upstreamTimer: (task: Scheduled<Void>, deadline: NIODeadline)?
    /// The client's bytes wait for the upstream to take what it was sent (back-pressure).
    private var readHeldForUpstream = false
    /// The upstream's relay, to resume its reads once the client takes what it was sent.
    private var relay: UpstreamRelay?
    /// The upstream connection carried an exchange before the one in progress.
    private var upstreamReused = false
    /// The head sent upstream, kept while the request may go again on a new connection (an idempotent
    /// request without a body, on a reused connection the upstream closed before answering).
    private var resendable: ByteBuffer?
    /// When the request was sent upstream (the upstream's latency, to its response head).
    private var sentAt = ContinuousClock.now
    /// The client closed its sending side.
    private var inputWasClosed = false
    /// The answer's body is chunked and its client speaks HTTP/1.0: only the content is relayed, and
    /// the connection's end ends it.
    private var dechunking = false
    /// The request the stand-in is being sent, in place of an upstream connection.
    private var standInRequest: StandInUpstream.Exchange?
    /// The stand-in's answer is on its way (delivered from the event loop, as an upstream's would be).
    private var standInAnswering = false

    init(shared: ByteListenerShared, idleTimeout: Duration?) {
        self.shared = shared
        tracing = shared.tracing
        machine = ConnectionStateMachine(clock: ContinuousClock(), idleTimeout: idleTimeout)
        let settings = shared.live.current
        self.settings = settings
        parser = RequestHeadParser(limits: Self.limits(shared, settings))
    }

    /// The limits of the next request: `server.max_body_size` of the settings read last.
    private static func limits(_ shared: ByteListenerShared, _ settings: LiveSettings.Values) -> RequestHeadParser.Limits {
        .init(maxHeadSize: shared.maxHeadSize, maxBodySize: settings.maxBodySize)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        executor = EventLoopTaskExecutor(context.eventLoop)
        if context.channel.isActive { carry(machine.activated(), context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTask?.cancel()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        carry(machine.activated(), context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTask?.cancel()
        upstreamTimer?.task.cancel()
        upstreamTimer = nil
        if machine.closed() == .abandon, let exchange, problem == nil, case .none = response {
            // Nobody is left to read the answer (nginx logs such a request as 499).
            log(status: 499, exchange, context: context)
        }
        exchange = nil
        dropUpstream()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            if machine.state == .closed {
                // The client read the last answer and closed its side: done lingering.
                context.close(promise: nil)
                return
            }
            inputWasClosed = true
            var probe = requestBody
            let bodyAtHand = inbound.withUnsafeReadableBytes { bytes in
                if case .ended = probe.advance(bytes) { return true }
                return false
            }
            carry(machine.inputClosed(bodyAtHand: bodyAtHand), context: context)
        } else if event is ChannelShouldQuiesceEvent {
            carry(machine.quiesce(), context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func read(context: ChannelHandlerContext) {
        guard machine.readRequested(bytesHeld: inbound.readableBytes > 0) == .read else { return }
        if let upstream, !upstream.isWritable {
            // The upstream has not taken the body sent so far: the client waits.
            readHeldForUpstream = true
            return
        }
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // The client took what it was sent: the upstream's answer may flow again.
        if context.channel.isWritable { relay?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    fileprivate func upstreamWritabilityChanged(_ channel: Channel, context: ChannelHandlerContext) {
        guard channel === upstream, channel.isWritable, readHeldForUpstream else { return }
        readHeldForUpstream = false
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if machine.state == .closed { return }  // lingering after the last answer: input is dropped
        if case .tunnel = response, inbound.readableBytes == 0, let upstream {
            // Through the tunnel as it came, without a copy.
            upstream.writeAndFlush(unwrapInboundIn(data), promise: nil)
            return
        }
        Self.append(unwrapInboundIn(data), to: &inbound)
        process(context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: The request

    /// Uses the inbound bytes as far as the state allows.
    private func process(context: ChannelHandlerContext) {
        guard inbound.readableBytes > 0 else { return }
        carry(machine.bytesArrived(), context: context)
    }

    private func parseHead(context: ChannelHandlerContext) {
        switch parser.parse(inbound) {
        case .needMore:
            return
        case .failed(let error):
            exchange = Exchange(started: .now)
            problem = error.problem(maxHeadSize: shared.maxHeadSize, maxBodySize: parser.limits.maxBodySize)
            // A body too large may still be on its way: read (and dropped) while the answer lingers,
            // so that a client still sending it gets to read the answer.
            requestBody = BodyFramer(error == .bodyTooLarge ? .untilClose : .none)
            carry(machine.headRefused(), context: context)
        case .head(let head):
            takeHead(head, context: context)
            if head.expectsContinue, head.body != .none {
                // The body is read (or drained) in any case; a client waiting for this would stall.
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 100 Continue\r\n\r\n")), promise: nil)
            }
            // A small body is read whole before the decision: a route may count the cost from it, and
            // the limiter then answers in line.
            var collect = head.body == .chunked
            if case .length(let length) = head.body { collect = length <= ByteListenerShared.collectedBodySize }
            carry(
                machine.headParsed(keepAlive: head.keepAlive, hasBody: head.body != .none, upgrade: head.upgrade, collectBody: collect),
                context: context)
        }
    }

    /// Makes the request's exchange and its pending head (the head as the upstream gets it, the fields
    /// that carry the key, its kind) and moves past the head. A function of its own so that nothing of it
    /// outlives it on the stack: the head's buffer then has one owner when it is forwarded, and grows in
    /// place.
    private func takeHead(_ head: RequestHead, context: ChannelHandlerContext) {
        let client = clientAddress(context: context)
        // The reloadable settings, read once per request.
        settings = shared.live.current
        let forwardCredentials = settings.forwarding.forwardCredentials
        let request = inbound.withUnsafeReadableBytes { bytes in
            // A request like the last one of this connection (same method, target and key fields)
            // reuses what was made for it, and may reuse the limiter's admission.
            let kind: RequestKind?
            let method: HTTPRequest.Method?
            let target: (path: String, authority: String?)
            let credentials: HTTPFields
            if let kept, kept.matches(head, in: bytes) {
                kind = kept
                (method, target, credentials) = (kept.method, (kept.path, nil), kept.credentials)
            } else {
                method = Self.method(head, in: bytes)
                target = Self.originForm(String(decoding: bytes[head.target], as: UTF8.self), method: head.method)
                credentials = Self.credentials(bytes, head)
                kind = method.flatMap { RequestKind(head, method: $0, path: target.path, credentials: credentials, in: bytes) }
            }
            // The last request's head buffer again, when the upstream connection has written it.
            var upstreamHead = spareUpstreamHead.take() ?? ByteBuffer()
            upstreamHead.clear()
            upstreamHead.reserveCapacity(head.length + 256)
            // An absolute-form target's authority stands for the Host field (RFC 9112 §3.2.2).
            if let method {
                writeRequestLine(
                    method: method, head: head, path: target.path, authority: target.authority, in: bytes, into: &upstreamHead)
            }
            FieldRewriter.writeRequestFields(
                bytes, fields: head.fields, forwardCredentials: forwardCredentials, client: client,
                dropTraceContext: tracing != nil, into: &upstreamHead)
            if head.upgrade { FieldRewriter.writeUpgradeFields(bytes, fields: head.fields, into: &upstreamHead) }
            return (method: method, path: target.path, credentials: credentials, upstreamHead: upstreamHead, kind: kind)
        }
        exchange = makeExchange(method: request.method, path: request.path, version: head.version)
        if let tracing {
            trace = inbound.withUnsafeReadableBytes { RequestTrace(tracing, head: head, in: $0, method: request.method, path: request.path) }
        }
        inbound.moveReaderIndex(forwardBy: head.length)
        requestBody = BodyFramer(head.body, maxBodySize: parser.limits.maxBodySize)
        parser = RequestHeadParser(limits: Self.limits(shared, settings))
        pendingHead = (request.credentials, request.upstreamHead, head.body, request.kind)
    }

    /// The declared body, when it is all at hand.
    private var bodyAtHand: ByteBuffer? {
        switch pendingHead?.body {
        case .none?: return ByteBuffer()
        case .length(let length)?: return inbound.getSlice(at: inbound.readerIndex, length: length)
        case .chunked?: return chunkedBodyAtHand
        case .untilClose?, nil: return nil
        }
    }

    /// A chunked body's content when it has all arrived within `ByteListenerShared.collectedBodySize`. Read
    /// again from its start as more arrives: bounded by that size.
    private var chunkedBodyAtHand: ByteBuffer? {
        var probe = BodyFramer(.chunked, maxBodySize: ByteListenerShared.collectedBodySize)
        var content = ByteBuffer()
        let progress = inbound.withUnsafeReadableBytes { bytes in
            probe.advance(bytes) { content.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[$0])) }
        }
        guard case .ended = progress else { return nil }
        return content
    }

    /// The body to collect will not be at hand: too large to hold, or its framing broke (the relay
    /// answers that). The limiter is asked without it.
    private var bodyBeyondCollecting: Bool {
        guard pendingHead?.body == .chunked else { return false }
        var probe = BodyFramer(.chunked, maxBodySize: ByteListenerShared.collectedBodySize)
        if case .failed = probe.advance(inbound) { return true }
        return inbound.readableBytes > 2 * ByteListenerShared.collectedBodySize
    }

    /// Asks the limiter about the request whose head (and small body) is in.
    private func decidePending(context: ChannelHandlerContext) {
        // The credentials and kind alone: a copy of the whole pending head would hold its buffer
        // while the request is forwarded (in `decide`'s call), and the buffer would be copied to grow.
        guard let credentials = pendingHead?.credentials, let exchange, let path = exchange.path else { return }
        guard let method = exchange.method else {
            problem = HTTP1Error.invalidRequestLine.problem(maxHeadSize: shared.maxHeadSize, maxBodySize: parser.limits.maxBodySize)
            carry(machine.decided(admitted: false), context: context)
            return
        }
        decide(method: method, path: path, fields: credentials, kind: pendingHead?.kind, body: bodyAtHand, context: context)
    }

    /// The head being decided: the fields that carry its key (all the limiter reads of them), the head
    /// as the upstream gets it but for the admitted identity's fields and the empty line, and its body's
    /// framing.
    private var pendingHead: (credentials: HTTPFields, upstreamHead: ByteBuffer, body: BodyFraming, kind: RequestKind?)?

    /// The kind of this connection's last request, with the limiter's admission of it when it has one:
    /// the next request alike is checked against the store alone while the admission stands.
    private var kept: RequestKind?

    /// The client's address as `X-Forwarded-For` and the access log give it, read once per connection.
    private var clientAddressCache: String??

    private func clientAddress(context: ChannelHandlerContext) -> String? {
        if let cached = clientAddressCache { return cached }
        let address = context.channel.remoteAddress?.ipAddress
        clientAddressCache = .some(address)
        return address
    }

    /// The request's method; a token the parser does not know is made a `String` of (nil if it is not
    /// a method `HTTPRequest` accepts).
    private static func method(_ head: RequestHead, in bytes: UnsafeRawBufferPointer) -> HTTPRequest.Method? {
        switch head.method {
        case .get: .get
        case .head: .head
        case .post: .post
        case .put: .put
        case .delete: .delete
        case .options: .options
        case .patch: .patch
        case .trace: .trace
        case .connect: .connect
        case .other: HTTPRequest.Method(String(decoding: bytes[head.methodRange], as: UTF8.self))
        }
    }

    /// The request line, `Host` and the body's framing as the upstream gets them: the upstream URL's
    /// path prefix before the client's path and query; the body's framing as the client sent it (its
    /// bytes are relayed unchanged); an HTTP/1.0 client's request as HTTP/1.0, so that the answer it gets
    /// is not chunked.
    private func writeRequestLine(
        method: HTTPRequest.Method, head: RequestHead, path: String, authority: String?, in bytes: UnsafeRawBufferPointer,
        into out: inout ByteBuffer
    ) {
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[head.methodRange]))
        out.writeStaticString(" ")
        out.writeString(shared.target.pathPrefix)
        out.writeString(path)
        out.writeStaticString(head.version == .http10 ? " HTTP/1.0\r\nHost: " : " HTTP/1.1\r\nHost: ")
        if let authority {
            out.writeString(authority)
        } else if let host = head.host {
            out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[host]))
        } else {
            out.writeString(shared.target.authority)
        }
        out.writeStaticString("\r\n")
        switch head.body {
        case .length(let length):
            out.writeStaticString("Content-Length: ")
            out.writeString(String(length))
            out.writeStaticString("\r\n")
        case .chunked:
            out.writeStaticString("Transfer-Encoding: chunked\r\n")
        case .none, .untilClose:
            if [.post, .put, .patch].contains(method) { out.writeStaticString("Content-Length: 0\r\n") }
        }
    }

    /// The fields that carry an API key, all of them (a repeated one is refused): what the limiter
    /// reads of the head.
    private static func credentials(_ bytes: UnsafeRawBufferPointer, _ head: RequestHead) -> HTTPFields {
        var fields = HTTPFields()
        guard head.authorization != nil || head.apiKeyField != nil else { return fields }
        bytes.forEachField(in: head.fields) { name, value in
            let fieldName: HTTPField.Name
            if name.count == 13, bytes.equalsIgnoringCase(name, "authorization") {
                fieldName = .authorization
            } else if name.count == 15, bytes.equalsIgnoringCase(name, "wazzapi-api-key") {
                fieldName = APIKeyExtractor.keyHeader
            } else {
                return
            }
            fields.append(HTTPField(name: fieldName, value: String(decoding: bytes[value], as: UTF8.self)))
        }
        return fields
    }

    /// The path (with query) and authority of a request target: an absolute-form one
    /// (`http://host/path`) split, the others as they are.
    static func originForm(_ target: String, method: HTTP1Method) -> (path: String, authority: String?) {
        guard !target.hasPrefix("/"), method != .connect, target != "*", let scheme = target.range(of: "://") else {
            return (target, nil)
        }
        let rest = target[scheme.upperBound...]
        let end = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let path = rest[end...]
        return (path.hasPrefix("/") ? String(path) : "/" + path, String(rest[..<end]))
    }

    /// Marks every byte of `buffer` used, without `clear()`: its storage may still be shared with a write
    /// in progress, which `clear()` would copy. The next read's buffer takes its place (`append`).
    private static func consume(_ buffer: inout ByteBuffer) {
        buffer.moveReaderIndex(to: buffer.writerIndex)
    }

    /// Appends what was read to the bytes not used yet. With none left (the usual case: a request or an
    /// answer arrives in one read), the read's buffer is taken as it is, without a copy. Otherwise the
    /// space of bytes already used is given back first: a connection that lives for many requests
    /// would otherwise grow its buffer for ever. Offsets the parsers hold count from the first unread
    /// byte, which stays the first.
    private static func append(_ read: ByteBuffer, to buffer: inout ByteBuffer) {
        if buffer.readableBytes == 0 {
            buffer = read
            return
        }
        if buffer.readerIndex >= 4096 { buffer.discardReadBytes() }
        var read = read
        buffer.writeBuffer(&read)
    }

    private func decide(
        method: HTTPRequest.Method, path: String, fields: HTTPFields, kind: RequestKind?, body: ByteBuffer?, context: ChannelHandlerContext
    ) {
        trace?.checkStarted()
        let limiter = shared.limiter
        // The last admission of this kind, when this request is like the connection's last one.
        let reusable = kind != nil && kind === kept ? kind?.admission : nil
        if limiter.judgesWithoutSuspending {
            if let reusable, let judgement = limiter.judgeNow(reusing: reusable) {
                decided(judgement, context: context)
                return
            }
            // Judged in full; the admission (if any) is kept with the request's kind for the next one alike.
            var admission: RateLimiter.Admission?
            let judgement = limiter.judgeNow(method: method, path: path, headers: fields, body: body, keeping: &admission)
            keep(kind, admission)
            if let judgement {
                decided(judgement, context: context)
                return
            }
        }
        // A registry lookup or a store round trip: in a task on this loop, then back to the handler.
        let bound = NIOLoopBound((self, context, kind), eventLoop: context.eventLoop)
        let loop = context.eventLoop
        Task(executorPreference: executor) {
            let result: (judgement: RateLimiter.Judgement, admission: RateLimiter.Admission?)
            if let reusable, let judgement = await limiter.judge(reusing: reusable) {
                result = (judgement, reusable)
            } else {
                result = await limiter.judgeKeeping(method: method, path: path, headers: fields) { limit in
                    // A body not collected is larger than what is collected: too large for a route that
                    // counts at most that much.
                    guard let body else {
                        if limit <= ByteListenerShared.collectedBodySize { throw NIOTooManyBytesError(maxBytes: limit) }
                        throw ByteListenerError.bodyNotAtHand
                    }
                    if body.readableBytes > limit { throw NIOTooManyBytesError(maxBytes: limit) }
                    return body
                }
            }
            loop.execute {
                let (handler, context, kind) = bound.value
                handler.keep(kind, result.admission)
                handler.decided(result.judgement, context: context)
            }
        }
    }

    /// Keeps the request's kind, with its admission (nil: none to reuse), for the next request alike.
    private func keep(_ kind: RequestKind?, _ admission: RateLimiter.Admission?) {
        guard let kind else { return }
        kind.admission = admission
        kept = kind
    }

    private func decided(_ judgement: RateLimiter.Judgement, context: ChannelHandlerContext) {
        trace?.checkEnded(judgement)
        switch judgement {
        case .refused(let refusal, let outcome):
            exchange?.outcome = outcome
            problem = refusal
            carry(machine.decided(admitted: false), context: context)
        case .admitted(let outcome):
            exchange?.outcome = outcome
            carry(machine.decided(admitted: true), context: context)
        }
    }

    /// Sends the body bytes at hand upstream (or drops them, for a request answered here), up to the
    /// body's end; what follows is the next request's.
    private func relayRequestBody(forward: Bool, context: ChannelHandlerContext) {
        // Connecting: the bytes wait. Answered already (early, by the upstream): the rest is dropped.
        if forward, upstream == nil, standInRequest == nil, !answeredAwaitingBody { return }
        let progress = requestBody.advance(inbound)
        let taken: Int
        switch progress {
        case .needMore:
            taken = inbound.readableBytes
        case .ended(let bodyBytes):
            taken = bodyBytes
        case .failed(let error):
            // The body's framing broke (or passed the size limit): nothing more of this connection can
            // be trusted. Answered if no answer has begun, else cut off.
            inbound.clear()
            if forward, case .head = response {
                dropUpstream()
                problem = error.problem(maxHeadSize: shared.maxHeadSize, maxBodySize: parser.limits.maxBodySize)
                carry(machine.upstreamFailed(), context: context)
            } else {
                context.close(promise: nil)
            }
            return
        }
        let slice = inbound.readSlice(length: taken)!
        if forward, let upstream, taken > 0 {
            upstream.writeAndFlush(slice, promise: nil)
            bodyFlushed = true
        } else if forward, standInRequest != nil, taken > 0 {
            sendToStandIn(slice, context: context)
        }
        guard case .ended = progress else { return }
        _ = machine.requestBodyEnded()
        if answeredAwaitingBody {
            answeredAwaitingBody = false
            carry(machine.responseEnded(requestsWaiting: inbound.readableBytes > 0), context: context)
        }
    }

    // MARK: Upstream

    private func forward(context: ChannelHandlerContext) {
        guard case .some((_, var bytes, let body, _)) = pendingHead, let exchange, let method = exchange.method else { return }
        // Forgotten at once, so that the head's buffer has one owner and grows in place.
        pendingHead = nil
        if let identity = exchange.outcome?.identity {
            bytes.writeFieldLine("X-Tollgate-Organization", identity.organization)
            bytes.writeFieldLine("X-Tollgate-Plan", identity.plan)
            bytes.writeFieldLine("X-Tollgate-Key-Id", identity.keyID)
        }
        trace?.forwardStarted(into: &bytes)
        bytes.writeStaticString("\r\n")
        response = .head(ResponseHeadScanner(requestMethod: method == .head ? .head : .other))
        resendable = body == .none && [.get, .head, .put, .delete, .options].contains(method) ? bytes : nil
        if shared.standIn != nil {
            standInRequest = StandInUpstream.Exchange()
            sentAt = .now
            sendToStandIn(bytes, context: context)
            process(context: context)
            return
        }
        if let upstream, upstream.isActive {
            upstreamReused = true
            spareUpstreamHead = bytes
            send(bytes, on: upstream, context: context)
            return
        }
        spareUpstreamHead = bytes
        connect(thenSend: bytes, context: context)
    }

    private func connect(thenSend bytes: ByteBuffer, context: ChannelHandlerContext) {
        upstreamReused = false
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let target = shared.target
        let tls = shared.tls
        ClientBootstrap(group: context.eventLoop)
            .connectTimeout(TimeAmount(shared.connectTimeout))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tls, serverHostname: target.isIPAddress ? nil : target.host))
                    }
                }
            }
            .connect(host: shared.target.host, port: shared.target.port)
            .assumeIsolated()
            .whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .success(let channel):
                    guard context.channel.isActive else {
                        channel.close(promise: nil)
                        return
                    }
                    let relay = UpstreamRelay(owner: handler, ownerContext: context)
                    do {
                        try channel.pipeline.syncOperations.addHandler(relay)
                    } catch {
                        channel.close(promise: nil)
                        handler.upstreamFailed(.badGateway("the upstream connection could not be set up"), context: context)
                        return
                    }
                    handler.upstream = channel
                    handler.relay = relay
                    handler.send(bytes, on: channel, context: context)
                case .failure:
                    handler.shared.accessLog.metrics.upstream("refused")
                    handler.upstreamFailed(.badGateway("the message API cannot be reached"), context: context)
                }
            }
    }

    private func send(_ head: ByteBuffer, on upstream: Channel, context: ChannelHandlerContext) {
        // The head goes out with the body bytes at hand, if any: one write for both.
        upstream.write(head, promise: nil)
        sentAt = .now
        setUpstreamDeadline(in: settings.forwarding.responseTimeout, context: context)
        bodyFlushed = false
        process(context: context)
        if !bodyFlushed { upstream.flush() }
    }

    /// The buffers of the last request head sent upstream and of the last answer head written to the
    /// client, used again for the next ones once their writes are done (then nothing is allocated).
    private var spareUpstreamHead: ByteBuffer?
    private var spareResponseHead: ByteBuffer?

    /// The request body's relay wrote and flushed (what `send` wrote before went with it).
    private var bodyFlushed = false

    private static func write(_ fields: HTTPFields, to bytes: inout ByteBuffer) {
        for field in fields {
            bytes.writeString(field.name.rawName)
            bytes.writeString(": ")
            bytes.writeString(field.value)
            bytes.writeString("\r\n")
        }
    }

    /// Writes the stand-in the bytes an upstream would be sent; its answer, once the request is whole,
    /// comes from the event loop after this event, as an upstream's would (so that a pipelined request
    /// behind it is handled from there, not deeper in this stack).
    private func sendToStandIn(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        guard let answer = standInRequest?.receive(bytes) else { return }
        standInRequest = nil
        standInAnswering = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = bound.value
            guard handler.standInAnswering else { return }  // the exchange was given up
            handler.standInAnswering = false
            handler.upstreamBytesArrived(answer, context: context)
        }
    }

    /// The upstream accepted the protocol switch: its `101` goes to the client, and from here the
    /// connection is a tunnel, with no timeout: it lasts until either side closes.
    private func openTunnel(_ head: ResponseHead, context: ChannelHandlerContext) {
        guard case .forwarding(let request) = machine.state, request.upgrade else {
            // A switch nobody asked for: nothing after it can be read as HTTP.
            shared.accessLog.metrics.upstream("error")
            dropUpstream()
            upstreamFailed(.badGateway("the upstream switched protocols unasked"), context: context)
            return
        }
        upstreamDeadline = nil
        shared.accessLog.metrics.upstreamLatency.record(ContinuousClock.now - sentAt)
        shared.accessLog.metrics.upstream(status: head.status)
        writeResponseHead(head, context: context)
        upstreamBytes.moveReaderIndex(forwardBy: head.length)
        response = .tunnel
        if upstreamBytes.readableBytes > 0 { context.write(wrapOutboundOut(upstreamBytes.slice()), promise: nil) }
        Self.consume(&upstreamBytes)
        context.flush()
        if let exchange { log(status: head.status, exchange, context: context) }
        exchange = nil
        // What the client sends from here, and what it sent behind the head already, goes through as it is.
        requestBody = BodyFramer(.untilClose)
        carry(machine.responseHeadSent(opensTunnel: true), context: context)
        process(context: context)
    }

    fileprivate func upstreamRead(_ buffer: ByteBuffer, from channel: Channel, context: ChannelHandlerContext) {
        guard channel === upstream else { return }  // a connection given up already
        upstreamBytesArrived(buffer, context: context)
    }

    /// The answer's next bytes, from the upstream connection or the stand-in.
    private func upstreamBytesArrived(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        Self.append(buffer, to: &upstreamBytes)
        while true {
            switch response {
            case .tunnel:
                context.writeAndFlush(wrapOutboundOut(upstreamBytes.slice()), promise: nil)
                Self.consume(&upstreamBytes)
                return
            case .none:
                // Bytes no request asked for: the connection cannot be reused.
                Self.consume(&upstreamBytes)
                dropUpstream()
                return
            case .head(var scanner):
                let outcome = scanner.scan(upstreamBytes)
                switch outcome {
                case .needMore:
                    response = .head(scanner)
                    return
                case .failed:
                    shared.accessLog.metrics.upstream("error")
                    dropUpstream()
                    upstreamFailed(.badGateway("the upstream's response is not valid HTTP/1.1"), context: context)
                    return
                case .head(let head):
                    if head.isInterim {
                        // A 100 Continue was sent already; other interim answers are not relayed.
                        upstreamBytes.moveReaderIndex(forwardBy: head.length)
                        response = .head(ResponseHeadScanner(requestMethod: scanner.requestMethod))
                        continue
                    }
                    resendable = nil
                    if head.opensTunnel, head.status == 101 {
                        openTunnel(head, context: context)
                        return
                    }
                    setUpstreamDeadline(in: settings.forwarding.readTimeout, context: context)
                    shared.accessLog.metrics.upstreamLatency.record(ContinuousClock.now - sentAt)
                    trace?.upstreamAnswered(status: head.status, since: sentAt)
                    shared.accessLog.metrics.upstream(status: head.status)
                    dechunking = head.body == .chunked && exchange?.version == .http10
                    _ = machine.responseHeadSent(opensTunnel: false, closesConnection: dechunking)
                    writeResponseHead(head, context: context)
                    upstreamBytes.moveReaderIndex(forwardBy: head.length)
                    response = .body(BodyFramer(head.body), reusable: head.keepAlive, status: head.status)
                }
            case .body(var framer, let reusable, let status):
                if upstreamBytes.readableBytes > 0 { setUpstreamDeadline(in: settings.forwarding.readTimeout, context: context) }
                let progress: BodyFramer.Progress
                if dechunking {
                    let start = upstreamBytes.readerIndex
                    var content: [Range<Int>] = []
                    progress = upstreamBytes.withUnsafeReadableBytes { bytes in framer.advance(bytes) { content.append($0) } }
                    for range in content {
                        context.write(wrapOutboundOut(upstreamBytes.getSlice(at: start + range.lowerBound, length: range.count)!), promise: nil)
                    }
                } else {
                    progress = framer.advance(upstreamBytes)
                }
                switch progress {
                case .needMore:
                    if !dechunking, upstreamBytes.readableBytes > 0 { context.write(wrapOutboundOut(upstreamBytes.slice()), promise: nil) }
                    Self.consume(&upstreamBytes)
                    response = .body(framer, reusable: reusable, status: status)
                    context.flush()
                    return
                case .ended(let bodyBytes):
                    let body = upstreamBytes.readSlice(length: bodyBytes)!
                    if !dechunking, bodyBytes > 0 { context.write(wrapOutboundOut(body), promise: nil) }
                    // Bytes past the answer's end: the upstream cannot be trusted with another request.
                    let clean = upstreamBytes.readableBytes == 0
                    Self.consume(&upstreamBytes)
                    finishResponse(status: status, reusable: reusable && clean, context: context)
                    return
                case .failed:
                    cutOff(status: status, context: context)
                    return
                }
            }
        }
    }

    /// Gives the upstream `timeout` from now: for its answer's head (`upstream.response_timeout`, 504
    /// after it) or for the next part of its answer (`upstream.read_timeout`; after it the answer, which
    /// has begun, is cut off and the client learns of it from the connection closing).
    private func setUpstreamDeadline(in timeout: Duration, context: ChannelHandlerContext) {
        let deadline = NIODeadline.now() + TimeAmount(timeout)
        upstreamDeadline = deadline
        if let timer = upstreamTimer {
            if timer.deadline <= deadline { return }
            timer.task.cancel()
        }
        scheduleUpstreamTimer(at: deadline, context: context)
    }

    private func scheduleUpstreamTimer(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let task = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.upstreamTimer = nil
            self.upstreamTimerFired(context: context)
        }
        upstreamTimer = (task, deadline)
    }

    private func upstreamTimerFired(context: ChannelHandlerContext) {
        guard let deadline = upstreamDeadline else { return }
        if NIODeadline.now() < deadline {
            scheduleUpstreamTimer(at: deadline, context: context)
            return
        }
        upstreamDeadline = nil
        switch response {
        case .none, .tunnel:
            return
        case .head:
            shared.accessLog.metrics.upstream("timeout")
            dropUpstream()
            upstreamFailed(.gatewayTimeout("the message API did not answer in time"), context: context)
        case .body(_, _, let status):
            shared.accessLog.metrics.upstream("timeout")
            cutOff(status: status, context: context)
        }
    }

    /// Closes the upstream connection: it cannot carry another request.
    private func dropUpstream() {
        // Forgotten before it is closed: closing may report the channel inactive at once, and a
        // connection given up is no failure to answer.
        let channel = upstream
        upstream = nil
        relay = nil
        standInRequest = nil
        standInAnswering = false
        channel?.close(promise: nil)
    }

    fileprivate func upstreamInactive(_ channel: Channel, context: ChannelHandlerContext) {
        guard channel === upstream else { return }
        upstream = nil
        relay = nil
        switch response {
        case .none:
            return
        case .head:
            if let resend = resendable, upstreamReused, upstreamBytes.readableBytes == 0 {
                // The upstream may have closed the connection idle as the request left: once more, on a
                // new one (an idempotent request without a body, so sending it twice does no harm).
                resendable = nil
                upstreamDeadline = nil
                connect(thenSend: resend, context: context)
                return
            }
            shared.accessLog.metrics.upstream("error")
            upstreamFailed(.badGateway("the message API cannot be reached"), context: context)
        case .tunnel:
            carry(machine.tunnelEnded(), context: context)
        case .body(var framer, _, let status):
            if case .ended = framer.closed() {
                context.flush()
                finishResponse(status: status, reusable: false, context: context)
            } else {
                cutOff(status: status, context: context)
            }
        }
    }

    private func writeResponseHead(_ head: ResponseHead, context: ChannelHandlerContext) {
        // The parts of the outcome the fields are made of (not the whole outcome: no copy of its strings).
        var rateLimit: RateLimitFieldWriter.Fields?
        if let exchange, let decision = exchange.outcome?.decision, let plan = exchange.outcome?.plan {
            rateLimit = .init(decision: decision, plan: plan, includesLegacy: exchange.outcome?.includesLegacyHeaders ?? false)
        }
        let replacingRateLimit = rateLimit?.isEmpty == false
        // The last answer's head buffer again, when the client connection has written it.
        var bytes = spareResponseHead.take() ?? context.channel.allocator.buffer(capacity: head.length + 256)
        bytes.clear()
        bytes.reserveCapacity(head.length + 256)
        upstreamBytes.withUnsafeReadableBytes { raw in
            // The status line as HTTP/1.1, whatever the upstream's version: the proxy speaks for it.
            let lineEnd = raw[..<head.fields.upperBound].firstIndex(of: HTTP1Byte.cr) ?? 8
            bytes.writeStaticString("HTTP/1.1")
            bytes.writeBytes(UnsafeRawBufferPointer(rebasing: raw[8..<lineEnd]))
            bytes.writeStaticString("\r\n")
            FieldRewriter.writeResponseFields(
                raw, fields: (lineEnd + 2)..<head.fields.upperBound, replacingRateLimit: replacingRateLimit, into: &bytes)
            if head.opensTunnel { FieldRewriter.writeUpgradeFields(raw, fields: (lineEnd + 2)..<head.fields.upperBound, into: &bytes) }
        }
        // The body is relayed as the upstream framed it, but to an HTTP/1.0 client, which knows no
        // chunked coding.
        if head.body == .chunked, !dechunking { bytes.writeStaticString("Transfer-Encoding: chunked\r\n") }
        if let rateLimit { RateLimitFieldWriter.write(rateLimit, into: &bytes) }
        if !head.hasDate {
            bytes.writeFieldLine("Date", HTTPDate.now())
        }
        if machine.closesAfterAnswer(requestsWaiting: inbound.readableBytes > 0) { bytes.writeStaticString("Connection: close\r\n") }
        bytes.writeStaticString("\r\n")
        context.write(wrapOutboundOut(bytes), promise: nil)
        spareResponseHead = bytes
    }

    private func finishResponse(status: Int, reusable: Bool, context: ChannelHandlerContext) {
        upstreamDeadline = nil
        response = .none
        context.flush()
        if let exchange { log(status: status, exchange, context: context) }
        exchange = nil
        guard requestBody.isComplete else {
            // The upstream answered before the request's body was all sent: the rest is drained, not
            // sent (the upstream may not read it), and the upstream connection is not used again.
            dropUpstream()
            answeredAwaitingBody = true
            process(context: context)
            return
        }
        if !reusable { dropUpstream() }
        carry(machine.responseEnded(requestsWaiting: inbound.readableBytes > 0), context: context)
    }

    /// An answer that began and cannot be completed: the client learns it from the connection closing.
    private func cutOff(status: Int, context: ChannelHandlerContext) {
        upstreamDeadline = nil
        response = .none
        dropUpstream()
        if let exchange { log(status: status, exchange, context: context) }
        exchange = nil
        context.close(promise: nil)
    }

    private func upstreamFailed(_ failure: Problem, context: ChannelHandlerContext) {
        upstreamDeadline = nil
        response = .none
        problem = failure
        carry(machine.upstreamFailed(), context: context)
    }

    // MARK: Answers and actions

    private func answer(closeAfter: Bool, context: ChannelHandlerContext) {
        guard let problem else { return }
        self.problem = nil
        var (head, body) = problem.responseParts()
        if let outcome = exchange?.outcome, outcome.refusal == nil {
            // Admitted and counted, then the upstream failed: the fields say what it cost.
            outcome.apply(to: &head.headerFields)
        }
        head.headerFields[.date] = HTTPDate.now()
        if closeAfter || machine.closesAfterAnswer(requestsWaiting: inbound.readableBytes > 0) { head.headerFields[.connection] = "close" }
        var bytes = ByteBuffer()
        bytes.writeString("HTTP/1.1 \(head.status.code) \(head.status.reasonPhrase)\r\n")
        Self.write(head.headerFields, to: &bytes)
        bytes.writeString("\r\n")
        bytes.writeBuffer(&body)
        context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
        if let exchange { log(status: head.status.code, exchange, context: context) }
        exchange = nil
        if requestBody.isComplete || closeAfter {
            carry(machine.responseEnded(requestsWaiting: inbound.readableBytes > 0), context: context)
        } else {
            // The request's body is drained first, so that the next request is found after it.
            answeredAwaitingBody = true
            process(context: context)
        }
    }

    private func carry(_ action: ConnectionStateMachine<ContinuousClock>.Action, context: ChannelHandlerContext) {
        switch action {
        case .none, .hold:
            break
        case .decide:
            decidePending(context: context)
        case .collectBody:
            if bodyAtHand != nil || bodyBeyondCollecting { carry(machine.bodyCollected(), context: context) }
        case .parseHead:
            parseHead(context: context)
        case .relayRequestBody:
            relayRequestBody(forward: true, context: context)
        case .discardRequestBody:
            relayRequestBody(forward: false, context: context)
        case .read:
            context.read()
        case .forward(let resume):
            forward(context: context)
            if resume { context.read() }
        case .answer(let closeAfter, let resume):
            answer(closeAfter: closeAfter, context: context)
            if resume, context.channel.isActive { context.read() }
        case .nextRequest(let deadline, let resume):
            schedule(deadline, context: context)
            if resume { context.read() }
            process(context: context)
            if inputWasClosed, machine.state == .reading || machine.state == .idle {
                // What is left is part of a request the client will never finish.
                carry(machine.inputClosed(bodyAtHand: false), context: context)
            }
        case .scheduleIdleTimeout(let deadline):
            schedule(deadline, context: context)
        case .close:
            closeAfterLinger(context: context)
        case .abandon:
            dropUpstream()
            context.close(promise: nil)
        case .halfCloseUpstream:
            upstream?.close(mode: .output, promise: nil)
        case .endTunnel:
            // Nothing more goes through: the client learns of the end at once, after what was relayed.
            requestBody = BodyFramer(.none)
            closeAfterLinger(context: context)
        }
    }

    /// Stops writing and reads what the client still sends for a while before closing: closing at once
    /// with unread input makes the kernel reset the connection, and the client may lose the last answer.
    private func closeAfterLinger(context: ChannelHandlerContext) {
        idleTask?.cancel()
        context.flush()
        if requestBody.isComplete {
            // Nothing more is expected: the end of output tells the client at once (and ends an answer
            // read until close). A client still sending a body would take it for an error, so it is
            // left to read the answer and close first.
            let channel = context.channel
            let halfClosed = context.eventLoop.makePromise(of: Void.self)
            halfClosed.futureResult.whenFailure { _ in channel.close(promise: nil) }
            context.close(mode: .output, promise: halfClosed)
        }
        idleTask = context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTime) {
            context.close(promise: nil)
        }
    }

    static let lingerTime = TimeAmount.seconds(2)

    /// Sets the idle check, unless one is set already: deadlines only move later, and a check that comes
    /// early sets the next one (the state machine says when). One timer per idle period, not one per
    /// request.
    private func schedule(_ deadline: ContinuousClock.Instant?, context: ChannelHandlerContext) {
        guard let deadline, idleTask == nil else { return }
        idleTask = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(ContinuousClock.now.duration(to: deadline))) {
            self.idleTask = nil
            self.carry(self.machine.idleTimeoutFired(), context: context)
        }
    }

    private func log(status: Int, _ exchange: Exchange, context: ChannelHandlerContext) {
        trace?.finish(status: status)
        trace = nil
        guard let method = exchange.method, settings.accessLog != .off else {
            // A head refused before its method was known, or no access log: counted, not logged.
            shared.accessLog.metrics.response(status)
            return
        }
        shared.accessLog.record(
            status: status, method: method, path: exchange.path, started: exchange.started,
            client: clientAddress(context: context), outcome: exchange.outcome, logger: shared.logger)
    }
}

/// Why the byte-level listener could not judge a request.
enum ByteListenerError: Error {
    /// The route counts its cost from the body, which had not arrived whole with the head.
    case bodyNotAtHand
}

/// The upstream side of a `ByteListenerHandler`: hands what the upstream sends to its owner, on the
/// same event loop, and reads from the upstream only while the client takes what it is sent.
private final class UpstreamRelay: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer

    private var owner: ByteListenerHandler?
    private let ownerContext: ChannelHandlerContext
    private var context: ChannelHandlerContext?
    private var readHeld = false

    init(owner: ByteListenerHandler, ownerContext: ChannelHandlerContext) {
        self.owner = owner
        self.ownerContext = ownerContext
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func read(context: ChannelHandlerContext) {
        if ownerContext.channel.isWritable {
            context.read()
        } else {
            readHeld = true
        }
    }

    /// The client's connection is writable again.
    func resumeReading() {
        guard readHeld, let context else { return }
        readHeld = false
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        owner?.upstreamRead(unwrapInboundIn(data), from: context.channel, context: ownerContext)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        owner?.upstreamWritabilityChanged(context.channel, context: ownerContext)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Once only, and the cycle between the two handlers ends here.
        let owner = self.owner
        self.owner = nil
        owner?.upstreamInactive(context.channel, context: ownerContext)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
