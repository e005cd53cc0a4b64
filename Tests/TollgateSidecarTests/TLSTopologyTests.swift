import Foundation
import Logging
import Testing
import Tollgate
import TollgateSidecar
import TollgateTestSupport

@testable import TollgateRedis

extension EndToEnd {
    /// TLS to every node of a Redis Cluster and to sentinels and the primary they name: servers that
    /// serve TLS only (`--tls-port`, `--port 0`), with certificates for `localhost` made by the test.
    @Suite(
        .enabled(
            if: RedisTestServer.serverSupportsTLS,
            "SKIPPED: TOLLGATE_REDIS_SERVER_TLS=no says the server under test (TOLLGATE_REDIS_SERVER) was built without TLS; the Cluster and Sentinel TLS tests need a server with TLS"),
        .serialized)
    struct TLSTopologyTests {
        /// One TLS-only cluster of three primaries (no replicas), whose nodes announce the certificate's
        /// name: checks spread over every primary, the key registry, `MOVED` after a slot changes owner;
        /// then the nodes announce their addresses instead, which the certificate does not carry: refused
        /// with the reason unless the TLS server name is set.
        @Test func clusterOverTLS() async throws {
            let authority = try await TestCertificateAuthority.make()
            defer { authority.remove() }
            let cluster = try await RedisTestCluster.start(replicas: 0, tls: authority, announceHostname: "localhost")
            do {
                try await byHostname(cluster, authority)
                try await byAddress(cluster, authority)
            } catch {
                await cluster.stop()
                throw error
            }
            await cluster.stop()
        }

