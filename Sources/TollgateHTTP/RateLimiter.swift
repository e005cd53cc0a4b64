import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOCore
import Synchronization
import Tollgate

/// What the rate limiter made of one request: who sent it, which rule applied, what it cost and what
/// the store decided. Kept for access logs and for handlers behind the middleware; holds no secret.
public struct RateLimitOutcome: Sendable {
    /// 8 hex digits of the key's SHA-256 (or the resolver's tag), when a key was looked up.
    public var fingerprint: String?
    /// The key's owner, plan and scopes, when the key is valid.
    public var identity: APIKeyIdentity?
    /// The matched route's pattern, or nil when no route matched.
    public var route: String?
    /// What the request cost (0 when it was refused before the check).
    public var cost: Int = 0
    /// The plan the request was checked against (narrowed to the route's limits).
    public var plan: Plan?
    /// The store's decision, when the request got that far.
    public var decision: Decision?
    /// The fields to send with the response: `RateLimit-Policy`, `RateLimit` (and `Retry-After`,
    /// legacy fields when configured).
    public var headers: HTTPFields = [:]
    /// Why the request was refused (`missing_key`, `limited`, …), nil when admitted.
    public var refusal: String?

    public init() {}
}

/// A request context that keeps the rate limiter's outcome, so that handlers behind
/// `RateLimitMiddleware` can see the caller's organization and plan. Optional: the middleware works with
/// any context.
public protocol RateLimitRequestContext: RequestContext {
    var rateLimit: RateLimitOutcome? { get set }
}

/// The decision engine behind `RateLimitMiddleware`: authenticates the key, applies the route rule and
/// the plan through the store, and answers refusals as problem+json.
///
/// The order of checks, and why: a path that cannot be matched safely is refused first (400), since no
/// rule can be applied to it; then the key (401, malformed keys without a lookup); then the route's 404,
/// scope and organization (403) — after authentication, so that an unauthenticated client learns
/// nothing; then the cost, reading the body only for per-item routes (413, 400); then the store (429, 503).
/// Nothing is counted for a request refused before the store.
public final class RateLimiter: Sendable {
    public let store: any LimitStore
    public let keys: any APIKeyResolver
    private let current: Mutex<RateLimitPolicy>
    let metrics: RateLimitMetrics
    let logger: Logger

    /// - Parameters:
    ///   - store: where counters live (`MemoryStore`, `RedisLimitStore`).
    ///   - keys: the key registry.
    ///   - policy: plans, routes and header options; replace it later with `update(_:)`.
    ///   - logger: for problems of the limiter itself (registry down, a key on an unknown plan); requests
    ///     are not logged here.
    ///   - metricsFactory: where the metrics of `RateLimitMetrics` go.
    public init(
        store: any LimitStore, keys: any APIKeyResolver, policy: RateLimitPolicy,
        logger: Logger = Logger(label: "tollgate.http"), metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.store = store
        self.keys = keys
        current = Mutex(policy)
        self.logger = logger
        metrics = RateLimitMetrics(factory: metricsFactory)
    }

    /// The policy in force.
    public var policy: RateLimitPolicy { current.withLock { $0 } }

    /// Puts a new policy in force for the requests that start from now on. Counters are the store's and
    /// stay: limits defined the same way in the new policy keep counting where they were.
    public func update(_ policy: RateLimitPolicy) {
        current.withLock { $0 = policy }
    }

    /// What to do with a request.
    public enum Verdict: Sendable {
        /// Let it through; send `outcome.headers` with the response.
        case admitted(RateLimitOutcome)
        /// Answer it with this response (problem+json); it must not reach the upstream.
        case refused(Response, RateLimitOutcome)
    }

