import HTTPTypes
import Hummingbird
import Logging
import Synchronization
import Tollgate
import TollgateHTTP

/// The settings a reload can change without a restart, read by each request as it starts.
final class LiveSettings: Sendable {
    struct Values: Sendable {
        var maxBodySize: Int
        var accessLog: ServerSettings.AccessLogLevel
        var accessLogSample: Int
        var forwarding: ForwardingSettings
    }

    private let values: Mutex<Values>

    init(_ settings: SidecarSettings) {
        values = Mutex(Self.values(settings))
    }

    static func values(_ settings: SidecarSettings) -> Values {
        Values(
            maxBodySize: settings.server.maxBodySize, accessLog: settings.server.accessLog,
            accessLogSample: settings.server.accessLogSample,
            forwarding: ForwardingSettings(
                maxBodySize: settings.server.maxBodySize, responseTimeout: settings.upstream.responseTimeout,
                readTimeout: settings.upstream.readTimeout, forwardCredentials: settings.upstream.forwardCredentials))
    }

    var current: Values { values.withLock { $0 } }

    func update(_ settings: SidecarSettings) {
        values.withLock { $0 = Self.values(settings) }
    }
}

/// One log line per request, and the response counter, for both of the listener's paths (`FastPath`
/// and the middleware chain).
///
/// The line (`request`) carries method, path (never the query, which a client might put a key in),
/// status, duration, the key's 8-hex fingerprint, organization, plan, route, cost, who decided (`origin`)
/// and why a request was refused — never a key. Admitted requests are logged one in
/// `server.access_log_sample` at the configured level; refusals and errors every time, at info.
final class AccessLog: Sendable {
    let live: LiveSettings
    let metrics: SidecarMetrics
    private let sequence = Atomic<Int>(0)

    init(live: LiveSettings, metrics: SidecarMetrics) {
        self.live = live
        self.metrics = metrics
    }

    func record(
        status: Int, method: HTTPRequest.Method, path: String?, started: ContinuousClock.Instant, client: String?,
        outcome: RateLimitOutcome?, logger: Logger
    ) {
        metrics.response(status)
        let settings = live.current
        guard settings.accessLog != .off else { return }
        let noteworthy = status >= 500 || (status >= 400 && status != 404)
        let sampled =
            settings.accessLogSample <= 1 || sequence.wrappingAdd(1, ordering: .relaxed).oldValue % settings.accessLogSample == 0
        guard noteworthy || sampled else { return }
        let level: Logger.Level = noteworthy || settings.accessLog == .info ? .info : .debug

        let elapsed = ContinuousClock.now - started
        let milliseconds = Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15
        var metadata: Logger.Metadata = [
            "method": "\(method.rawValue)",
            "path": "\((path ?? "").split(separator: "?", maxSplits: 1).first ?? "")",
            "status": "\(status)",
            "duration_ms": "\((milliseconds * 10).rounded() / 10)",
        ]
        if let client { metadata["client"] = "\(client)" }
        if let outcome {
            if let fingerprint = outcome.fingerprint { metadata["key"] = "\(fingerprint)" }
            if let identity = outcome.identity {
                metadata["org"] = "\(identity.organization)"
                metadata["plan"] = "\(identity.plan)"
            }
            if let route = outcome.route { metadata["route"] = "\(route)" }
            if outcome.decision != nil, outcome.cost != 1 { metadata["cost"] = "\(outcome.cost)" }
            if let decision = outcome.decision, decision.origin != .store { metadata["origin"] = "\(decision.origin.rawValue)" }
            if let refusal = outcome.refusal { metadata["refusal"] = "\(refusal)" }
        }
        logger.log(level: level, "request", metadata: metadata)
    }
}

/// The access log (`AccessLog`) for requests the middleware chain answers. Outermost, so it sees every
/// answer.
struct AccessLogMiddleware: RouterMiddleware {
    typealias Context = SidecarRequestContext
    let log: AccessLog

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            response = try error.response(from: request, context: context)
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(error)"])
            response = Problem.internalError("the sidecar failed to handle this request").response()
        }
        log.record(
            status: response.status.code, method: request.method, path: request.head.path, started: started,
            client: context.clientAddress, outcome: context.rateLimit, logger: context.logger)
        return response
    }
}

/// Refuses a body declared larger than `server.max_body_size` before anything else looks at the request
/// (413, and the connection is closed rather than read to the end). Chunked bodies are counted while they
/// stream (`CappedBody`).
struct BodyLimitMiddleware: RouterMiddleware {
    typealias Context = SidecarRequestContext
    let live: LiveSettings

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let limit = live.current.maxBodySize
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > limit {
            var outcome = RateLimitOutcome()
            outcome.refusal = "body_too_large"
            context.rateLimit = outcome
            var response = Problem.contentTooLarge(limit: limit).response()
            response.headers[.connection] = "close"
            return response
        }
        return try await next(request, context)
    }
}

/// The end of the chain: hands admitted requests to the upstream (or the stand-in). The rate limiter's
/// middleware, before it, puts its fields on the response this returns.
struct ForwardMiddleware: RouterMiddleware {
    typealias Context = SidecarRequestContext
    let upstream: any Upstream
    let live: LiveSettings

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        await upstream.respond(to: request, context: context, settings: live.current.forwarding)
    }
}
