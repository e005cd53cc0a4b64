import Foundation
import Testing
import Tollgate
import TollgateRedis
import TollgateSidecar
import TollgateTestSupport

extension EndToEnd {
    /// The sidecar on a 3 + 3 Redis Cluster: counters and keys (`tg:key:<sha256>` hashes) on the primaries
    /// of their slots.
    @Suite struct ClusterSidecarTests {
        @Test func sidecarOnACluster() async throws {
            let cluster = try await RedisTestCluster.start()
            do {
                let keys = [TestKey.sender, TestKey.otherOrg]
                let client = try RedisClusterClient(configuration: RedisClusterConfiguration(urls: cluster.urls), logger: quietLogger)
                let runner = Task { await client.run() }
                try await client.waitUntilConnected(timeout: .seconds(10))
                for key in keys {
                    let name = RedisKeySource.redisKey(KeyDigest(ofKeyText: key.text))
                    let command = ["HSET", name, "org", key.org, "plan", key.plan, "scopes", key.scopes.joined(separator: " ")]
                    _ = try await client.send(command, key: name)
                }
                runner.cancel()
                await runner.value

                let seeds = cluster.urls.prefix(2).map { "\"\($0)\"" }.joined(separator: ", ")
                let store = "store: { backend: redis, cluster: [\(seeds)], timeout: 500ms }"
                try await withSidecar(configuration(upstream: nil, store: store, keys: "keys: { source: redis }")) { sidecar in
                    try await withHTTPClient { client in
                        try await waitFor(client, sidecar.admin + "/readyz")
                        let url = sidecar.base + "/api/v1/messages/send"
                        var statuses: [Int] = []
                        for _ in 0..<4 { statuses.append(try await client.send(.POST, url, key: .sender).status) }
                        #expect(statuses == [200, 200, 200, 429])
                        #expect(try await client.send(.POST, url, key: .otherOrg).status == 200)
                        let metrics = try await client.send(.GET, sidecar.admin + "/metrics").text
                        #expect(metrics.contains("tollgate_redis_cluster_refreshes_total{outcome=\"changed\"} 1"))
                    }
                }
                // The counters live on the primaries: org_1's keys on its slot's.
                var counters = 0
                for node in cluster.nodes.prefix(3) {
                    counters += try await cluster.cli(node.port, ["KEYS", "tg:{org_*"]).split(separator: "\n").count
                }
                #expect(counters >= 2)
            } catch {
                await cluster.stop()
                throw error
            }
            await cluster.stop()
        }
    }
}