    /// Decides about `request`. Reads the body only for a route whose cost is counted from it; the body
    /// is then kept in `request` for whoever handles it next.
    public func admit(_ request: inout Request) async -> Verdict {
        let policy = self.policy
        var outcome = RateLimitOutcome()

        func refuse(_ problem: Problem, _ reason: String) -> Verdict {
            metrics.refused(reason)
            outcome.refusal = reason
            return .refused(problem.response(), outcome)
        }

        let match = policy.routes.match(method: request.method, path: request.head.path ?? "")
        if case .invalidPath(let why) = match {
            return refuse(.badRequest(why), "bad_request")
        }

        let key: APIKey
        switch APIKeyExtractor.extract(from: request.headers) {
        case .missing: return refuse(.missingKey(), "missing_key")
        case .malformed(let why): return refuse(.invalidKey(why.rawValue), "malformed_key")
        case .present(let present): key = present
        }

        let identity: APIKeyIdentity
        do {
            let resolution = try await keys.resolve(key)
            outcome.fingerprint = resolution.fingerprint.isEmpty ? nil : resolution.fingerprint
            switch resolution.status {
            case .active(let active): identity = active
            case .unknown: return refuse(.invalidKey("the API key is not valid"), "unknown_key")
            case .revoked: return refuse(.invalidKey("the API key is not valid"), "revoked_key")
            case .expired: return refuse(.invalidKey("the API key has expired"), "expired_key")
            }
        } catch {
            logger.error("API key registry unavailable", metadata: ["error": "\(error)"])
            return refuse(.unavailable("the API key registry cannot be reached", retryAfterSeconds: 1), "registry_unavailable")
        }
        outcome.identity = identity

        var route: RouteSettings?
        switch match {
        case .route(let index, let organization):
            let rule = policy.routes.routes[index]
            route = rule
            outcome.route = rule.path
            if let scope = rule.scope, !identity.scopes.contains(scope) {
                return refuse(.insufficientScope(scope), "insufficient_scope")
            }
            if let organization, organization != identity.organization {
                return refuse(.otherOrganization(), "other_organization")
            }
        case .unmatched:
            if policy.routes.unmatched == .notFound { return refuse(.notFound(), "not_found") }
        case .invalidPath:
            break
        }

        guard let narrowed = policy.plan(named: identity.plan, selection: route?.limits ?? .all) else {
            logger.error(
                "API key is on a plan the configuration does not define",
                metadata: ["plan": "\(identity.plan)", "key": "\(identity.fingerprint)", "organization": "\(identity.organization)"])
            return refuse(.internalError("this API key's plan is not configured; the operator has been told"), "unknown_plan")
        }

        let cost: Int
        switch route?.cost ?? .fixed(1) {
        case .fixed(let fixed):
            cost = fixed
        case .perItem(let field, let maxBodySize):
            switch await Self.itemCount(of: &request, field: field, maxBodySize: maxBodySize) {
            case .success(let count): cost = max(1, count)
            case .failure(.tooLarge): return refuse(.contentTooLarge(limit: maxBodySize), "body_too_large")
            case .failure(.unreadable(let why)): return refuse(.badRequest(why), "bad_request")
            }
        }
        outcome.cost = cost

        guard let plan = narrowed else {
            // The route applies none of the plan's limits: authenticated, nothing to count.
            return .admitted(outcome)
        }
        outcome.plan = plan

        let decision: Decision
        let started = ContinuousClock.now
        do {
            decision = try await store.check(plan, partition: Partition(organization: identity.organization, apiKey: identity.keyID), cost: cost)
        } catch {
            metrics.storeErrors.increment()
            logger.error("limit store failed", metadata: ["error": "\(error)"])
            return refuse(.unavailable("the rate limit store cannot be reached", retryAfterSeconds: 1), "store_unavailable")
        }
        metrics.storeLatency.record(ContinuousClock.now - started)
        metrics.record(decision, plan: plan)
        outcome.decision = decision

        let fields = Self.rateLimitFields(decision, plan: plan, includeLegacy: policy.legacyHeaders)
        outcome.headers = fields

        switch decision.denial {
        case nil:
            return .admitted(outcome)
        case .limited, .costExceedsCapacity:
            outcome.refusal = decision.denial == .limited ? "limited" : "cost_exceeds_capacity"
            return .refused(Problem.quotaExceeded(decision, plan: plan, cost: cost, rateLimitFields: fields).response(), outcome)
        case .storeUnavailable:
            outcome.refusal = "store_unavailable"
            let seconds = RateLimitHeaders.retryAfter(decision).flatMap { Int64($0) } ?? 1
            return .refused(
                Problem.unavailable("the rate limit store cannot be reached", retryAfterSeconds: seconds).response(), outcome)
        }
    }

    /// The names `RateLimitHeaders.fields` uses, as field names made once (not parsed per request).
    static let fieldNames: [String: HTTPField.Name] = Dictionary(
        uniqueKeysWithValues: [HTTPField.Name.rateLimitPolicy, .rateLimit, .retryAfter, .xRateLimitLimit, .xRateLimitRemaining, .xRateLimitReset]
            .map { ($0.rawName, $0) })

    /// `RateLimitHeaders.fields` as `HTTPFields`, in the same order.
    static func rateLimitFields(_ decision: Decision, plan: Plan, includeLegacy: Bool) -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in RateLimitHeaders.fields(decision, plan: plan, includeLegacy: includeLegacy) {
            fields.append(HTTPField(name: fieldNames[name] ?? HTTPField.Name(name)!, value: value))
        }
        return fields
    }

    enum BodyFailure: Error {
        case tooLarge
        case unreadable(String)
    }

    /// The number of elements of the JSON array at `field` of the body, reading at most `maxBodySize` bytes.
    static func itemCount(of request: inout Request, field: [String], maxBodySize: Int) async -> Result<Int, BodyFailure> {
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > maxBodySize {
            return .failure(.tooLarge)
        }
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: maxBodySize)
        } catch is NIOTooManyBytesError {
            return .failure(.tooLarge)
        } catch {
            return .failure(.unreadable("the request body could not be read"))
        }
        let name = field.joined(separator: ".")
        guard let json = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView), options: [.fragmentsAllowed]) else {
            return .failure(.unreadable("the request body is not JSON; this endpoint counts the elements of its \(name) array"))
        }
        var value: Any = json
        for part in field {
            guard let object = value as? [String: Any], let next = object[part] else {
                return .failure(.unreadable("the request body has no \(name) array"))
            }
            value = next
        }
        guard let array = value as? [Any] else {
            return .failure(.unreadable("\(name) in the request body must be a JSON array"))
        }
        return .success(array.count)
    }
}
