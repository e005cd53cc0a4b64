import HTTPTypes
import Hummingbird
import Logging
import Metrics
import Tollgate

/// Hummingbird middleware that lets through only the requests an API key's plan admits: 401 for a missing
/// or invalid key, 403 for a missing scope or another organization, 429 with retry guidance when a limit
/// is reached, 503 when the store cannot answer; `RateLimit-Policy` and `RateLimit` on every response it
/// decides about. The sidecar runs this same middleware in front of its forwarder.
///
/// ```swift
/// let router = Router()
/// router.add(middleware: RateLimitMiddleware(store: MemoryStore(), keys: myKeys, policy: RateLimitPolicy(configuration: config)))
/// ```
///
/// A refused request never reaches `next`. When the context conforms to `RateLimitRequestContext`,
/// handlers find the outcome (organization, plan, decision) in `context.rateLimit`.
public struct RateLimitMiddleware<Context: RequestContext>: RouterMiddleware {
    public let limiter: RateLimiter

    public init(limiter: RateLimiter) {
        self.limiter = limiter
    }

    /// A middleware with its own `RateLimiter`.
    public init(
        store: any LimitStore, keys: any APIKeyResolver, policy: RateLimitPolicy,
        logger: Logger = Logger(label: "tollgate.http"), metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        limiter = RateLimiter(store: store, keys: keys, policy: policy, logger: logger, metricsFactory: metricsFactory)
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var request = request
        switch await limiter.admit(&request) {
        case .refused(let response, let outcome):
            _ = Self.recording(outcome, in: context)
            return response
        case .admitted(let outcome):
            let context = Self.recording(outcome, in: context)
            var response: Response
            do {
                response = try await next(request, context)
            } catch let error as any HTTPResponseError {
                // Errors that become responses (404 from the router, 400 from a decoder) still carry the
                // headers: the request was counted.
                response = try error.response(from: request, context: context)
            }
            outcome.apply(to: &response.headers)
            return response
        }
    }

    static func recording(_ outcome: RateLimitOutcome, in context: Context) -> Context {
        guard let stateful = context as? any RateLimitRequestContext else { return context }
        return storing(outcome, in: stateful) as! Context
    }

    private static func storing<C: RateLimitRequestContext>(_ outcome: RateLimitOutcome, in context: C) -> C {
        var context = context
        context.rateLimit = outcome
        return context
    }
}

extension RateLimitOutcome {
    /// Puts the limiter's fields (`headers`) on a response's `fields`, replacing any rate-limit fields
    /// already there (an upstream's own).
    public func apply(to fields: inout HTTPFields) {
        guard !headers.isEmpty else { return }
        for name in [HTTPField.Name.rateLimitPolicy, .rateLimit, .xRateLimitLimit, .xRateLimitRemaining, .xRateLimitReset] {
            fields[name] = nil
        }
        for field in headers { fields.append(field) }
    }
}
