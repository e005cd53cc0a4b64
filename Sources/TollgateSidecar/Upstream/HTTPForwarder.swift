import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateHTTP

/// Forwards admitted requests to the message API with AsyncHTTPClient, streaming both bodies.
///
/// - The request goes to `base` + the path and query exactly as the client sent them, with the client's
///   `Host`. Hop-by-hop fields are dropped both ways (`Connection` and every field it names,
///   `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`), and so is `Expect`
///   (the sidecar does not relay interim responses). `X-Forwarded-For` gets the client's address
///   appended, `X-Forwarded-Proto` is set to `http`, and `X-Tollgate-Organization`, `X-Tollgate-Plan`,
///   `X-Tollgate-Key-Id` say who was admitted; such fields sent by the client are removed first, so
///   the upstream can trust them.
/// - Bodies stream with back-pressure, never held whole: a body with `Content-Length` keeps it, a
///   chunked one stays chunked and is cut off with 413 past `server.max_body_size`.
/// - Redirects are passed back to the client, never followed.
/// - No connection (refused, reset, unresolvable) → 502; no response head within
///   `upstream.response_timeout`, or no connection within `upstream.connect_timeout` → 504. Failed
///   connections are not retried by the pool (`retryConnectionEstablishment` off): a dead upstream
///   answers 502 at once instead of holding every request until its deadline.
struct HTTPForwarder: Upstream {
    let client: HTTPClient
    /// `http://host:port` plus an optional path prefix, without a trailing `/`.
    let base: String
    let metrics: SidecarMetrics
    let logger: Logger

    static let identityFields: [HTTPField.Name] = [.tollgateOrganization, .tollgatePlan, .tollgateKeyID]

    /// A client for one upstream: `poolSize` connections, no redirects, no decompression, HTTP/1.1.
    static func makeClient(poolSize: Int, connectTimeout: Duration, readTimeout: Duration) -> HTTPClient {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: TimeAmount(connectTimeout), read: TimeAmount(readTimeout)),
            connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: poolSize),
            decompression: .disabled)
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.httpVersion = .http1Only
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    func respond(to request: Request, context: SidecarRequestContext, settings: ForwardingSettings) async -> Response {
        var outbound = HTTPClientRequest(url: base + (request.head.path ?? "/"))
        outbound.method = HTTPMethod(rawValue: request.method.rawValue)
        outbound.headers = Self.upstreamHeaders(
            request, client: context.clientAddress, outcome: context.rateLimit, forwardCredentials: settings.forwardCredentials)

        let declared = request.headers[.contentLength].flatMap { Int64($0) }
        // The client's body is the connection's inbound stream: once this returns (and the response is
        // written) Hummingbird reads the rest of it itself. AsyncHTTPClient reads it from a task of its
        // own that can outlive `execute` (an upstream may answer before the body is through), so the body
        // is handed over as an `ExclusiveBody` and taken back (`close()`) before the stream is given up.
        let body = ExclusiveBody(CappedBody(base: request.body, limit: settings.maxBodySize))
        if let declared {
            if declared > 0 { outbound.body = .stream(body, length: .known(declared)) }
        } else if request.headers[.transferEncoding] != nil {
            outbound.body = .stream(body, length: .unknown)
        }

        let started = ContinuousClock.now
        let response: HTTPClientResponse
        do {
            response = try await client.execute(outbound, timeout: TimeAmount(settings.responseTimeout), logger: nil)
        } catch {
            await body.close()
            return failure(error, settings: settings)
        }
        metrics.upstreamLatency.record(ContinuousClock.now - started)
        metrics.upstream(String(response.status.code))
        let upstreamBody = response.body
        return Response(
            status: HTTPResponse.Status(code: Int(response.status.code), reasonPhrase: response.status.reasonPhrase),
            headers: Self.clientHeaders(response.headers),
            body: ResponseBody { writer in
                do {
                    for try await buffer in upstreamBody {
                        try await writer.write(buffer)
                    }
                } catch {
                    await body.close()
                    throw error
                }
                await body.close()
                try await writer.finish(nil)
            })
    }

    func failure(_ error: any Error, settings: ForwardingSettings) -> Response {
        if let tooLarge = error as? BodyTooLarge {
            metrics.upstream("aborted")
            var response = Problem.contentTooLarge(limit: tooLarge.limit).response()
            response.headers[.connection] = "close"
            return response
        }
        if error is BodyAlreadyStreamed {
            // A second attempt at sending a request whose body has been streamed (and is gone).
            metrics.upstream("error")
            logger.warning("upstream request could not be retried: its body was already streamed")
            return Problem.badGateway("the message API cannot be reached").response()
        }
        if error is HTTPParserError {
            metrics.upstream("aborted")
            return Problem.badRequest("the request body is not valid HTTP/1.1").response()
        }
        if let clientError = error as? HTTPClientError {
            switch clientError {
            case .deadlineExceeded, .readTimeout, .connectTimeout:
                metrics.upstream("timeout")
                logger.warning("upstream timed out", metadata: ["error": "\(clientError)"])
                return Problem.gatewayTimeout("the message API did not answer in time").response()
            default:
                break
            }
        }
        metrics.upstream(Self.isRefusal(error) ? "refused" : "error")
        logger.warning("upstream unreachable", metadata: ["error": "\(error)"])
        return Problem.badGateway("the message API cannot be reached").response()
    }

    /// Whether the upstream could not be connected to at all (as opposed to failing mid-request).
    static func isRefusal(_ error: any Error) -> Bool {
        error is NIOConnectionError || error is IOError
    }

    /// The client's fields as the upstream gets them.
    static func upstreamHeaders(
        _ request: Request, client: String?, outcome: RateLimitOutcome?, forwardCredentials: Bool
    ) -> HTTPHeaders {
        let connection = HopByHop.connectionTokens(request.headers[values: .connection])
        var headers = HTTPHeaders()
        if let authority = request.head.authority { headers.add(name: "Host", value: authority) }
        var forwardedFor: [String] = []
        for field in request.headers {
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
            headers.add(name: field.name.rawName, value: field.value)
        }
        if let client { forwardedFor.append(client) }
        if !forwardedFor.isEmpty { headers.add(name: "X-Forwarded-For", value: forwardedFor.joined(separator: ", ")) }
        headers.add(name: "X-Forwarded-Proto", value: "http")
        if let identity = outcome?.identity {
            headers.add(name: HTTPField.Name.tollgateOrganization.rawName, value: identity.organization)
            headers.add(name: HTTPField.Name.tollgatePlan.rawName, value: identity.plan)
            headers.add(name: HTTPField.Name.tollgateKeyID.rawName, value: identity.keyID)
        }
        return headers
    }

    /// The upstream's fields as the client gets them.
    static func clientHeaders(_ headers: HTTPHeaders) -> HTTPFields {
        let connection = HopByHop.connectionTokens(headers["connection"])
        var fields = HTTPFields()
        for (name, value) in headers {
            if HopByHop.isHopByHop(name.lowercased(), listedIn: connection) { continue }
            guard let fieldName = HTTPField.Name(name) else { continue }
            fields.append(HTTPField(name: fieldName, value: value))
        }
        return fields
    }
}

extension HTTPField.Name {
    static let tollgateOrganization = HTTPField.Name("X-Tollgate-Organization")!
    static let tollgatePlan = HTTPField.Name("X-Tollgate-Plan")!
    static let tollgateKeyID = HTTPField.Name("X-Tollgate-Key-Id")!
}
