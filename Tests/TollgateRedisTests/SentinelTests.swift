import Foundation
import MetricsTestKit
import Synchronization
import Testing
import Tollgate
import TollgateTestSupport

@testable import TollgateRedis

extension LiveTopologyTests {
    @Suite struct SentinelTests {
        @Test func switchMessages() {
            let message = RedisReply.array([
                .bulkString(.init(string: "message")), .bulkString(.init(string: "+switch-master")),
                .bulkString(.init(string: "tollgate 127.0.0.1 6379 10.0.0.7 6380")),
            ])
            #expect(RedisSentinelClient.switchedPrimary(message, name: "tollgate") == ClusterAddress(host: "10.0.0.7", port: 6380))
            #expect(RedisSentinelClient.switchedPrimary(message, name: "other") == nil)
            #expect(RedisSentinelClient.switchedPrimary(.array([.bulkString(.init(string: "subscribe"))]), name: "tollgate") == nil)
        }

        @Test func configurationFromURLs() throws {
            var primary = RedisConfiguration()
            primary.password = "primary-secret"
            let configuration = try RedisSentinelConfiguration(
                masterName: "tollgate", urls: ["redis://:sentinel-secret@10.0.0.5:26379", "redis://10.0.0.6:26379"], primary: primary)
            #expect(configuration.sentinels == [ClusterAddress(host: "10.0.0.5", port: 26379), ClusterAddress(host: "10.0.0.6", port: 26379)])
            #expect(configuration.configuration(ofSentinel: configuration.sentinels[1]).password == "sentinel-secret")
            #expect(configuration.configuration(ofPrimary: ClusterAddress(host: "10.0.0.9", port: 6379)).password == "primary-secret")
            #expect(throws: RedisClientError.self) { try RedisSentinelConfiguration(masterName: "x", urls: []) }
            #expect(throws: RedisClientError.self) { try RedisSentinelConfiguration(masterName: "two words", urls: ["redis://a:1"]).validate() }
            #expect(throws: RedisClientError.self) { try RedisSentinelConfiguration(masterName: "x", urls: ["redis://a:1", "rediss://b:2"]) }
        }

        /// A primary, a replica and three sentinels: the primary killed with SIGKILL, the sentinels elect the
        /// replica, and checks resume on it (its script loaded on `NOSCRIPT`); meanwhile the failure policy answers.
        @Test func checksFollowTheFailover() async throws {
            let group = try await RedisTestSentinels.start()
            do {
                var configuration = try RedisSentinelConfiguration(masterName: group.masterName, urls: group.urls)
                configuration.node.reconnectBackoffMaximum = .milliseconds(200)
                let client = try RedisSentinelClient(configuration: configuration, logger: quietLogger, metricsFactory: TestMetrics())
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { await client.run() }
                    try await client.waitUntilConnected(timeout: .seconds(10))
                    #expect(client.primaryAddress?.port == group.servers[0].port)
                    let store = RedisLimitStore(
                        backend: .sentinel(client), configuration: .init(breakerProbeInterval: .milliseconds(200), denyCache: false), logger: quietLogger)
                    let plan = try Plan(
                        name: "sentinel", limits: [Limit(name: "hour", algorithm: .fixedWindow(limit: 1_000_000, window: 3_600 * second))])
                    let organization = "org_sentinel"
                    let log = LoadLog()
                    tasks.addTask { try await log.checkUntilStopped(store, plan, Partition(organization: organization, apiKey: "k")) }
                    try await waitUntil("checks on the first primary") { log.count(organization) > 20 }
                    await group.servers[0].kill()
                    let killedAt = ContinuousClock.now
                    try await waitUntil("the failure policy answering", timeout: .seconds(5)) { log.failed(organization, after: killedAt) }
                    try await waitUntil("checks resumed on the new primary", timeout: group.downAfter + .seconds(15)) {
                        log.resumed(organization, after: killedAt) != nil
                    }
                    #expect(client.primaryAddress?.port == group.servers[1].port)
                    log.running.store(false, ordering: .relaxed)
                    tasks.cancelAll()
                }
            } catch {
                await group.stop()
                throw error
            }
            await group.stop()
        }
    }
}
