import HTTPTypes
import Hummingbird
import NIOCore
import Prometheus

/// The admin listener's routes, on their own port so that they are never exposed with the API:
///
/// - `GET /healthz`: 200 `ok` while the process serves (liveness).
/// - `GET /readyz`: 200 when the limit store and the key registry answer, 503 otherwise, with a JSON body
///   saying which (`{"store":"ok","keys":"unreachable"}`); a memory store and a key file are always ready.
/// - `GET /metrics`: every metric in the Prometheus text format.
/// - `/v1/…`: the admin API (`AdminAPI`), when a token is configured.
enum AdminRoutes {
    static func router(
        registry: PrometheusCollectorRegistry, storeReady: @escaping @Sendable () async -> Bool,
        keysReady: @escaping @Sendable () async -> Bool, api: AdminAPI? = nil
    ) -> Router<AdminRequestContext> {
        let router = Router(context: AdminRequestContext.self)
        api?.add(to: router)
        router.get("/healthz") { _, _ in
            text(.ok, "ok\n", contentType: "text/plain; charset=utf-8")
        }
        router.get("/readyz") { _, _ in
            async let store = storeReady()
            async let keys = keysReady()
            let (storeOK, keysOK) = await (store, keys)
            let body = "{\"store\":\"\(storeOK ? "ok" : "unreachable")\",\"keys\":\"\(keysOK ? "ok" : "unreachable")\"}\n"
            return text(storeOK && keysOK ? .ok : .serviceUnavailable, body, contentType: "application/json")
        }
        router.get("/metrics") { _, _ in
            text(.ok, registry.emitToString(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        }
        return router
    }

    static func text(_ status: HTTPResponse.Status, _ text: String, contentType: String) -> Response {
        let body = ByteBuffer(string: text)
        return Response(
            status: status,
            headers: [.contentType: contentType, .contentLength: String(body.readableBytes), .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: body))
    }
}
