import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization
import TollgateHTTP

/// Forwards admitted requests to the message API over pooled keep-alive HTTP/1.1 connections
/// (`UpstreamPool`), streaming bodies that are large or of unknown length.
///
/// - The request goes to the upstream URL's path prefix + the path and query exactly as the client sent
///   them, with the client's `Host`. Hop-by-hop fields are dropped both ways (`Connection` and every
///   field it names, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`), and so
///   is `Expect` (the sidecar does not relay interim responses). `X-Forwarded-For` gets the client's
///   address appended, `X-Forwarded-Proto` is set to `http`, and `X-Tollgate-Organization`,
///   `X-Tollgate-Plan`, `X-Tollgate-Key-Id` say who was admitted; such fields sent by the client are
///   removed first, so the upstream can trust them.
/// - Bodies with a `Content-Length` up to 64 KiB are read whole before they are sent on, both ways (as
///   nginx's `proxy_request_buffering` and `proxy_buffering` do): the request leaves in one write and
///   the answer in one. Larger and chunked bodies stream with back-pressure, never held whole; a
///   chunked request body is cut off with 413 past `server.max_body_size`.
/// - Redirects are passed back to the client, never followed.
/// - No connection (refused, reset, unresolvable) → 502; no response head within
///   `upstream.response_timeout`, no connection within `upstream.connect_timeout`, or a response body
///   stalled for `upstream.read_timeout` → 504 (or the response is cut off, if it had begun).
/// - A request is never sent twice, except a request with an idempotent method (GET, HEAD, PUT,
///   DELETE, OPTIONS) and a body at hand (none, or one read whole) whose reused connection closed before
///   any answer: it is sent once more on a new connection, as the upstream may have closed the idle
///   connection just as the request left. A streamed body cannot be sent again.
/// - Framing is the forwarder's own: `Content-Length` when the length is known (0 for a POST, PUT or
///   PATCH without a body), `Transfer-Encoding: chunked` for a chunked body, nothing else; a TRACE
///   with a body is refused (400), since some servers would read that body as a request of its own.
struct HTTPForwarder: Upstream {
    let pool: UpstreamPool
    let metrics: SidecarMetrics
    let logger: Logger

    /// Bodies up to this size, with a `Content-Length`, are read whole before they are sent on.
    static let bufferedBodySize = 64 * 1024

    func respond(to request: Request, context: SidecarRequestContext, settings: ForwardingSettings) async -> Response {
        var head = upstreamHead(request.head, client: context.clientAddress, outcome: context.rateLimit, settings: settings)
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        let chunked = declared == nil && request.headers[.transferEncoding] != nil
        if request.method == .trace, chunked || (declared ?? 0) > 0 {
            // A TRACE has no body by definition; some servers would read one as the next request.
            metrics.upstream("aborted")
            return Problem.badRequest("a TRACE request cannot have a body").response()
        }

        if let declared, declared <= Self.bufferedBodySize {
            var body: ByteBuffer?
            if declared > 0 {
                do {
                    body = try await request.body.collect(upTo: declared)
                } catch {
                    metrics.upstream("aborted")
                    return Problem.badRequest("the request body ended before its Content-Length").response()
                }
            }
            Self.frameWholeBody(&head, declared: declared)
            return await exchange(head, body: body, on: context.eventLoop, settings: settings)
        }
        if let declared {
            head.headerFields[.contentLength] = String(declared)
        } else if chunked {
            head.headerFields[.transferEncoding] = "chunked"
        } else {
            Self.frameWholeBody(&head, declared: nil)
            return await exchange(head, body: nil, on: context.eventLoop, settings: settings)
        }
        return await streamingExchange(
            head, body: CappedBody(base: request.body, limit: settings.maxBodySize), on: context.eventLoop, settings: settings)
    }

    /// Sends a request whose body (if any) is at hand, and relays the answer.
    private func exchange(_ head: HTTPRequest, body: ByteBuffer?, on eventLoop: any EventLoop, settings: ForwardingSettings) async -> Response {
        let started = ContinuousClock.now
        var retried = false
        while true {
            let connection: UpstreamConnection
            do {
                connection = try await pool.connection(on: eventLoop)
            } catch {
                return failure(error)
            }
            do {
                let start = try await connection.send(
                    head, body: body, responseTimeout: settings.responseTimeout, readTimeout: settings.readTimeout)
                return relay(start, from: connection, started: started)
            } catch {
                connection.close()
                if !retried, Self.maySendAgain(head, after: error, on: connection) {
                    retried = true
                    continue
                }
                return failure(error)
            }
        }
    }

