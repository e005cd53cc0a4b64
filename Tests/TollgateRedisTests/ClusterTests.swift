import Foundation
import MetricsTestKit
import Synchronization
import Testing
import Tollgate
import TollgateTestSupport

@testable import TollgateRedis

/// The cluster's pure parts: slots, the map's two shapes, redirections.
@Suite struct ClusterMapTests {
    @Test func slotsAreRedisOwn() {
        // Redis' own examples (CLUSTER KEYSLOT): "foo" is 12182; a tag hashes alone.
        #expect(HashSlot.crc16(Array("123456789".utf8)) == 0x31C3)
        #expect(HashSlot.of(key: "foo") == 12182)
        #expect(HashSlot.of(key: "{user1000}.following") == HashSlot.of(key: "{user1000}.followers"))
        #expect(HashSlot.of(key: "tg:{org_1}:abc123:kkey") == HashSlot.of(hashTag: "org_1"))
        // An empty tag does not count: the whole key hashes.
        #expect(HashSlot.of(key: "{}foo") == Int(HashSlot.crc16(Array("{}foo".utf8)) & 0x3FFF))
    }

    @Test func redirections() {
        let node = ClusterAddress(host: "10.0.0.9", port: 7000)
        #expect(RedisClusterClient.redirection("MOVED 3999 127.0.0.1:6381", from: node)! == (3999, ClusterAddress(host: "127.0.0.1", port: 6381)))
        #expect(RedisClusterClient.redirection("ASK 12 :6390", from: node)! == (12, ClusterAddress(host: "10.0.0.9", port: 6390)))
        #expect(RedisClusterClient.redirection("ASK 1 ::1:6390", from: node)!.address == ClusterAddress(host: "::1", port: 6390))
        #expect(RedisClusterClient.redirection("MOVED 16384 127.0.0.1:6381", from: node) == nil)
        #expect(RedisClusterClient.redirection("MOVED x", from: node) == nil)
    }

    private func pairs(_ items: [(String, RedisReply)]) -> RedisReply {
        .array(items.flatMap { [RedisReply.bulkString(.init(string: $0.0)), $0.1] })
    }

    private func text(_ value: String) -> RedisReply { .bulkString(.init(string: value)) }

