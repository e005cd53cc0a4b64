import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import TollgateHTTP

/// Answers requests that HTTP/1.1 parsing refuses, and closes connections that a response says to close.
///
/// Sits after the HTTP decoder. A parse error before a request head was produced — headers over the
/// size limit, `Content-Length` together with `Transfer-Encoding`, two `Content-Length`s, a malformed
/// request line — gets a problem+json answer (431 for the size, 400 for the rest) with
/// `Connection: close`, and nothing reaches the application, so nothing is forwarded. (Stricter than
/// RFC 9112 §6.3 allows, and on purpose: two identical `Content-Length` values are refused too, since a
/// proxy that forwards ambiguous framing is how request smuggling starts.) An error in the middle of a
/// body goes on to the application, whose body stream fails with it.
///
/// After a response with `Connection: close` (its own, or the application's such as a 413), it stops
/// writing (half-close) and reads what the client still sends for up to `lingerTime` before closing:
/// closing at once with unread input makes the kernel reset the connection, and the client may lose the
/// response it was sent. The same way, an error answer waits for the response in progress, if any.
///
/// A request with `Expect: 100-continue` and a body gets its interim `100 Continue` at once, as most
/// servers send it: the body is read (or drained) in any case, and a client waiting for it would
/// otherwise stall for its own timeout (curl: 1 s) before every large upload.
final class ProtocolGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let maxHeaderSize: Int
    let lingerTime: TimeAmount
    /// Called with the status of each answer this handler writes itself (metrics, logs).
    let onAnswer: @Sendable (Int) -> Void

    /// Request heads received minus responses finished.
    private var unanswered = 0
    /// Between a request head and its end.
    private var readingBody = false
    private var closeAfterResponse = false
    private var pending: Problem?
    private var closing = false

    init(maxHeaderSize: Int, lingerTime: TimeAmount = .seconds(2), onAnswer: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.maxHeaderSize = maxHeaderSize
        self.lingerTime = lingerTime
        self.onAnswer = onAnswer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if closing { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            unanswered += 1
            readingBody = true
            if head.headerFields[.expect]?.lowercased() == "100-continue",
                head.headerFields[.contentLength].map({ $0 != "0" }) ?? (head.headerFields[.transferEncoding] != nil)
            {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
            }
        case .body:
            break
        case .end:
            readingBody = false
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if closing { return }
        guard let parserError = error as? HTTPParserError, !readingBody else {
            context.fireErrorCaught(error)
            return
        }
        let problem: Problem
        switch parserError {
        case .headerOverflow:
            problem = .headersTooLarge(limit: maxHeaderSize)
        case .unexpectedContentLength:
            problem = .badRequest("the request's framing is ambiguous: Content-Length appears more than once")
        case .invalidContentLength:
            problem = .badRequest("the request's Content-Length is not valid")
        case .unknown:
            // llhttp reports Content-Length with Transfer-Encoding, and a bad Transfer-Encoding, this way.
            problem = .badRequest(
                "the request's framing is not valid HTTP/1.1 (such as Content-Length with Transfer-Encoding)")
        default:
            problem = .badRequest("the request is not valid HTTP/1.1 (\(parserError))")
        }
        if unanswered > 0 {
            // A response is being written for an earlier request: answer after it.
            pending = problem
            closeAfterResponse = true
        } else {
            answer(problem, context: context)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            if head.headerFields[.connection]?.lowercased() == "close" { closeAfterResponse = true }
            context.write(data, promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            unanswered = max(0, unanswered - 1)
            context.write(data, promise: promise)
            if let problem = pending, unanswered == 0 {
                pending = nil
                answer(problem, context: context)
            } else if closeAfterResponse, unanswered == 0 {
                context.flush()
                linger(context: context)
            }
        }
    }

    private func answer(_ problem: Problem, context: ChannelHandlerContext) {
        var problem = problem
        problem.headers[.connection] = "close"
        let response = problem.response()
        onAnswer(problem.status.code)
        var head = HTTPResponse(status: response.status)
        head.headerFields = response.headers
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(ByteBuffer(string: problem.json))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        linger(context: context)
    }

    private func linger(context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        context.close(mode: .output, promise: nil)
        let channel = context.channel
        context.eventLoop.scheduleTask(in: lingerTime) {
            channel.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if closing, let event = event as? ChannelEvent, event == .inputClosed {
            // The client has read our answer and closed its side: done lingering.
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
