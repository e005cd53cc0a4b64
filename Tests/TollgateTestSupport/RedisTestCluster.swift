import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// A Redis Cluster on loopback (three primaries and three replicas unless asked otherwise), started by a
/// test in temporary folders and killed (SIGKILL) when it is done.
///
/// With a `TestCertificateAuthority` every node serves TLS only (`--tls-port`, no plain port), on its
/// clients' connections, the cluster bus and replication alike (`--tls-cluster yes`,
/// `--tls-replication yes`; on the bus a node presents the authority's client certificate), and the
/// nodes announce `announceHostname` (the certificate's name) as their endpoint when one is given.
///
/// The node timeout is short (`nodeTimeout`, 500 ms by default) so that a failover takes a second or
/// two, replicas may always take over (`cluster-replica-validity-factor 0`), and the other primaries go
/// on serving while one's slots are without a primary (`cluster-require-full-coverage no`).
public final class RedisTestCluster {
    /// Every node, primaries first as `redis-cli --cluster create` assigned them.
    public private(set) var nodes: [RedisTestServer]
    public let nodeTimeout: Duration
    /// The certificates of a TLS cluster; nil for a plain one.
    public let tls: TestCertificateAuthority?
    private let folder: String

    private init(nodes: [RedisTestServer], nodeTimeout: Duration, tls: TestCertificateAuthority?, folder: String) {
        self.nodes = nodes
        self.nodeTimeout = nodeTimeout
        self.tls = tls
        self.folder = folder
    }

    /// The seed URLs of every node.
    public var urls: [String] { nodes.map(\.url) }

    /// Starts `primaries × (1 + replicas)` nodes, joins them with `redis-cli --cluster create …
    /// --cluster-replicas <replicas>`, and waits until every node reports `cluster_state:ok` and every
    /// replica is in sync.
    public static func start(
        primaries: Int = 3, replicas: Int = 1, nodeTimeout: Duration = .milliseconds(500), tls: TestCertificateAuthority? = nil,
        announceHostname: String? = nil
    ) async throws -> RedisTestCluster {
        guard locateExecutable("redis-cli") != nil else {
            throw TestSetupError(description: "redis-cli was not found (Debian: apt-get install redis-tools); the cluster tests need it")
        }
        let folder = NSTemporaryDirectory() + "tollgate-cluster-\(UInt64.random(in: 0...UInt64.max))"
        var nodes: [RedisTestServer] = []
        let milliseconds = nodeTimeout.components.seconds * 1_000 + nodeTimeout.components.attoseconds / 1_000_000_000_000_000
        do {
            var arguments = [
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "\(milliseconds)", "--cluster-replica-validity-factor", "0",
                // The other primaries keep serving while one's slots have no primary (else CLUSTERDOWN everywhere).
                "--cluster-require-full-coverage", "no",
            ]
            if let tls {
                // A node connects to the others' bus as a client: with a certificate made for that.
                arguments += [
                    "--tls-cluster", "yes", "--tls-replication", "yes",
                    "--tls-client-cert-file", tls.clientCertificateFile, "--tls-client-key-file", tls.clientKeyFile,
                ]
            }
            if let announceHostname {
                arguments += ["--cluster-announce-hostname", announceHostname, "--cluster-preferred-endpoint-type", "hostname"]
            }
            for index in 0..<(primaries * (1 + replicas)) {
                let directory = "\(folder)/\(index)"
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                nodes.append(try await RedisTestServer.start(port: try await clusterPort(), tls: tls, arguments: ["--dir", directory] + arguments))
            }
            let cluster = RedisTestCluster(nodes: nodes, nodeTimeout: nodeTimeout, tls: tls, folder: folder)
            _ = try await redisCLI(
                cluster.tlsArguments + ["--cluster", "create"] + nodes.map { "127.0.0.1:\($0.port)" }
                    + ["--cluster-replicas", "\(replicas)", "--cluster-yes"],
                timeout: .seconds(60))
            try await cluster.waitUntilHealthy(timeout: .seconds(30))
            // Primaries first.
            var primaries: [RedisTestServer] = []
            var replicas: [RedisTestServer] = []
            for node in nodes {
                if try await cluster.role(of: node.port) == "master" { primaries.append(node) } else { replicas.append(node) }
            }
            cluster.nodes = primaries + replicas
            return cluster
        } catch {
            for node in nodes { await node.kill() }
            try? FileManager.default.removeItem(atPath: folder)
            throw error
        }
    }