    /// Sends a request whose body streams from the client, and relays the answer.
    ///
    /// The body goes up from a task of its own while this one waits for the answer, and keeps going up
    /// while the answer streams back: an upstream may answer before it has read everything (an echo, an
    /// early refusal), and waiting for the upload to finish first would then stall both. The body is lent
    /// to that task as an `ExclusiveBody` and taken back before the client's connection reads on.
    private func streamingExchange(
        _ head: HTTPRequest, body: CappedBody<RequestBody>, on eventLoop: any EventLoop, settings: ForwardingSettings
    ) async -> Response {
        let started = ContinuousClock.now
        let connection: UpstreamConnection
        do {
            connection = try await pool.connection(on: eventLoop)
            try await connection.begin(head, responseTimeout: settings.responseTimeout, readTimeout: settings.readTimeout)
        } catch {
            return failure(error)
        }
        let lent = ExclusiveBody(body)
        let uploaded = Atomic<Bool>(false)
        let upload = Task { () -> (any Error)? in
            do {
                for try await part in lent {
                    try await connection.write(part)
                }
                try await connection.finish()
                uploaded.store(true, ordering: .releasing)
                return nil
            } catch let failure as UpstreamFailure {
                // The upstream stopped reading: it may have answered already (a 413 of its own, say).
                return failure
            } catch {
                connection.close()
                return error
            }
        }
        let start: UpstreamResponseStart
        do {
            start = try await connection.response()
        } catch {
            connection.close()
            await lent.close()
            switch await upload.value {
            case let tooLarge as BodyTooLarge:
                metrics.upstream("aborted")
                var response = Problem.contentTooLarge(limit: tooLarge.limit).response()
                response.headers[.connection] = "close"
                return response
            case nil, is UpstreamFailure, is BodyAlreadyStreamed:
                return failure(error)
            default:
                metrics.upstream("aborted")
                return Problem.badRequest("the request body could not be read").response()
            }
        }
        return relay(start, from: connection, started: started) {
            // A connection whose request has not gone up whole cannot carry another; closing it also
            // ends an upload the upstream stopped reading.
            if !uploaded.load(ordering: .acquiring) { connection.close() }
            await lent.close()
        }
    }

    /// The upstream's answer as the client gets it; the connection goes back to the pool once the body
    /// is through.
    /// `settle`, when given, runs once the answer is through (or has failed), before the connection
    /// goes back.
    private func relay(
        _ start: UpstreamResponseStart, from connection: UpstreamConnection, started: ContinuousClock.Instant,
        settle: (@Sendable () async -> Void)? = nil
    ) -> Response {
        let headers = answered(start, started: started)
        if let body = start.body, settle == nil {
            pool.release(connection)
            return Response(status: start.head.status, headers: headers, body: ResponseBody(byteBuffer: body))
        }
        let lease = UpstreamLease(connection, pool: pool)
        return Response(
            status: start.head.status, headers: headers,
            body: ResponseBody(contentLength: start.body?.readableBytes) { writer in
                do {
                    if let body = start.body {
                        try await writer.write(body)
                    } else {
                        while let part = try await connection.nextBodyPart() {
                            try await writer.write(part)
                        }
                    }
                    try await writer.finish(nil)
                } catch {
                    lease.end(reusable: false)
                    await settle?()
                    throw error
                }
                await settle?()
                lease.end(reusable: true)
            })
    }

    func failure(_ failure: UpstreamFailure) -> Response {
        problem(for: failure).response()
    }

    /// The answer to an exchange that failed before a response began (502 or 504), counted and logged.
    func problem(for failure: UpstreamFailure) -> Problem {
        switch failure {
        case .connectTimeout, .timeout:
            metrics.upstream("timeout")
            logger.warning("upstream timed out", metadata: ["error": "\(failure)"])
            return .gatewayTimeout("the message API did not answer in time")
        case .connect:
            metrics.upstream("refused")
        case .closed, .malformedResponse:
            metrics.upstream("error")
        }
        logger.warning("upstream unreachable", metadata: ["error": "\(failure)"])
        return .badGateway("the message API cannot be reached")
    }

    /// Whether a request whose exchange failed goes once more, on a new connection: an idempotent one
    /// whose reused connection closed before any answer (the upstream may have closed it idle as the
    /// request left). Only for a body at hand; a streamed body cannot be sent again.
    static func maySendAgain(_ head: HTTPRequest, after failure: UpstreamFailure, on connection: UpstreamConnection) -> Bool {
        failure == .closed(responded: false) && connection.wasUsed && [.get, .head, .put, .delete, .options].contains(head.method)
    }

