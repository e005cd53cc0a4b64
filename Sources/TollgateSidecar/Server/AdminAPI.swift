import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization
import Tollgate
import TollgateHTTP

/// The admin listener's request context: the peer's address, logged with every change an operator makes.
public struct AdminRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The peer of the connection.
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// The admin API under `/v1`, behind a bearer token (`server.admin_token` or `TOLLGATE_ADMIN_TOKEN`),
/// compared in constant time. Without a token configured, every `/v1` route answers 404: only
/// `/healthz`, `/readyz` and `/metrics` exist. Errors are `application/problem+json`.
///
/// - `GET /v1/usage?key=<key id>` or `?org=<organization>`: every limit of the key's plan (quota, used,
///   remaining, reset and window in seconds), read from the store without consuming (`CounterAdmin`).
/// - `DELETE /v1/usage?key=…|org=…[&limit=<name>]`: resets those counters; logged at `notice` with the
///   caller's address and user agent and what was reset.
/// - `GET /v1/config`: the configuration in force, secrets redacted, and the SHA-256 of its file.
/// - `POST /v1/reload`: reloads as SIGHUP does; 200 with the new hash, or 422 with the validation error
///   (the previous configuration stays in force).
struct AdminAPI: Sendable {
    let sidecar: Sidecar

    /// The token in force: the environment's, else the file's.
    static func token(_ settings: ServerSettings, environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let token = environment["TOLLGATE_ADMIN_TOKEN"], !token.isEmpty { return token }
        return settings.adminToken
    }

    func add(to router: Router<AdminRequestContext>) {
        let v1 = router.group("v1")
        v1.get("usage") { request, context in try await authorized(request) { try await usage(request) } }
        v1.delete("usage") { request, context in try await authorized(request) { try await reset(request, context: context) } }
        v1.get("config") { request, _ in try await authorized(request) { config() } }
        v1.post("reload") { request, _ in try await authorized(request) { reload() } }
    }

    /// Answers 404 without a token configured, 401 without the right bearer token, `body()` otherwise.
    func authorized(_ request: Request, _ body: () async throws -> Response) async throws -> Response {
        guard let expected = sidecar.adminToken.withLock({ $0 }) else {
            return Problem.notFound().response()
        }
        let given = request.headers[.authorization].flatMap { value -> Substring? in
            let parts = value.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
            return parts[1].drop { $0 == " " }
        }
        // Digests of equal length, compared in constant time: neither the token's length nor its bytes show.
        let match = given.map { ConstantTime.equals(Array(SHA256.hash(data: Array($0.utf8))), Array(SHA256.hash(data: Array(expected.utf8)))) } ?? false
        guard match else {
            return Problem(
                status: .unauthorized, detail: "the admin API needs the bearer token of server.admin_token or TOLLGATE_ADMIN_TOKEN",
                headers: [.wwwAuthenticate: "Bearer realm=\"tollgate-admin\""]
            ).response()
        }
        return try await body()
    }

    func counters() throws(CounterAdmin.Failure) -> CounterAdmin {
        guard let keys = sidecar.keyRegistry.source as? any KeyListing else {
            throw CounterAdmin.Failure(status: .notImplemented, message: "the key source cannot list keys")
        }
        return CounterAdmin(store: sidecar.store, plans: sidecar.limiter.policy.plans, keys: keys)
    }

    func target(_ request: Request) throws(CounterAdmin.Failure) -> CounterAdmin.Target {
        let query = request.uri.queryParameters
        return try CounterAdmin.target(key: query["key"].map(String.init), organization: query["org"].map(String.init))
    }

    func usage(_ request: Request) async throws -> Response {
        do {
            let report = try await counters().usage(target(request))
            return json(.ok, CounterAdmin.json(report))
        } catch {
            return problem(error)
        }
    }

    func reset(_ request: Request, context: AdminRequestContext) async throws -> Response {
        do {
            let limit = request.uri.queryParameters["limit"].map(String.init)
            let report = try await counters().reset(target(request), limit: limit)
            sidecar.logger.notice(
                "counters reset",
                metadata: [
                    "caller": "\(context.remoteAddress?.ipAddress ?? "unknown")",
                    "user_agent": "\(request.headers[.userAgent] ?? "none")",
                    "target": "\(report.target)",
                    "reset": "\(report.reset.map { "\($0.keyId) (\($0.plan)): \($0.limits.joined(separator: ","))" }.joined(separator: "; "))",
                ])
            return json(.ok, CounterAdmin.json(report))
        } catch {
            return problem(error)
        }
    }

    func config() -> Response {
        let snapshot = sidecar.snapshot
        let body: [String: Any] = ["file": snapshot.file, "sha256": snapshot.sha256, "configuration": snapshot.redacted]
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data("{}".utf8)
        return json(.ok, String(decoding: data, as: UTF8.self))
    }

    func reload() -> Response {
        do {
            let snapshot = try sidecar.reloadOrThrow()
            return json(.ok, "{\"result\":\"applied\",\"sha256\":\"\(snapshot.sha256)\"}")
        } catch {
            return Problem(status: .unprocessableContent, title: "Configuration refused", detail: error.description).response()
        }
    }

    func problem(_ failure: CounterAdmin.Failure) -> Response {
        Problem(status: failure.status, detail: failure.message).response()
    }

    func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        AdminRoutes.text(status, text + "\n", contentType: "application/json")
    }
}