    /// A loopback port that was free a moment ago, as was the one 10,000 above it (the node's cluster bus).
    static func clusterPort() async throws -> Int {
        for _ in 0..<100 {
            let port = Int.random(in: 20_000...50_000)
            var bound: [any Channel] = []
            for candidate in [port, port + 10_000] {
                if let channel = try? await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: candidate).get() {
                    bound.append(channel)
                }
            }
            for channel in bound { try? await channel.close() }
            if bound.count == 2 { return port }
        }
        throw TestSetupError(description: "found no free pair of loopback ports (a node's and its cluster bus's) in 100 tries")
    }

    /// Kills every node and removes the folders.
    public func stop() async {
        for node in nodes { await node.kill() }
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// Runs `redis-cli -p <port> arguments…` and returns what it printed (raw, one item a line).
    public func cli(_ port: Int, _ arguments: [String]) async throws -> String {
        try await Self.redisCLI(tlsArguments + ["-p", "\(port)"] + arguments, timeout: .seconds(20))
    }

    /// What redis-cli needs to reach the nodes of a TLS cluster (trusting the test CA; it checks no name).
    var tlsArguments: [String] { tls.map { Self.tlsArguments($0) } ?? [] }

    static func tlsArguments(_ tls: TestCertificateAuthority) -> [String] {
        ["--tls", "--cacert", tls.caFile]
    }

    /// `master` or `slave`, from `ROLE`.
    public func role(of port: Int) async throws -> String {
        String(try await cli(port, ["ROLE"]).split(separator: "\n").first ?? "")
    }

    /// The node's cluster id.
    public func id(of port: Int) async throws -> String {
        try await cli(port, ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The port of the primary serving `slot`, asked of the node at `port`.
    public func primary(ofSlot slot: Int, askingPort port: Int) async throws -> Int? {
        // CLUSTER SLOTS, raw: first, last, host, port, id, (replicas…) … — read it with --no-raw's nesting lost, so
        // walk it as text: a range line pair followed by the primary's host and port.
        let lines = try await cli(port, ["CLUSTER", "SLOTS"]).split(separator: "\n").map(String.init)
        var index = 0
        while index + 3 < lines.count {
            if let first = Int(lines[index]), let last = Int(lines[index + 1]), lines[index + 2].contains("."),
                let primary = Int(lines[index + 3]), first <= last, (first...last).contains(slot)
            {
                return primary
            }
            index += 1
        }
        return nil
    }

    /// Waits until every live node says `cluster_state:ok` and knows the same primaries, and every
    /// replica's link to its primary is up.
    public func waitUntilHealthy(timeout: Duration, ignoring dead: Set<Int> = []) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            var healthy = true
            for node in nodes where !dead.contains(node.port) {
                let info = (try? await cli(node.port, ["CLUSTER", "INFO"])) ?? ""
                let replication = (try? await cli(node.port, ["INFO", "replication"])) ?? ""
                if !info.contains("cluster_state:ok")
                    || (replication.contains("role:slave") && !replication.contains("master_link_status:up"))
                {
                    healthy = false
                    break
                }
            }
            if healthy { return }
            guard ContinuousClock.now < deadline else {
                throw TestSetupError(description: "the test Redis Cluster was not healthy within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Kills the node at `port` with SIGKILL (its replica takes over after the node timeout).
    public func kill(port: Int) async {
        for node in nodes where node.port == port { await node.kill() }
    }

    /// Runs redis-cli, waiting for it without blocking a thread; throws on a non-zero exit or after `timeout`.
    static func redisCLI(_ arguments: [String], timeout: Duration) async throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: locateExecutable("redis-cli")!)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let reader = Task { await readToEnd(output.fileHandleForReading) }
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else {
                _ = Glibc.kill(process.processIdentifier, SIGKILL)
                throw TestSetupError(description: "redis-cli \(arguments.joined(separator: " ")) did not finish within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        let text = String(decoding: await reader.value, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw TestSetupError(description: "redis-cli \(arguments.joined(separator: " ")) exited with \(process.terminationStatus): \(text)")
        }
        return text
    }
}

/// A primary, a replica and three sentinels watching them (quorum 2) on loopback, killed with SIGKILL
/// when the test is done. Failure is noticed after `downAfter`. With a `TestCertificateAuthority` every
/// one of them serves TLS only, and the sentinels and the replica reach the servers over TLS
/// (`--tls-replication yes`).
public final class RedisTestSentinels {
    /// The primary first, then its replica.
    public let servers: [RedisTestServer]
    public let sentinels: [RedisTestServer]
    public let masterName = "tollgate"
    public let downAfter: Duration
    /// The certificates of a TLS setup; nil for a plain one.
    public let tls: TestCertificateAuthority?
    private let folder: String

    private init(servers: [RedisTestServer], sentinels: [RedisTestServer], downAfter: Duration, tls: TestCertificateAuthority?, folder: String) {
        self.servers = servers
        self.sentinels = sentinels
        self.downAfter = downAfter
        self.tls = tls
        self.folder = folder
    }

    /// The sentinels' URLs.
    public var urls: [String] { sentinels.map(\.url) }

    /// Starts them and waits until every sentinel knows the replica and the two other sentinels.
    public static func start(downAfter: Duration = .milliseconds(500), tls: TestCertificateAuthority? = nil) async throws -> RedisTestSentinels {
        let folder = NSTemporaryDirectory() + "tollgate-sentinel-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var started: [RedisTestServer] = []
        let milliseconds = downAfter.components.seconds * 1_000 + downAfter.components.attoseconds / 1_000_000_000_000_000
        do {
            let overTLS = tls == nil ? [] : ["--tls-replication", "yes"]
            let primary = try await RedisTestServer.start(tls: tls, arguments: ["--dir", folder] + overTLS)
            started.append(primary)
            let replica = try await RedisTestServer.start(
                tls: tls, arguments: ["--dir", folder, "--replicaof", "127.0.0.1", "\(primary.port)"] + overTLS)
            started.append(replica)
            var sentinels: [RedisTestServer] = []
            for index in 0..<3 {
                let file = "\(folder)/sentinel-\(index).conf"
                let text = """
                    sentinel monitor tollgate 127.0.0.1 \(primary.port) 2
                    sentinel down-after-milliseconds tollgate \(milliseconds)
                    sentinel failover-timeout tollgate 3000

                    """
                try text.write(toFile: file, atomically: true, encoding: .utf8)
                let sentinel = try await RedisTestServer.start(tls: tls, configurationFile: file, arguments: ["--sentinel", "--dir", folder] + overTLS)
                sentinels.append(sentinel)
                started.append(sentinel)
            }
            let group = RedisTestSentinels(servers: [primary, replica], sentinels: sentinels, downAfter: downAfter, tls: tls, folder: folder)
            let deadline = ContinuousClock.now + .seconds(30)
            for sentinel in sentinels {
                while true {
                    let replicas = try await group.cli(sentinel.port, ["SENTINEL", "REPLICAS", "tollgate"])
                    let peers = try await group.cli(sentinel.port, ["SENTINEL", "SENTINELS", "tollgate"])
                    if replicas.contains("\(replica.port)"), peers.split(separator: "\n").filter({ $0 == "name" }).count == 2 { break }
                    guard ContinuousClock.now < deadline else {
                        throw TestSetupError(description: "the test sentinels did not see the replica and each other within 30 s")
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            return group
        } catch {
            for server in started { await server.kill() }
            try? FileManager.default.removeItem(atPath: folder)
            throw error
        }
    }

    /// Runs `redis-cli -p <port> arguments…` (over TLS for a TLS setup) and returns what it printed.
    public func cli(_ port: Int, _ arguments: [String]) async throws -> String {
        try await RedisTestCluster.redisCLI(
            (tls.map { RedisTestCluster.tlsArguments($0) } ?? []) + ["-p", "\(port)"] + arguments, timeout: .seconds(10))
    }

    /// Kills every server and sentinel, and removes the folder.
    public func stop() async {
        for server in servers + sentinels { await server.kill() }
        try? FileManager.default.removeItem(atPath: folder)
    }
}
