import Metrics
import Synchronization

/// The sidecar's own metrics, next to the rate limiter's (`tollgate_checks_total`, …), the registry's
/// (`tollgate_key_lookups_total`) and the Redis store's (`tollgate_redis_*`):
///
/// - `tollgate_http_responses_total{status}`: every answer of the proxy listener, by status code.
/// - `tollgate_upstream_responses_total{status}`: upstream answers by status code, or `refused`,
///   `timeout`, `error` when there was none (answered 502 or 504).
/// - `tollgate_upstream_duration_seconds`: time from forwarding to the upstream's response head.
/// - `tollgate_store_info{backend, failure_policy}`: 1, naming the store and its failure mode.
/// - `tollgate_config_reloads_total{result}`: `applied` or `refused` reloads.
final class SidecarMetrics: Sendable {
    private let factory: any MetricsFactory
    private let counters = Mutex<[String: Counter]>([:])
    let upstreamLatency: Timer

    init(factory: any MetricsFactory) {
        self.factory = factory
        upstreamLatency = Timer(label: "tollgate_upstream_duration_seconds", dimensions: [], factory: factory)
        // Both series from the start, at 0: an alert on their increase has something to compare with.
        for result in ["applied", "refused"] { _ = counter("tollgate_config_reloads_total", "result", result) }
    }

    private func counter(_ label: String, _ name: String, _ value: String) -> Counter {
        let key = label + "|" + value
        return counters.withLock { table in
            if let counter = table[key] { return counter }
            let counter = Counter(label: label, dimensions: [(name, value)], factory: factory)
            table[key] = counter
            return counter
        }
    }

    /// Counters by status code, made on first use (no label text built per request); keyed by
    /// status, plus 1000 for the upstream's.
    private let byStatus = Mutex<[Int: Counter]>([:])

    func response(_ status: Int) {
        counter(forStatus: status, upstream: false).increment()
    }

    func upstream(status: Int) {
        counter(forStatus: status, upstream: true).increment()
    }

    private func counter(forStatus status: Int, upstream: Bool) -> Counter {
        let key = status + (upstream ? 1000 : 0)
        if let counter = byStatus.withLock({ $0[key] }) { return counter }
        let made = counter(upstream ? "tollgate_upstream_responses_total" : "tollgate_http_responses_total", "status", String(status))
        byStatus.withLock { $0[key] = made }
        return made
    }

    func upstream(_ status: String) {
        counter("tollgate_upstream_responses_total", "status", status).increment()
    }

    func reload(_ result: String) {
        counter("tollgate_config_reloads_total", "result", result).increment()
    }

    func storeInfo(backend: String, failurePolicy: String) {
        Gauge(label: "tollgate_store_info", dimensions: [("backend", backend), ("failure_policy", failurePolicy)], factory: factory)
            .record(1)
    }
}

extension Timer {
    /// Records a `Duration` in nanoseconds.
    func record(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
