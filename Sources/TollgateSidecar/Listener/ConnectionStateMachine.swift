/// The life of one client connection of the sidecar's listener, as a plain value: which request is
/// where (reading its head, deciding, forwarding, streaming the answer, answering itself), what to do
/// with bytes and reads meanwhile, when to close. The channel handler feeds it events and carries out
/// the action each returns; it does no I/O and reads no clock but the one it is given, so every path
/// through it is tested with plain values.
///
/// Rules it keeps:
/// - One request at a time, answers in order: bytes of a pipelined request wait (`hold`) until the
///   answer before them is complete, and reads stop while bytes wait (a pipelined request, or a body
///   while the limiter decides), so a client cannot make the proxy buffer without bound.
/// - A request refused (by the limiter, or for its framing before it was forwarded) has its body
///   drained, not forwarded; a connection whose request could not be read to its end closes after the
///   answer, since the next request's first byte cannot be found.
/// - Close after the answer when the request asked for it; when the client closed its side or the
///   listener is shutting down (quiescing), once every request already received is answered; close at
///   once when idle and shutting down.
/// - Idle timeout: no inbound byte for `idleTimeout` while no request is being answered (the time a
///   client takes to send a head counts, so a slow head cannot hold a connection for ever).
struct ConnectionStateMachine<C: Clock>: Sendable {
    /// What the handler does next.
    enum Action: Equatable {
        case none
        /// Give the bytes at hand to the request-head parser.
        case parseHead
        /// Keep the bytes for later (a pipelined request), in order.
        case hold
        /// Send the bytes upstream as the request's body (its framing follows them), or through the tunnel.
        case relayRequestBody
        /// The request was answered without forwarding: read its body to its end and drop it.
        case discardRequestBody
        /// Ask the channel for more bytes.
        case read
        /// Ask the limiter about the request whose head was parsed; reads wait for its answer.
        case decide
        /// Keep the bytes at hand: the limiter is asked once the body is all here (`bodyCollected`).
        case collectBody
        /// The request passed: connect upstream and send its head (with the body bytes held, if any).
        case forward(resumeReading: Bool)
        /// Write the proxy's own answer (a refusal, a framing error, an upstream failure); then close if asked.
        case answer(closeAfter: Bool, resumeReading: Bool)
        /// The answer is complete and the connection stays: look for the next request in the bytes held,
        /// and read again.
        case nextRequest(idleDeadline: C.Instant?, resumeReading: Bool)
        /// Check the idle timeout at this instant.
        case scheduleIdleTimeout(C.Instant)
        case close
        /// The client is gone in the middle of an exchange: stop it (release or close the upstream
        /// connection, log the request as 499 if it had no answer).
        case abandon
        /// The client is done sending through the tunnel: end the upstream connection's output too (what
        /// the upstream still sends is relayed).
        case halfCloseUpstream
        /// The upstream ended the tunnel: end the client's connection too, once what was relayed is out.
        case endTunnel
    }

    /// The request being handled.
    struct Request: Equatable, Sendable {
        /// The client may send another request after this one's answer.
        var keepAlive: Bool
        /// The request's body has been read to its end (true at once for a request without one).
        var bodyRead: Bool
        /// A protocol switch (WebSocket) is asked for.
        var upgrade: Bool
    }

    enum State: Equatable {
        /// Between requests.
        case idle
        /// Bytes of a head arrived; it is not complete.
        case reading
        /// The head is in; its (small) body is read whole before the limiter is asked, since a route may
        /// count the request's cost from it.
        case collecting(Request)
        /// The head is in; the limiter decides.
        case deciding(Request)
        /// Admitted: the request goes upstream; no answer yet.
        case forwarding(Request)
        /// The upstream's answer is being relayed.
        case streaming(Request)
        /// A protocol switch was accepted: bytes flow both ways until either side closes.
        case tunnelling
        /// The proxy writes its own answer.
        case answering(Request, closeAfter: Bool)
        case closed
    }

    let clock: C
    let idleTimeout: C.Duration?
    private(set) var state = State.idle
    /// The last inbound byte, or the end of the last answer.
    private var lastActivity: C.Instant
    /// A read the channel asked for was held back.
    private var readHeld = false
    private var quiescing = false
    private var clientDoneSending = false

    init(clock: C, idleTimeout: C.Duration?) {
        self.clock = clock
        self.idleTimeout = idleTimeout
        lastActivity = clock.now
    }