        private func byHostname(_ cluster: RedisTestCluster, _ authority: TestCertificateAuthority) async throws {
            #expect(cluster.urls.allSatisfy { $0.hasPrefix("rediss://localhost:") })
            let configuration = try RedisClusterConfiguration(urls: cluster.urls, tls: RedisTLSConfiguration(caFile: authority.caFile))
            try await withRunning(configuration) { client in
                // The map names the nodes by the name their certificate carries.
                #expect(client.primaryAddresses.count == 3)
                #expect(client.primaryAddresses.allSatisfy { $0.host == "localhost" }, "\(client.primaryAddresses)")

                // Checks on every primary: exact admission, every answer from Redis.
                let store = RedisLimitStore(backend: .cluster(client), configuration: .init(failurePolicy: .deny, denyCache: false), logger: quietLogger)
                let plan = try Plan(name: "tls-cluster", limits: [Limit(name: "hour", algorithm: .fixedWindow(limit: 3, window: 3_600_000_000))])
                let organizations = spread(over: client, prefix: "tls\(UInt32.random(in: 0...UInt32.max))-")
                #expect(Set(organizations.keys) == Set(client.primaryAddresses))
                for organization in organizations.values {
                    var allowed: [Bool] = []
                    for _ in 0..<4 {
                        let decision = try await store.check(plan, partition: Partition(organization: organization, apiKey: "k"), cost: 1)
                        #expect(decision.origin == .store, "\(organization): \(decision)")
                        allowed.append(decision.isAllowed)
                    }
                    #expect(allowed == [true, true, true, false], "\(organization)")
                }

                // The key registry: hashes on their slots' primaries, read back and listed over TLS.
                let source = RedisKeySource(cluster: client, logger: quietLogger)
                var digests: [KeyDigest] = []
                for index in 0..<12 {
                    let digest = KeyDigest(ofKeyText: "wz_test_tls-cluster-\(index)-\(UInt64.random(in: 0...UInt64.max))")
                    let name = RedisKeySource.redisKey(digest)
                    _ = try await client.send(["HSET", name, "org", "org_\(index % 3)", "plan", "pro", "scopes", "messages:send"], key: name)
                    digests.append(digest)
                }
                #expect(Set(digests.compactMap { client.primary(ofSlot: HashSlot.of(key: RedisKeySource.redisKey($0))) }).count == 3)
                for (index, digest) in digests.enumerated() {
                    let record = try #require(try await source.record(for: digest))
                    #expect(record.organization == "org_\(index % 3)" && record.plan == "pro" && record.scopes == ["messages:send"])
                }
                let listed = try await source.records(hexPrefix: "")
                #expect(Set(listed.map(\.digest.hex)) == Set(digests.map(\.hex)))

                // A slot changes owner (it holds no key yet): the old owner answers MOVED with the new owner's
                // name, which the certificate carries; the check is answered there, and the map follows.
                let organization = "moved\(UInt32.random(in: 0...UInt32.max))"
                let slot = HashSlot.of(hashTag: LimitKeys.hashTag(organization))
                let owner = try #require(client.primary(ofSlot: slot))
                let target = try #require(client.primaryAddresses.first { $0 != owner })
                let targetID = try await cluster.id(of: target.port)
                let refreshes = client.refreshCount
                for port in [target.port, owner.port] + cluster.nodes.map(\.port).filter({ $0 != target.port && $0 != owner.port }) {
                    _ = try await cluster.cli(port, ["CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID])
                }
                let moved = try await store.check(plan, partition: Partition(organization: organization, apiKey: "k"), cost: 1)
                #expect(moved.origin == .store && moved.isAllowed, "\(moved)")
                #expect(client.primary(ofSlot: slot) == target)
                try await eventually("the map read again after MOVED") { client.refreshCount > refreshes }
                let keys = try await cluster.cli(target.port, ["CLUSTER", "COUNTKEYSINSLOT", "\(slot)"])
                #expect(keys.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "the check's key is on the new owner")
            }
        }

        private func byAddress(_ cluster: RedisTestCluster, _ authority: TestCertificateAuthority) async throws {
            for node in cluster.nodes {
                _ = try await cluster.cli(node.port, ["CONFIG", "SET", "cluster-preferred-endpoint-type", "ip"])
            }
            // The seeds are reached by name, the primaries at the addresses the map names: the certificate
            // names no address, so without a server name no primary is reached, and the error says why.
            var configuration = try RedisClusterConfiguration(urls: cluster.urls, tls: RedisTLSConfiguration(caFile: authority.caFile))
            configuration.node.connectTimeout = .milliseconds(300)
            configuration.node.reconnectBackoffMaximum = .milliseconds(100)
            let client = try RedisClusterClient(configuration: configuration, logger: quietLogger)
            let runner = Task { await client.run() }
            do {
                try await eventually("the map by address", timeout: .seconds(10)) {
                    client.primaryAddresses.count == 3 && client.primaryAddresses.allSatisfy { $0.host == "127.0.0.1" }
                }
                do {
                    _ = try await client.send(["PING"], key: "tg:{org}:x")
                    Issue.record("a primary reached by address was accepted with a certificate that names no address")
                } catch {
                    #expect(error.code == .notConnected)
                    #expect("\(error)".contains("not valid for the address 127.0.0.1:"), "\(error)")
                }
            }
            runner.cancel()
            await runner.value

            // With the certificate's name as the TLS server name, every address is verified against it.
            configuration.node.tls?.serverName = "localhost"
            try await withRunning(configuration) { client in
                #expect(client.primaryAddresses.allSatisfy { $0.host == "127.0.0.1" })
                let store = RedisLimitStore(backend: .cluster(client), configuration: .init(failurePolicy: .deny, denyCache: false), logger: quietLogger)
                let plan = try Plan(name: "tls-ip", limits: [Limit(name: "hour", algorithm: .fixedWindow(limit: 100, window: 3_600_000_000))])
                for organization in spread(over: client, prefix: "ip\(UInt32.random(in: 0...UInt32.max))-").values {
                    let decision = try await store.check(plan, partition: Partition(organization: organization, apiKey: "k"), cost: 1)
                    #expect(decision.origin == .store && decision.isAllowed, "\(decision)")
                }
            }
        }

        /// A primary, its replica and three sentinels, all TLS only: the primary found through the sentinels
        /// (verified against the TLS server name: they name it by address), checks over TLS, and a
        /// failover followed through the sentinels' `+switch-master` over TLS.
        @Test func sentinelOverTLS() async throws {
            let authority = try await TestCertificateAuthority.make()
            defer { authority.remove() }
            let group = try await RedisTestSentinels.start(tls: authority)
            do {
                var configuration = try RedisSentinelConfiguration(
                    masterName: group.masterName, urls: group.urls, tls: RedisTLSConfiguration(caFile: authority.caFile, serverName: "localhost"))
                configuration.node.reconnectBackoffMaximum = .milliseconds(200)
                let client = try RedisSentinelClient(configuration: configuration, logger: quietLogger)
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { await client.run() }
                    try await client.waitUntilConnected(timeout: .seconds(10))
                    #expect(client.primaryAddress == ClusterAddress(host: "127.0.0.1", port: group.servers[0].port))
                    let store = RedisLimitStore(
                        backend: .sentinel(client), configuration: .init(failurePolicy: .deny, breakerProbeInterval: .milliseconds(100), denyCache: false),
                        logger: quietLogger)
                    let plan = try Plan(name: "tls-sentinel", limits: [Limit(name: "hour", algorithm: .fixedWindow(limit: 2, window: 3_600_000_000))])
                    let partition = Partition(organization: "org_tls_sentinel", apiKey: "k")
                    var allowed: [Bool] = []
                    for _ in 0..<3 {
                        let decision = try await store.check(plan, partition: partition, cost: 1)
                        #expect(decision.origin == .store)
                        allowed.append(decision.isAllowed)
                    }
                    #expect(allowed == [true, true, false])

                    // A failover the sentinels run: the replica becomes the primary, and checks follow it.
                    _ = try await group.cli(group.sentinels[0].port, ["SENTINEL", "FAILOVER", group.masterName])
                    try await eventually("the client following the failover", timeout: .seconds(20)) {
                        client.primaryAddress?.port == group.servers[1].port
                    }
                    try await eventually("a check answered by the new primary", timeout: .seconds(10)) {
                        (try? await store.check(plan, partition: Partition(organization: "org_tls_after", apiKey: "k"), cost: 1))?.origin == .store
                    }
                    tasks.cancelAll()
                }
            } catch {
                await group.stop()
                throw error
            }
            await group.stop()
        }

        /// Runs `body` with a running client of `configuration`, connected to every primary.
        private func withRunning(_ configuration: RedisClusterConfiguration, _ body: (RedisClusterClient) async throws -> Void) async throws {
            let client = try RedisClusterClient(configuration: configuration, logger: quietLogger)
            let runner = Task { await client.run() }
            do {
                try await client.waitUntilConnected(timeout: .seconds(10))
                try await body(client)
            } catch {
                runner.cancel()
                await runner.value
                throw error
            }
            runner.cancel()
            await runner.value
        }
    }
}

/// An organization for each primary of `client`'s map, by the primary that serves it.
func spread(over client: RedisClusterClient, prefix: String) -> [ClusterAddress: String] {
    var byPrimary: [ClusterAddress: String] = [:]
    let primaries = client.primaryAddresses.count
    for index in 0..<100_000 {
        if byPrimary.count == primaries { break }
        let organization = "\(prefix)\(index)"
        if let primary = client.primary(forHashTag: LimitKeys.hashTag(organization)), byPrimary[primary] == nil {
            byPrimary[primary] = organization
        }
    }
    return byPrimary
}

/// Waits until `condition` holds, polling every millisecond; throws after `timeout`.
func eventually(_ what: String, timeout: Duration = .seconds(5), _ condition: () async -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while await !condition() {
        guard ContinuousClock.now < deadline else { throw TestSetupError(description: "\(what) did not happen within \(timeout)") }
        try await Task.sleep(for: .milliseconds(1))
    }
}
