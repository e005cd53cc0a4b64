import HTTPTypes
import Logging
import Synchronization
import Tollgate
import TollgateHTTP

/// One log line per request of the listener, and the response counter.
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