    /// The connection closes once the answer in progress is out, as far as is known before it is
    /// written (what its `Connection` field says); `requestsWaiting`: bytes of a next request are held.
    func closesAfterAnswer(requestsWaiting: Bool) -> Bool {
        if (quiescing || clientDoneSending) && !requestsWaiting { return true }
        switch state {
        case .deciding(let request), .forwarding(let request), .streaming(let request):
            return !request.keepAlive
        case .answering(let request, let closeAfter):
            return closeAfter || !request.keepAlive
        case .collecting(let request):
            return !request.keepAlive
        case .idle, .reading, .tunnelling, .closed:
            return false
        }
    }

    private var idleDeadline: C.Instant? {
        idleTimeout.map { lastActivity.advanced(by: $0) }
    }

    /// The connection is open.
    mutating func activated() -> Action {
        lastActivity = clock.now
        return idleDeadline.map { .scheduleIdleTimeout($0) } ?? .none
    }

    /// Bytes arrived from the client.
    mutating func bytesArrived() -> Action {
        lastActivity = clock.now
        switch state {
        case .idle:
            state = .reading
            return .parseHead
        case .reading:
            return .parseHead
        case .collecting:
            return .collectBody
        case .forwarding(let request) where !request.bodyRead, .streaming(let request) where !request.bodyRead:
            return .relayRequestBody
        case .tunnelling:
            return .relayRequestBody
        case .answering(let request, _) where !request.bodyRead:
            return .discardRequestBody
        case .deciding, .forwarding, .streaming, .answering:
            return .hold
        case .closed:
            return .none
        }
    }

    /// The channel asks whether to read on; `bytesHeld`: bytes received are waiting their turn.
    ///
    /// Reads stop only once something waits (a pipelined request, or a body while the limiter
    /// decides), which bounds what a client can make the proxy hold to about one read; stopping at
    /// every request would cost two `epoll_ctl` calls a request.
    mutating func readRequested(bytesHeld: Bool) -> Action {
        switch state {
        case .idle, .reading, .collecting, .tunnelling:
            return .read
        case .forwarding(let request), .streaming(let request), .answering(let request, _):
            // A body still coming is read (with the upstream's back-pressure); what follows it waits.
            if !request.bodyRead || !bytesHeld { return .read }
            readHeld = true
            return .none
        case .deciding:
            if !bytesHeld { return .read }
            readHeld = true
            return .none
        case .closed:
            // Lingering after the last answer: what the client still sends is read and dropped.
            return .read
        }
    }

    /// A request head parsed; `collectBody`: its body is to be read whole before the decision.
    mutating func headParsed(keepAlive: Bool, hasBody: Bool, upgrade: Bool, collectBody: Bool = false) -> Action {
        guard case .reading = state else { return .none }
        let request = Request(keepAlive: keepAlive, bodyRead: !hasBody, upgrade: upgrade)
        if collectBody, hasBody {
            state = .collecting(request)
            return .collectBody
        }
        state = .deciding(request)
        return .decide
    }

    /// The body of the request being collected is all here (held, not yet relayed).
    mutating func bodyCollected() -> Action {
        guard case .collecting(let request) = state else { return .none }
        state = .deciding(request)
        return .decide
    }

    /// The head was refused for its framing or size: it is answered, never forwarded, and the
    /// connection closes after, as the next request's first byte cannot be trusted.
    mutating func headRefused() -> Action {
        guard case .reading = state else { return .none }
        state = .answering(Request(keepAlive: false, bodyRead: true, upgrade: false), closeAfter: true)
        return .answer(closeAfter: true, resumeReading: false)
    }

    /// The limiter's answer: forward the request, or answer it with a refusal.
    mutating func decided(admitted: Bool) -> Action {
        guard case .deciding(let request) = state else { return .none }
        // A body not yet read is needed now: relayed upstream, or drained.
        let resume = readHeld && !request.bodyRead
        if resume { readHeld = false }
        if admitted {
            state = .forwarding(request)
            return .forward(resumeReading: resume)
        }
        state = .answering(request, closeAfter: !request.keepAlive)
        return .answer(closeAfter: !request.keepAlive, resumeReading: resume)
    }

    /// The request's body has been read to its end (relayed or drained).
    mutating func requestBodyEnded() -> Action {
        switch state {
        case .forwarding(var request):
            request.bodyRead = true
            state = .forwarding(request)
        case .streaming(var request):
            request.bodyRead = true
            state = .streaming(request)
        case .answering(var request, let closeAfter):
            request.bodyRead = true
            state = .answering(request, closeAfter: closeAfter)
        case .deciding(var request):
            request.bodyRead = true
            state = .deciding(request)
        case .collecting(var request):
            request.bodyRead = true
            state = .collecting(request)
        case .idle, .reading, .tunnelling, .closed:
            break
        }
        return .none
    }