    @Test func shardsPickTheHealthyPrimary() throws {
        func member(_ port: Int64, _ role: String, _ health: String, endpoint: String = "127.0.0.1", tlsPort: Int64? = nil) -> RedisReply {
            var items: [(String, RedisReply)] = [
                ("id", text("x")), ("port", .integer(port)), ("ip", text("10.1.1.1")), ("endpoint", text(endpoint)),
                ("role", text(role)), ("replication-offset", .integer(0)), ("health", text(health)),
            ]
            if let tlsPort { items.append(("tls-port", .integer(tlsPort))) }
            return pairs(items)
        }
        let reply = RedisReply.array([
            pairs([("slots", .array([.integer(0), .integer(99), .integer(200), .integer(299)])), ("nodes", .array([member(7001, "master", "online"), member(7004, "replica", "online")]))]),
            // A failed primary with its replica not yet elected: left out.
            pairs([("slots", .array([.integer(100), .integer(199)])), ("nodes", .array([member(7002, "master", "fail"), member(7005, "replica", "online")]))]),
            // No endpoint known to the node: its ip.
            pairs([("slots", .array([.integer(300), .integer(16383)])), ("nodes", .array([member(7003, "master", "online", endpoint: "?", tlsPort: 8003)]))]),
            // A primary with no slots at all.
            pairs([("slots", .array([])), ("nodes", .array([member(7009, "master", "online")]))]),
        ])
        let asked = ClusterAddress(host: "seed", port: 1)
        let ranges = try ClusterMap.fromShards(reply, answeredBy: asked, tls: false)
        #expect(ranges == [
            SlotRange(first: 0, last: 99, primary: ClusterAddress(host: "127.0.0.1", port: 7001)),
            SlotRange(first: 200, last: 299, primary: ClusterAddress(host: "127.0.0.1", port: 7001)),
            SlotRange(first: 300, last: 16383, primary: ClusterAddress(host: "10.1.1.1", port: 7003)),
        ])
        #expect(try ClusterMap.fromShards(reply, answeredBy: asked, tls: true).last?.primary.port == 8003)
        #expect(throws: RedisClientError.self) { try ClusterMap.fromShards(.array([self.text("x")]), answeredBy: asked, tls: false) }
        #expect(throws: RedisClientError.self) {
            try ClusterMap.fromShards(.array([self.pairs([("slots", .array([.integer(5), .integer(70000)])), ("nodes", .array([member(1, "master", "online")]))])]), answeredBy: asked, tls: false)
        }
    }

    @Test func slotsReplyOfOlderServers() throws {
        let reply = RedisReply.array([
            .array([.integer(0), .integer(5460), .array([text("127.0.0.1"), .integer(7001), text("id1")]), .array([text("127.0.0.1"), .integer(7004)])]),
            .array([.integer(5461), .integer(16383), .array([text(""), .integer(7002), text("id2")])]),
        ])
        let ranges = try ClusterMap.fromSlots(reply, answeredBy: ClusterAddress(host: "10.0.0.5", port: 7002))
        #expect(ranges.map(\.primary) == [ClusterAddress(host: "127.0.0.1", port: 7001), ClusterAddress(host: "10.0.0.5", port: 7002)])
        #expect(throws: RedisClientError.self) { try ClusterMap.fromSlots(.array([.array([.integer(1)])]), answeredBy: ClusterAddress(host: "h", port: 1)) }
    }

    @Test func configurationFromURLs() throws {
        let configuration = try RedisClusterConfiguration(urls: ["redis://u:p@10.0.0.1:7000", "redis://10.0.0.2"])
        #expect(configuration.seeds == [ClusterAddress(host: "10.0.0.1", port: 7000), ClusterAddress(host: "10.0.0.2", port: 6379)])
        #expect(configuration.node.username == "u")
        #expect(configuration.configuration(of: ClusterAddress(host: "10.0.0.3", port: 7002)).password == "p")
        #expect(throws: RedisClientError.self) { try RedisClusterConfiguration(urls: []) }
        #expect(throws: RedisClientError.self) { try RedisClusterConfiguration(urls: ["redis://a:1/3"]) }
        #expect(throws: RedisClientError.self) { try RedisClusterConfiguration(urls: ["unix:///tmp/x.sock"]) }
        #expect(throws: RedisClientError.self) { try RedisClusterConfiguration(urls: ["redis://a:1", "rediss://b:2"]) }
    }
}

/// Runs `body` with a fresh 3 + 3 cluster, a running client on it, and its metrics.
func withCluster(
    connections: Int = 2, _ body: (RedisTestCluster, RedisClusterClient, TestMetrics) async throws -> Void
) async throws {
    let cluster = try await RedisTestCluster.start()
    do {
        var configuration = try RedisClusterConfiguration(urls: cluster.urls)
        configuration.node.connections = connections
        configuration.node.reconnectBackoffMaximum = .milliseconds(200)
        let metrics = TestMetrics()
        let client = try RedisClusterClient(configuration: configuration, logger: quietLogger, metricsFactory: metrics)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            do {
                try await client.waitUntilConnected(timeout: .seconds(10))
                try await body(cluster, client, metrics)
            } catch {
                group.cancelAll()
                throw error
            }
            group.cancelAll()
        }
    } catch {
        await cluster.stop()
        throw error
    }
    await cluster.stop()
}

/// Organizations, one or more on each primary of `client`'s map: `perPrimary` each.
func organizations(spreadOver client: RedisClusterClient, perPrimary: Int, prefix: String) -> [ClusterAddress: [String]] {
    var byPrimary: [ClusterAddress: [String]] = [:]
    var index = 0
    while byPrimary.count < client.primaryAddresses.count || byPrimary.values.contains(where: { $0.count < perPrimary }) {
        let organization = "\(prefix)\(index)"
        index += 1
        guard let primary = client.primary(forHashTag: LimitKeys.hashTag(organization)) else { continue }
        if byPrimary[primary, default: []].count < perPrimary { byPrimary[primary, default: []].append(organization) }
        if index > 100_000 { break }
    }
    return byPrimary
}