    /// The request head as the upstream gets it (framing aside): the URL's path prefix + the client's
    /// path and query, the client's `Host`, the fields of `upstreamHeaders`.
    func upstreamHead(_ request: HTTPRequest, client: String?, outcome: RateLimitOutcome?, settings: ForwardingSettings) -> HTTPRequest {
        var head = HTTPRequest(
            method: request.method, scheme: nil, authority: request.authority ?? pool.target.authority,
            path: pool.target.pathPrefix + (request.path ?? "/"))
        head.headerFields = Self.upstreamHeaders(
            request.headerFields, client: client, outcome: outcome, forwardCredentials: settings.forwardCredentials)
        return head
    }

    /// Frames a request whose body is at hand: its `Content-Length`, or 0 for a POST, PUT or PATCH
    /// without a body (methods that usually carry one say so).
    static func frameWholeBody(_ head: inout HTTPRequest, declared: Int?) {
        if let declared {
            head.headerFields[.contentLength] = String(declared)
        } else if [.post, .put, .patch].contains(head.method) {
            head.headerFields[.contentLength] = "0"
        }
    }

    /// Counts the upstream's answer (status, time to its head) and gives the fields the client gets.
    func answered(_ start: UpstreamResponseStart, started: ContinuousClock.Instant) -> HTTPFields {
        metrics.upstreamLatency.record(ContinuousClock.now - started)
        metrics.upstream(status: start.head.status.code)
        return Self.clientHeaders(start.head.headerFields)
    }

    /// The client's fields as the upstream gets them (without framing: the caller sets that).
    static func upstreamHeaders(
        _ headers: HTTPFields, client: String?, outcome: RateLimitOutcome?, forwardCredentials: Bool
    ) -> HTTPFields {
        let connection = HopByHop.connectionTokens(headers[values: .connection])
        var fields = HTTPFields()
        var forwardedFor: [String] = []
        for field in headers {
            let name = field.name.canonicalName
            if HopByHop.isHopByHop(name, listedIn: connection) { continue }
            switch name {
            case "host", "content-length", "expect", "x-forwarded-proto":
                continue
            case "x-forwarded-for":
                forwardedFor.append(field.value)
                continue
            case "authorization", APIKeyExtractor.keyHeader.canonicalName:
                if !forwardCredentials { continue }
            default:
                if name.hasPrefix("x-tollgate-") { continue }
            }
            fields.append(field)
        }
        if let client { forwardedFor.append(client) }
        if !forwardedFor.isEmpty { fields.append(HTTPField(name: .xForwardedFor, value: forwardedFor.joined(separator: ", "))) }
        fields.append(HTTPField(name: .xForwardedProto, value: "http"))
        if let identity = outcome?.identity {
            fields.append(HTTPField(name: .tollgateOrganization, value: identity.organization))
            fields.append(HTTPField(name: .tollgatePlan, value: identity.plan))
            fields.append(HTTPField(name: .tollgateKeyID, value: identity.keyID))
        }
        return fields
    }

    /// The upstream's fields as the client gets them.
    static func clientHeaders(_ headers: HTTPFields) -> HTTPFields {
        let connection = HopByHop.connectionTokens(headers[values: .connection])
        // Most answers carry nothing to drop but `Connection` itself, if that.
        if !headers.contains(where: { HopByHop.isHopByHop($0.name.canonicalName, listedIn: connection) }) { return headers }
        var fields = HTTPFields()
        for field in headers where !HopByHop.isHopByHop(field.name.canonicalName, listedIn: connection) {
            fields.append(field)
        }
        return fields
    }
}

/// A connection lent to a response body that streams: handed back (or closed) when the body is through,
/// and closed if the body is never written at all — Hummingbird skips the body when the client has gone
/// before the response head could be written, and a connection left mid-response would never be freed.
final class UpstreamLease: Sendable {
    private let connection: UpstreamConnection
    private let pool: UpstreamPool
    private let ended = Atomic<Bool>(false)

    init(_ connection: UpstreamConnection, pool: UpstreamPool) {
        self.connection = connection
        self.pool = pool
    }

    /// Hands the connection back to the pool, or closes it when its exchange did not complete.
    func end(reusable: Bool) {
        guard !ended.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if reusable { pool.release(connection) } else { connection.close() }
    }

    deinit {
        if !ended.load(ordering: .acquiring) { connection.close() }
    }
}

extension HTTPField.Name {
    static let tollgateOrganization = HTTPField.Name("X-Tollgate-Organization")!
    static let tollgatePlan = HTTPField.Name("X-Tollgate-Plan")!
    static let tollgateKeyID = HTTPField.Name("X-Tollgate-Key-Id")!
    static let xForwardedFor = HTTPField.Name("X-Forwarded-For")!
    static let xForwardedProto = HTTPField.Name("X-Forwarded-Proto")!
}