    /// The upstream's response head is relayed to the client; `closesConnection`: the answer's end can
    /// only be told by closing the connection (a body re-framed for an HTTP/1.0 client).
    mutating func responseHeadSent(opensTunnel: Bool, closesConnection: Bool = false) -> Action {
        guard case .forwarding(var request) = state else { return .none }
        if closesConnection { request.keepAlive = false }
        if opensTunnel, request.upgrade {
            state = .tunnelling
            return readHeld ? resumeHeldRead() : .none
        }
        state = .streaming(request)
        return .none
    }

    /// The upstream could not be reached or failed before its answer began: the proxy answers (502/504).
    /// Once the answer began, the client can only learn of the failure from the connection closing.
    mutating func upstreamFailed() -> Action {
        switch state {
        case .forwarding(let request):
            let closeAfter = !request.keepAlive || !request.bodyRead
            state = .answering(request, closeAfter: closeAfter)
            return .answer(closeAfter: closeAfter, resumeReading: false)
        case .streaming, .tunnelling:
            state = .closed
            return .close
        case .idle, .reading, .collecting, .deciding, .answering, .closed:
            return .none
        }
    }

    /// The answer (relayed or the proxy's own) has been written whole; `requestsWaiting`: bytes of a
    /// next request are held (answered even when the client has closed its side or the listener is
    /// shutting down: they were received).
    mutating func responseEnded(requestsWaiting: Bool) -> Action {
        let request: Request
        let closeAfter: Bool
        switch state {
        case .streaming(let streamed):
            request = streamed
            closeAfter = false
        case .answering(let answered, let close):
            request = answered
            closeAfter = close
        case .idle, .reading, .collecting, .deciding, .forwarding, .tunnelling, .closed:
            return .none
        }
        // A body not read to its end leaves the next request's first byte unknown.
        if closeAfter || !request.keepAlive || !request.bodyRead || ((quiescing || clientDoneSending) && !requestsWaiting) {
            state = .closed
            return .close
        }
        state = .idle
        lastActivity = clock.now
        let resume = readHeld
        readHeld = false
        return .nextRequest(idleDeadline: idleDeadline, resumeReading: resume)
    }

    private mutating func resumeHeldRead() -> Action {
        readHeld = false
        return .read
    }

    /// The client closed its sending side; `bodyAtHand`: the rest of the request's body has arrived
    /// (it is held, not yet relayed).
    mutating func inputClosed(bodyAtHand: Bool) -> Action {
        clientDoneSending = true
        switch state {
        case .idle, .reading:
            // Nothing asked, or a head cut short: nothing to answer.
            state = .closed
            return .close
        case .collecting(let request), .deciding(let request), .forwarding(let request), .streaming(let request):
            if request.bodyRead || bodyAtHand { return .none }  // answered, then closed
            // The body was cut short: the request cannot be forwarded whole.
            state = .closed
            return .abandon
        case .answering:
            // The proxy's own answer still goes out; the connection closes after it.
            return .none
        case .tunnelling:
            // The upstream learns of it from its own connection's end; the tunnel ends with the upstream.
            return .halfCloseUpstream
        case .closed:
            return .none
        }
    }

    /// The upstream closed the connection of a tunnel: the tunnel is over.
    mutating func tunnelEnded() -> Action {
        guard case .tunnelling = state else { return .none }
        state = .closed
        return .endTunnel
    }

    /// The listener is shutting down: close once the request in progress is answered.
    mutating func quiesce() -> Action {
        quiescing = true
        if case .idle = state {
            state = .closed
            return .close
        }
        return .none
    }

    /// The idle timer went off.
    mutating func idleTimeoutFired() -> Action {
        switch state {
        case .idle, .reading, .collecting:
            // A head or a body that stalls counts as idle: a slow client cannot hold a connection.
            guard let deadline = idleDeadline else { return .none }
            if clock.now >= deadline {
                state = .closed
                return .close
            }
            return .scheduleIdleTimeout(deadline)
        case .deciding, .forwarding, .streaming, .tunnelling, .answering, .closed:
            // A request is being answered: its end starts the clock again.
            return .none
        }
    }

    /// The connection closed.
    mutating func closed() -> Action {
        let previous = state
        state = .closed
        switch previous {
        case .collecting, .deciding, .forwarding, .streaming, .tunnelling, .answering:
            return .abandon
        case .idle, .reading, .closed:
            return .none
        }
    }
}