/// What callers under load saw: every answer, by organization, when and whether Redis gave it.
final class LoadLog: Sendable {
    let running = Atomic<Bool>(true)
    let admitted = Atomic<Int>(0)
    private let answers = Mutex<[String: [(at: ContinuousClock.Instant, fromStore: Bool)]]>([:])

    func record(_ organization: String, _ decision: Decision) {
        let at = ContinuousClock.now
        answers.withLock { $0[organization, default: []].append((at, decision.origin == .store)) }
        if decision.isAllowed { admitted.add(1, ordering: .relaxed) }
    }

    func count(_ organization: String) -> Int { answers.withLock { $0[organization, default: []].count } }

    /// Answers not from Redis (the failure policy's).
    func failures(_ organization: String) -> Int { answers.withLock { $0[organization, default: []].filter { !$0.fromStore }.count } }

    /// Whether an answer not from Redis came after `instant`.
    func failed(_ organization: String, after instant: ContinuousClock.Instant) -> Bool {
        answers.withLock { $0[organization, default: []].contains { $0.at > instant && !$0.fromStore } }
    }

    /// The first answer from Redis after `instant`, if any yet.
    func resumed(_ organization: String, after instant: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        answers.withLock { $0[organization, default: []].first { $0.at > instant && $0.fromStore }?.at }
    }

    /// Runs checks of `partition` until `running` is cleared, recording each answer (callers of a failing
    /// store pause 2 ms between answers, as a client would).
    func checkUntilStopped(_ store: RedisLimitStore, _ plan: Plan, _ partition: Partition) async throws {
        while running.load(ordering: .relaxed) {
            let decision = try await store.check(plan, partition: partition, cost: 1)
            record(partition.organization, decision)
            if decision.origin != .store { try await Task.sleep(for: .milliseconds(2)) }
        }
    }
}

func counter(_ metrics: TestMetrics, _ label: String, _ dimensions: [(String, String)]) -> Int64 {
    (try? metrics.expectCounter(label, dimensions))?.totalValue ?? 0
}

/// The sum of a per-node counter over every node it was made for.
func total(_ metrics: TestMetrics, _ label: String, kind: String) -> Int64 {
    metrics.counters.filter { $0.label == label && $0.dimensions.contains { $0 == ("kind", kind) } }.reduce(0) { $0 + $1.totalValue }
}

/// The live tests that start whole topologies (six servers for a cluster, five for Sentinel): one at a
/// time, so that they do not also load the machine side by side.
@Suite(.serialized) struct LiveTopologyTests {}

