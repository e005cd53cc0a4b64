import AsyncHTTPClient
import Foundation
import Testing
import TollgateSidecar
import TollgateTestSupport

extension EndToEnd {
    /// The deployment kit's monitoring names only metrics the sidecar exports: a sidecar on Redis in
    /// front of a real upstream is driven through admissions, near-limit admissions and refusals, its
    /// `/metrics` scraped, and every `tollgate_…` name of the Grafana dashboard and the alert rules looked up.
    @Suite struct DeployKitTests {
        /// The repository's top folder, from this file's place in it.
        static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()

        /// Every metric name in `text` (a dashboard's or a rule file's queries).
        static func metricNames(_ text: String) -> Set<String> {
            let pattern = try! NSRegularExpression(pattern: "tollgate_[a-z0-9_]+")
            let range = NSRange(text.startIndex..., in: text)
            return Set(pattern.matches(in: text, range: range).compactMap { Range($0.range, in: text).map { String(text[$0]) } })
        }

        /// The queries of a Grafana dashboard: every panel target's `expr`.
        static func dashboardQueries(_ url: URL) throws -> String {
            let object = try JSONSerialization.jsonObject(with: try Data(contentsOf: url)) as? [String: Any]
            let panels = object?["panels"] as? [[String: Any]] ?? []
            return panels.flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }.joined(separator: "\n")
        }

        @Test func everyMonitoredMetricIsExported() async throws {
            let monitoring = Self.repository.appendingPathComponent("Config/deploy/monitoring")
            let dashboard = try Self.dashboardQueries(monitoring.appendingPathComponent("tollgate-dashboard.json"))
            let rules = try String(contentsOf: monitoring.appendingPathComponent("tollgate-alerts.yaml"), encoding: .utf8)
            let named = Self.metricNames(dashboard).union(Self.metricNames(rules))
            #expect(named.count >= 10)

            try await withRedisServer { redis in
                try await withUpstream { upstream in
                    let store = "store: { backend: redis, url: \"\(redis.url)\" }"
                    try await withSidecar(configuration(upstream: upstream.url, store: store, basicCapacity: 10)) { sidecar in
                        try await withHTTPClient { client in
                            let send = sidecar.base + "/api/v1/messages/send"
                            // 10 admitted (the last two with under 20 % of the burst left), then refused.
                            for _ in 0..<11 { _ = try await client.send(.POST, send, key: .sender) }
                            _ = try await client.send(.POST, send, key: TestKey(text: "wz_test_unknown_0001"))
                            let scraped = try await client.send(.GET, sidecar.admin + "/metrics").text
                            let exported = Set(
                                scraped.split(separator: "\n").filter { !$0.hasPrefix("#") }
                                    .map { String($0.prefix { $0 != "{" && $0 != " " }) })
                            for name in named.sorted() {
                                #expect(exported.contains(name), "\(name) is in the dashboard or the alert rules but not exported")
                            }
                            #expect(scraped.contains("tollgate_near_limit_total{plan=\"basic\",limit=\"burst\"} 2"))
                            #expect(scraped.contains("tollgate_limit_refusals_total{plan=\"basic\",limit=\"burst\"} 1"))
                        }
                    }
                }
            }
        }
    }
}
