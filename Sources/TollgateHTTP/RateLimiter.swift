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
    /// legacy fields when configured). Made from `decision` when asked for (a caller that writes them
    /// as bytes never makes them), unless set.
    public var headers: HTTPFields {
        get {
            if let explicitHeaders { return explicitHeaders }
            guard let decision, let plan else { return [:] }
            return RateLimiter.rateLimitFields(decision, plan: plan, includeLegacy: includesLegacyHeaders)
        }
        set { explicitHeaders = newValue }
    }
    /// Whether `headers` has the legacy `X-RateLimit-*` fields (the policy's `legacy_headers`).
    public var includesLegacyHeaders = false
    private var explicitHeaders: HTTPFields?
    /// Why the request was refused (`missing_key`, `limited`, …), nil when admitted.
    public var refusal: String?
    /// Whether the key's lookup was answered from the resolver's cache (nil when there was none).
    public var keyFromCache: Bool?
    /// How long the store took to decide, when it was asked.
    public var storeLatency: Duration?

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
    /// Bumped by `update`: admissions kept from an older policy are not used again.
    private let policyVersion = Atomic<UInt64>(0)
    /// `keys` and `store` when they can answer without suspending (`judgeNow`), found once rather than
    /// cast per request.
    private let cachingKeys: (any CachingAPIKeyResolver)?
    private let synchronousStore: (any SynchronousLimitStore)?
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
        cachingKeys = keys as? any CachingAPIKeyResolver
        synchronousStore = store as? any SynchronousLimitStore
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
        policyVersion.add(1, ordering: .releasing)
    }

    /// What to do with a request.
    public enum Verdict: Sendable {
        /// Let it through; send `outcome.headers` with the response.
        case admitted(RateLimitOutcome)
        /// Answer it with this response (problem+json); it must not reach the upstream.
        case refused(Response, RateLimitOutcome)
    }

    /// What to do with a request, for callers that write their own responses (the sidecar's data path).
    public enum Judgement: Sendable {
        /// Let it through; send `outcome.headers` with the response.
        case admitted(RateLimitOutcome)
        /// Answer it with this problem; it must not reach the upstream.
        case refused(Problem, RateLimitOutcome)
    }

    /// Decides about `request`. Reads the body only for a route whose cost is counted from it; the body
    /// is then kept in `request` for whoever handles it next.
    public func admit(_ request: inout Request) async -> Verdict {
        var collected: ByteBuffer?
        let judgement = await judge(
            method: request.method, path: request.head.path ?? "", headers: request.headers
        ) { [request] limit in
            if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit { throw NIOTooManyBytesError(maxBytes: limit) }
            let body = try await request.body.collect(upTo: limit)
            collected = body
            return body
        }
        if let collected { request.body = RequestBody(buffer: collected) }
        switch judgement {
        case .admitted(let outcome): return .admitted(outcome)
        case .refused(let problem, let outcome): return .refused(problem.response(), outcome)
        }
    }

    /// Decides about a request given its method, path (with query) and fields. `body` is called, at
    /// most once, only for a route whose cost is counted from the body, with the most bytes to read;
    /// it throws `NIOTooManyBytesError` past them.
    public func judge(
        method: HTTPRequest.Method, path: String, headers: HTTPFields,
        body: (Int) async throws -> ByteBuffer
    ) async -> Judgement {
        await judgement(method: method, path: path, headers: headers, body: body, keeping: false).judgement
    }

    /// `judge`, with what may be reused for the same method, path and key fields (`judge(reusing:)`,
    /// `judgeNow(reusing:)`): an admission when the key's answer was cached, the key is active and the
    /// route's cost is fixed, else nil.
    public func judgeKeeping(
        method: HTTPRequest.Method, path: String, headers: HTTPFields,
        body: (Int) async throws -> ByteBuffer
    ) async -> (judgement: Judgement, admission: Admission?) {
        await judgement(method: method, path: path, headers: headers, body: body, keeping: true)
    }

    /// `judge`, and with `keeping` the admission to reuse (none is made for callers that drop it).
    private func judgement(
        method: HTTPRequest.Method, path: String, headers: HTTPFields,
        body: (Int) async throws -> ByteBuffer, keeping: Bool
    ) async -> (judgement: Judgement, admission: Admission?) {
        // Read before the policy: an update in between leaves the admission with the old version.
        let version = policyVersion.load(ordering: .acquiring)
        var screened: Screened
        switch screen(method: method, path: path, headers: headers) {
        case .next(let next): screened = next
        case .done(let judgement): return (judgement, nil)
        }
        var resolution: KeyResolution
        var reuse: KeyReuse?
        if let cached = cachingKeys?.cachedLookup(screened.key) {
            (resolution, reuse) = cached
            screened.outcome.keyFromCache = true
        } else {
            do {
                resolution = try await keys.resolve(screened.key)
            } catch {
                return (unreachableRegistry(error, screened.outcome), nil)
            }
            screened.outcome.keyFromCache = false
        }
        var authorized: Authorized
        switch authorize(screened, resolution) {
        case .next(let next): authorized = next
        case .done(let judgement): return (judgement, nil)
        }
        if case .perItem(let field, let maxBodySize) = authorized.costRule {
            reuse = nil
            let count: Result<Int, BodyFailure>
            do {
                count = Self.itemCount(in: try await body(maxBodySize), field: field)
            } catch is NIOTooManyBytesError {
                count = .failure(.tooLarge)
            } catch {
                count = .failure(.unreadable("the request body could not be read"))
            }
            if let refused = authorized.setCost(count, maxBodySize: maxBodySize, limiter: self) { return (refused, nil) }
        }
        authorized.outcome.plan = authorized.plan
        let admission = keeping ? reuse.map { Admission(authorized: authorized, policyVersion: version, reuse: $0) } : nil
        return (await check(authorized), admission)
    }

    /// `judgeNow(reusing:)` for a store that answers asynchronously: nil when the admission no longer
    /// stands (judge the request in full then).
    public func judge(reusing admission: Admission) async -> Judgement? {
        guard admission.policyVersion == policyVersion.load(ordering: .acquiring), let cachedKeys = cachingKeys,
            cachedKeys.isStillFresh(admission.reuse)
        else { return nil }
        return await check(admission.authorized)
    }

    /// Whether `judgeNow` can answer (the key's cached answer aside): the store answers at once and the
    /// key registry caches. Otherwise, call `judge`.
    public var judgesWithoutSuspending: Bool { cachingKeys != nil && synchronousStore != nil }

    /// The store's check of an authorized request (its outcome's plan set), as the answer.
    private func check(_ authorized: Authorized) async -> Judgement {
        guard let plan = authorized.plan else { return .admitted(authorized.outcome) }
        let started = ContinuousClock.now
        do {
            let decision = try await store.check(plan, partition: authorized.partition, cost: authorized.outcome.cost)
            return conclude(decision, authorized, started: started)
        } catch {
            return storeFailed(error, authorized.outcome)
        }
    }

    /// `judge` without suspending, for a caller on an event loop: the answer when the key's lookup is
    /// cached (`CachingAPIKeyResolver`) and the store answers at once (`SynchronousLimitStore`), else
    /// nil — call `judge` then. `body` is the whole request body when the caller has read it (a route
    /// that counts items needs it; without it the answer is nil).
    public func judgeNow(method: HTTPRequest.Method, path: String, headers: HTTPFields, body: ByteBuffer?) -> Judgement? {
        var unused: Admission?
        return judgeNow(method: method, path: path, headers: headers, body: body, keeping: &unused)
    }

    /// What a judgement worked out before the store — the route, the key's identity, the plan and the
    /// cost — for a caller that sees the same request again: the requests of one client connection
    /// usually carry one key to one endpoint (a reference, so that keeping it copies nothing).
    /// `judgeNow(reusing:)` then skips the path match, the key's
    /// hash and lookup and the plan, and asks the store alone. It holds no secret, and stands while the
    /// policy is not updated, the key's cached answer is fresh (the keys' cache TTL, no reload of the
    /// keys) and the key has not expired: a key revoked stops working as soon as it would without it.
    public final class Admission: Sendable {
        fileprivate let authorized: Authorized
        fileprivate let policyVersion: UInt64
        fileprivate let reuse: KeyReuse

        fileprivate init(authorized: Authorized, policyVersion: UInt64, reuse: KeyReuse) {
            self.authorized = authorized
            self.policyVersion = policyVersion
            self.reuse = reuse
        }
    }

    /// `judgeNow`, and in `admission` what may be reused for the same method, path and key fields
    /// (`judgeNow(reusing:)`): set when the key is active and the route's cost is fixed, else nil.
    public func judgeNow(
        method: HTTPRequest.Method, path: String, headers: HTTPFields, body: ByteBuffer?, keeping admission: inout Admission?
    ) -> Judgement? {
        admission = nil
        guard let cachedKeys = cachingKeys, let syncStore = synchronousStore else {
            return nil
        }
        // Read before the policy: an update in between leaves the admission with the old version.
        let version = policyVersion.load(ordering: .acquiring)
        var screened: Screened
        switch screen(method: method, path: path, headers: headers) {
        case .next(let next): screened = next
        case .done(let judgement): return judgement
        }
        guard let (resolution, reuse) = cachedKeys.cachedLookup(screened.key) else { return nil }
        screened.outcome.keyFromCache = true
        var authorized: Authorized
        switch authorize(screened, resolution) {
        case .next(let next): authorized = next
        case .done(let judgement): return judgement
        }
        if case .perItem(let field, let maxBodySize) = authorized.costRule {
            guard let body else { return nil }
            let count = body.readableBytes > maxBodySize ? .failure(.tooLarge) : Self.itemCount(in: body, field: field)
            if let refused = authorized.setCost(count, maxBodySize: maxBodySize, limiter: self) { return refused }
        }
        authorized.outcome.plan = authorized.plan
        if let reuse, case .fixed = authorized.costRule {
            admission = Admission(authorized: authorized, policyVersion: version, reuse: reuse)
        }
        return check(authorized, store: syncStore)
    }

    /// The judgement of a request like the one `admission` was kept from (same method, path and key
    /// fields): the store's check alone. Nil when the admission no longer stands (the policy was
    /// updated, the keys reloaded, the key's cached answer aged or the key expired): judge the request
    /// in full then.
    public func judgeNow(reusing admission: Admission) -> Judgement? {
        guard let cachedKeys = cachingKeys, let syncStore = synchronousStore,
            admission.policyVersion == policyVersion.load(ordering: .acquiring), cachedKeys.isStillFresh(admission.reuse)
        else { return nil }
        return check(admission.authorized, store: syncStore)
    }

    /// The store's check of an authorized request (its outcome's plan set), as the answer.
    private func check(_ authorized: Authorized, store: any SynchronousLimitStore) -> Judgement {
        guard let plan = authorized.plan else { return .admitted(authorized.outcome) }
        let started = ContinuousClock.now
        do {
            let decision = try store.checkNow(plan, partition: authorized.partition, cost: authorized.outcome.cost)
            return conclude(decision, authorized, started: started)
        } catch {
            return storeFailed(error, authorized.outcome)
        }
    }

    // MARK: The steps of a judgement

    private enum Step<Next> {
        case next(Next)
        case done(Judgement)
    }

    /// A request whose path can be matched and which carries a well-formed key.
    private struct Screened {
        var policy: RateLimitPolicy
        var match: RouteTable.Match
        var key: APIKey
        var outcome: RateLimitOutcome
    }

    /// A request whose key may use its route: what is left is the cost and the store.
    fileprivate struct Authorized {
        var policy: RateLimitPolicy
        var costRule: RouteSettings.Cost
        var partition: Partition
        /// The plan narrowed to the route's limits; nil when the route applies none of them.
        var plan: Plan?
        var outcome: RateLimitOutcome

        /// Sets a cost counted from the body; returns the refusal when it could not be counted.
        mutating func setCost(_ count: Result<Int, BodyFailure>, maxBodySize: Int, limiter: RateLimiter) -> Judgement? {
            switch count {
            case .success(let count):
                outcome.cost = max(1, count)
                return nil
            case .failure(.tooLarge):
                outcome.cost = 0
                return limiter.refuse(.contentTooLarge(limit: maxBodySize), "body_too_large", outcome)
            case .failure(.unreadable(let why)):
                outcome.cost = 0
                return limiter.refuse(.badRequest(why), "bad_request", outcome)
            }
        }
    }

    private func refuse(_ problem: Problem, _ reason: String, _ outcome: RateLimitOutcome) -> Judgement {
        metrics.refused(reason)
        var outcome = outcome
        outcome.refusal = reason
        return .refused(problem, outcome)
    }

    /// The path (400) and the key's presence and form (401), before any lookup.
    private func screen(method: HTTPRequest.Method, path: String, headers: HTTPFields) -> Step<Screened> {
        let policy = self.policy
        let outcome = RateLimitOutcome()
        let match = policy.routes.match(method: method, path: path)
        if case .invalidPath(let why) = match {
            return .done(refuse(.badRequest(why), "bad_request", outcome))
        }
        switch APIKeyExtractor.extract(from: headers) {
        case .missing: return .done(refuse(.missingKey(), "missing_key", outcome))
        case .malformed(let why): return .done(refuse(.invalidKey(why.rawValue), "malformed_key", outcome))
        case .present(let key): return .next(Screened(policy: policy, match: match, key: key, outcome: outcome))
        }
    }

    private func unreachableRegistry(_ error: any Error, _ outcome: RateLimitOutcome) -> Judgement {
        logger.error("API key registry unavailable", metadata: ["error": "\(error)"])
        return refuse(.unavailable("the API key registry cannot be reached", retryAfterSeconds: 1), "registry_unavailable", outcome)
    }

    /// The key's status (401), the route's 404, scope and organization (403), the plan and a fixed cost.
    private func authorize(_ screened: Screened, _ resolution: KeyResolution) -> Step<Authorized> {
        var outcome = screened.outcome
        outcome.fingerprint = resolution.fingerprint.isEmpty ? nil : resolution.fingerprint
        let identity: APIKeyIdentity
        switch resolution.status {
        case .active(let active): identity = active
        case .unknown: return .done(refuse(.invalidKey("the API key is not valid"), "unknown_key", outcome))
        case .revoked: return .done(refuse(.invalidKey("the API key is not valid"), "revoked_key", outcome))
        case .expired: return .done(refuse(.invalidKey("the API key has expired"), "expired_key", outcome))
        }
        outcome.identity = identity

        let policy = screened.policy
        var route: RouteSettings?
        switch screened.match {
        case .route(let index, let organization):
            let rule = policy.routes.routes[index]
            route = rule
            outcome.route = rule.path
            if let scope = rule.scope, !identity.scopes.contains(scope) {
                return .done(refuse(.insufficientScope(scope), "insufficient_scope", outcome))
            }
            if let organization, organization != identity.organization {
                return .done(refuse(.otherOrganization(), "other_organization", outcome))
            }
        case .unmatched:
            if policy.routes.unmatched == .notFound { return .done(refuse(.notFound(), "not_found", outcome)) }
        case .invalidPath:
            break
        }

        guard let narrowed = policy.plan(named: identity.plan, selection: route?.limits ?? .all) else {
            logger.error(
                "API key is on a plan the configuration does not define",
                metadata: ["plan": "\(identity.plan)", "key": "\(identity.fingerprint)", "organization": "\(identity.organization)"])
            return .done(refuse(.internalError("this API key's plan is not configured; the operator has been told"), "unknown_plan", outcome))
        }
        let costRule = route?.cost ?? .fixed(1)
        if case .fixed(let fixed) = costRule { outcome.cost = fixed }
        return .next(
            Authorized(
                policy: policy, costRule: costRule,
                partition: Partition(organization: identity.organization, apiKey: identity.keyID), plan: narrowed,
                outcome: outcome))
    }

    private func storeFailed(_ error: any Error, _ outcome: RateLimitOutcome) -> Judgement {
        metrics.storeErrors.increment()
        logger.error("limit store failed", metadata: ["error": "\(error)"])
        return refuse(.unavailable("the rate limit store cannot be reached", retryAfterSeconds: 1), "store_unavailable", outcome)
    }

    /// The store's decision as the answer: admitted with its fields, 429, or 503.
    private func conclude(_ decision: Decision, _ authorized: Authorized, started: ContinuousClock.Instant) -> Judgement {
        let latency = ContinuousClock.now - started
        metrics.storeLatency.record(latency)
        var outcome = authorized.outcome
        outcome.storeLatency = latency
        guard let plan = outcome.plan else { return .admitted(outcome) }
        metrics.record(decision, plan: plan)
        outcome.decision = decision
        outcome.includesLegacyHeaders = authorized.policy.legacyHeaders

        switch decision.denial {
        case nil:
            return .admitted(outcome)
        case .limited, .costExceedsCapacity:
            outcome.refusal = decision.denial == .limited ? "limited" : "cost_exceeds_capacity"
            return .refused(Problem.quotaExceeded(decision, plan: plan, cost: outcome.cost, rateLimitFields: outcome.headers), outcome)
        case .storeUnavailable:
            outcome.refusal = "store_unavailable"
            let seconds = RateLimitHeaders.retryAfter(decision).flatMap { Int64($0) } ?? 1
            return .refused(Problem.unavailable("the rate limit store cannot be reached", retryAfterSeconds: seconds), outcome)
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

    /// The number of elements of the JSON array at `field` of `body`.
    static func itemCount(in body: ByteBuffer, field: [String]) -> Result<Int, BodyFailure> {
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