extension LiveTopologyTests {
    @Suite(.serialized) struct ClusterTests {
        /// Organizations spread over all three primaries decide exactly as the in-process store on the same
        /// sequence; then a busy organization's slot migrates under load (ASK, then MOVED) with every check
        /// answered and its counts exact.
        @Test func decisionsAndResharding() async throws {
            try await withCluster { cluster, client, metrics in
                #expect(client.primaryAddresses.count == 3)
                let store = RedisLimitStore(backend: .cluster(client), logger: quietLogger)
                let plan = try everyAlgorithmPlan()
                let start: Int64 = 1_767_225_600 * second + 59 * second
                let clock = ManualClock(microseconds: start)
                let memory = MemoryStore(configuration: .init(maximumEntries: 1_000, shards: 4), clock: clock)
                let spread = organizations(spreadOver: client, perPrimary: 2, prefix: "o\(UInt32.random(in: 0...UInt32.max))-")
                #expect(spread.count == 3, "organizations on every primary")
                // API key ids are unique across organizations (the in-process store keys a key's limits by its id alone).
                let partitions = spread.values.flatMap { $0 }.flatMap { org in (0..<2).map { Partition(organization: org, apiKey: "\(org)-k\($0)") } }
                var random = SplitMix64(seed: 15)
                for step in 0..<900 {
                    clock.advance(microseconds: Int64(random.next() % 400_000))
                    let cost = Int(random.next() % 3)
                    let partition = partitions[Int(random.next() % UInt64(partitions.count))]
                    let expected = try memory.checkNow(plan, partition: partition, cost: cost)
                    let actual = try await store.check(plan, partition: partition, cost: cost, at: clock.now())
                    let context = Comment(rawValue: "step \(step) \(partition.organization) \(partition.apiKey) cost \(cost) slot \(HashSlot.of(hashTag: LimitKeys.hashTag(partition.organization)))")
                    try #require(actual.origin == .store, context)
                    try #require(actual.denial == expected.denial, context)
                    try #require(actual.retryAfterMicroseconds == expected.retryAfterMicroseconds, context)
                    try #require(Array(actual.results) == Array(expected.results), context)
                }
                // Every primary holds some of the keys.
                for port in cluster.nodes.prefix(3).map(\.port) {
                    let keys = Int(try await cluster.cli(port, ["DBSIZE"]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
                    #expect(keys > 0, "primary \(port) holds \(keys) keys")
                }
                #expect(total(metrics, "tollgate_redis_redirects_total", kind: "moved") == 0, "no MOVED on a warm map")

                try await reshardUnderLoad(cluster: cluster, client: client, metrics: metrics)
            }
        }

        private func reshardUnderLoad(cluster: RedisTestCluster, client: RedisClusterClient, metrics: TestMetrics) async throws {
            let store = RedisLimitStore(backend: .cluster(client), configuration: .init(denyCache: false), logger: quietLogger)
            let limit = 400
            let plan = try Plan(
                name: "migrating",
                limits: [
                    Limit(name: "org-hour", algorithm: .fixedWindow(limit: Int64(limit), window: 3_600 * second), scope: .organization),
                    Limit(name: "key-hour", algorithm: .fixedWindow(limit: 1_000_000, window: 3_600 * second)),
                ])
            let organization = "busy\(UInt32.random(in: 0...UInt32.max))"
            let slot = HashSlot.of(hashTag: LimitKeys.hashTag(organization))
            let source = try #require(client.primary(ofSlot: slot))
            let target = try #require(client.primaryAddresses.first { $0 != source })
            let sourceID = try await cluster.id(of: source.port)
            let targetID = try await cluster.id(of: target.port)

            let log = LoadLog()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for caller in 0..<8 {
                    group.addTask { try await log.checkUntilStopped(store, plan, Partition(organization: organization, apiKey: "k\(caller % 2)")) }
                }
                try await waitUntil("checks before the migration") { log.count(organization) > 50 }
                _ = try await cluster.cli(target.port, ["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID])
                _ = try await cluster.cli(source.port, ["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", targetID])
                while true {
                    let keys = try await cluster.cli(source.port, ["CLUSTER", "GETKEYSINSLOT", "\(slot)", "100"])
                        .split(separator: "\n").map(String.init).filter { !$0.isEmpty }
                    if keys.isEmpty { break }
                    _ = try await cluster.cli(source.port, ["MIGRATE", "127.0.0.1", "\(target.port)", "", "0", "5000", "KEYS"] + keys)
                }
                // Keys moved, slot not yet handed over: the source answers ASK until it is.
                try await waitUntil("an ASK redirection", timeout: .seconds(10)) {
                    total(metrics, "tollgate_redis_redirects_total", kind: "ask") > 0
                }
                // The target first, then the source (else each would send the other's callers back), then the rest.
                let others = cluster.nodes.prefix(3).map(\.port).filter { $0 != target.port && $0 != source.port }
                for port in [target.port, source.port] + others {
                    _ = try await cluster.cli(port, ["CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID])
                }
                try await waitUntil("a MOVED redirection", timeout: .seconds(10)) {
                    total(metrics, "tollgate_redis_redirects_total", kind: "moved") > 0
                }
                let settled = log.count(organization)
                try await waitUntil("checks on the new owner", timeout: .seconds(10)) { log.count(organization) > settled + 100 }
                log.running.store(false, ordering: .relaxed)
                try await group.waitForAll()
            }
            #expect(log.failures(organization) == 0, "every check answered by Redis")
            #expect(client.primary(ofSlot: slot) == target)
            // Nothing counted twice, nothing lost: what Redis holds is what was admitted, never above the limit.
            let read = try await store.check(plan, partition: Partition(organization: organization, apiKey: "k0"), cost: 0)
            let used = limit - Int(read.results[0].remaining)
            #expect(used == log.admitted.load(ordering: .relaxed))
            #expect(log.admitted.load(ordering: .relaxed) <= limit)
        }

        /// Failover under load, twice: `CLUSTER FAILOVER` on a replica, then `kill -9` of a primary. While a
        /// primary is gone its organization's checks get the failure policy; they resume on the new primary
        /// (its script loaded on `NOSCRIPT`) within the node timeout + 2 s; the other primaries' checks never fail.
        @Test func failoverUnderLoad() async throws {
            try await withCluster { cluster, client, _ in
                let store = RedisLimitStore(
                    backend: .cluster(client), configuration: .init(failurePolicy: .deny, breakerProbeInterval: .milliseconds(200), denyCache: false),
                    logger: quietLogger)
                let plan = try Plan(
                    name: "failover", limits: [Limit(name: "roomy", algorithm: .tokenBucket(capacity: 1_000_000, refillTokens: 1_000_000, refillPeriod: second))])
                let spread = organizations(spreadOver: client, perPrimary: 1, prefix: "f\(UInt32.random(in: 0...UInt32.max))-")
                let primaries = client.primaryAddresses
                let organizationOf = Dictionary(uniqueKeysWithValues: primaries.map { ($0, spread[$0]![0]) })
                let log = LoadLog()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for organization in organizationOf.values {
                        for caller in 0..<2 {
                            group.addTask { try await log.checkUntilStopped(store, plan, Partition(organization: organization, apiKey: "k\(caller)")) }
                        }
                    }
                    let budget = cluster.nodeTimeout + .seconds(2)

                    // 1. A graceful failover: the replica of the first primary takes over.
                    let first = primaries[0]
                    let replica = try await replicaPort(of: first.port, in: cluster)
                    _ = try await cluster.cli(replica, ["CLUSTER", "FAILOVER"])
                    try await waitUntil("the replica promoted", timeout: .seconds(10)) { client.primaryAddresses.contains { $0.port == replica } }
                    let promotedAt = ContinuousClock.now
                    try await waitUntil("checks on the promoted replica", timeout: budget) { log.resumed(organizationOf[first]!, after: promotedAt) != nil }
                    #expect(client.primary(forHashTag: LimitKeys.hashTag(organizationOf[first]!))?.port == replica)

                    // 2. A primary killed: its replica is elected after the node timeout.
                    let victim = primaries[1]
                    let victimOrganization = organizationOf[victim]!
                    // A replica follows it (which one is elected, if replica migration gave it two, is the cluster's choice).
                    _ = try await replicaPort(of: victim.port, in: cluster)
                    await cluster.kill(port: victim.port)
                    let killedAt = ContinuousClock.now
                    try await waitUntil("the failure policy answering for the killed primary", timeout: .seconds(5)) { log.failed(victimOrganization, after: killedAt) }
                    try await waitUntil("checks resumed on the elected replica", timeout: budget + .seconds(8)) {
                        log.resumed(victimOrganization, after: killedAt) != nil
                    }
                    let recovery = log.resumed(victimOrganization, after: killedAt)! - killedAt
                    #expect(recovery <= budget, "checks resumed \(recovery) after the kill")
                    let heir = try #require(client.primary(forHashTag: LimitKeys.hashTag(victimOrganization))?.port)
                    #expect(heir != victim.port)
                    #expect(try await cluster.role(of: heir) == "master")
                    // A few more rounds on the new primaries.
                    let settled = ContinuousClock.now
                    try await waitUntil("checks after the failovers", timeout: .seconds(5)) {
                        organizationOf.values.allSatisfy { log.resumed($0, after: settled) != nil }
                    }
                    log.running.store(false, ordering: .relaxed)
                    try await group.waitForAll()
                }
                // The third primary was never touched: not one of its checks failed.
                #expect(log.failures(organizationOf[primaries[2]]!) == 0)
            }
        }

        /// Connections a primary drops, idle (`timeout`) or with a command in flight (`CLIENT KILL`): the next
        /// check after a drop is answered by Redis on a new connection and the map is read again; the check
        /// that was in flight gets the failure policy and is never sent again.
        @Test func connectionLossRefreshesTheMap() async throws {
            let cluster = try await RedisTestCluster.start(replicas: 0)
            do {
                var configuration = try RedisClusterConfiguration(urls: cluster.urls)
                configuration.node.reconnectBackoffMaximum = .milliseconds(200)
                let client = try RedisClusterClient(configuration: configuration, logger: quietLogger, metricsFactory: TestMetrics())
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { await client.run() }
                    try await client.waitUntilConnected(timeout: .seconds(10))
                    let store = RedisLimitStore(
                        backend: .cluster(client), configuration: .init(failurePolicy: .deny, denyCache: false, coalesce: false), logger: quietLogger)
                    let plan = try Plan(name: "drops", limits: [Limit(name: "hour", algorithm: .fixedWindow(limit: 1_000, window: 3_600 * second))])
                    let organization = "drop\(UInt32.random(in: 0...UInt32.max))"
                    let partition = Partition(organization: organization, apiKey: "k")
                    let victim = try #require(client.primary(forHashTag: LimitKeys.hashTag(organization)))
                    let node = try #require(client.primaries.first { $0.address == victim })
                    let warm = try await store.check(plan, partition: partition, cost: 1)
                    #expect(warm.origin == .store)

                    // 1. Idle connections dropped by the server (its `timeout`): the next check is answered.
                    let lost = node.client.lostConnections
                    var refreshes = client.refreshCount
                    _ = try await cluster.cli(victim.port, ["CONFIG", "SET", "timeout", "1"])
                    try await waitUntil("the server dropping both idle connections", timeout: .seconds(15)) {
                        node.client.lostConnections >= lost + configuration.node.connections
                    }
                    let afterIdle = try await store.check(plan, partition: partition, cost: 1)
                    _ = try await cluster.cli(victim.port, ["CONFIG", "SET", "timeout", "0"])
                    #expect(afterIdle.origin == .store && afterIdle.isAllowed, "\(afterIdle)")
                    try await waitUntil("the map read again after the drop") { client.refreshCount > refreshes }

                    // 2. A check in flight when its connection is killed: held by the server (writes paused),
                    // then every client connection killed before it runs.
                    try await waitUntil("the connections back", timeout: .seconds(5)) { node.client.hasConnection }
                    refreshes = client.refreshCount
                    _ = try await cluster.cli(victim.port, ["CLIENT", "PAUSE", "5000", "WRITE"])
                    let inFlight = Task { try await store.check(plan, partition: partition, cost: 1) }
                    try await waitUntil("the check in flight") {
                        node.client.slots.contains { slot in
                            if case .connected(let connection) = slot.state.withLock({ $0 }) { return connection.pendingCommands > 0 }
                            return false
                        }
                    }
                    _ = try await cluster.cli(victim.port, ["CLIENT", "KILL", "TYPE", "normal"])
                    _ = try await cluster.cli(victim.port, ["CLIENT", "UNPAUSE"])
                    let killed = try await inFlight.value
                    #expect(killed.origin != .store, "the failure policy answers for the check whose connection was killed: \(killed)")
                    let next = try await store.check(plan, partition: partition, cost: 1)
                    #expect(next.origin == .store && next.isAllowed, "\(next)")
                    try await waitUntil("the map read again after the kill") { client.refreshCount > refreshes }
                    // Counted: the warm-up, the check after the idle drop and this one; the killed check never ran
                    // (it was not sent again).
                    let read = try await store.check(plan, partition: partition, cost: 0)
                    #expect(1_000 - read.results[0].remaining == 3)
                    group.cancelAll()
                }
            } catch {
                await cluster.stop()
                throw error
            }
            await cluster.stop()
        }

        /// The port of the replica that follows the primary at `port`.
        private func replicaPort(of port: Int, in cluster: RedisTestCluster) async throws -> Int {
            for node in cluster.nodes where node.port != port {
                let info = try await cluster.cli(node.port, ["INFO", "replication"])
                if info.contains("role:slave"), info.contains("master_port:\(port)") { return node.port }
            }
            throw TestSetupError(description: "no replica follows the primary at \(port)")
        }
    }
}
