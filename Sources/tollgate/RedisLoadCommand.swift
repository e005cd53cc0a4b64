import ArgumentParser
import Foundation
import Logging
import Synchronization
import Tollgate
import TollgateRedis

/// `tollgate redis-load`: drives checks against a Redis server from many concurrent callers and reports
/// throughput, latency and how many checks were admitted. Used by the Redis benchmark and by the
/// multi-process exactness test; also handy to size a deployment.
struct RedisLoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis-load",
        abstract: "Run concurrent limit checks against Redis and report checks/s, p50/p99 latency and admissions.",
        discussion: """
            Every caller checks one plan for its own key, or for one shared key with --shared-key: the \
            plan --plan of the configuration --config, or else one limit (--algorithm, --limit per \
            --window seconds). Prints one JSON object: checks, checks_per_second, p50_us and p99_us, \
            and from the server's INFO before and after the run redis_cpu_us_per_check (the server's \
            own CPU time, user and system, over the checks made: on a server that serves only this \
            load, its cost of a check), commands_per_read (how many EVALSHA calls each read of the \
            server's carried: how well the client's pipelining batches) and checks_per_call (how many \
            checks each call decided: the group commit's mean batch). With --rate, the load is an open loop at that rate and \
            latencies count from when each check was due (p999_us too).
            """
    )

    @Option(help: "Redis URL (redis://[user:password@]host:port[/db] or unix:///path).")
    var url = "redis://127.0.0.1:6379"
    @Option(help: "Seed nodes of a Redis Cluster, comma-separated redis:// URLs (instead of --url); --connections is then per primary.")
    var cluster: String?
    @Option(help: "Concurrent callers.")
    var callers = 16
    @Option(help: "Checks per caller (ignored when --seconds is given).")
    var requests = 1_000
    @Option(help: "Run for this many seconds instead of a fixed number of checks.")
    var seconds: Double?
    @Option(help: "Connections in the client's pool.")
    var connections = 4
    @Option(help: "The limit per window.")
    var limit: Int64 = 1_000_000_000
    @Option(help: "The window in seconds.")
    var window: Int64 = 60
    @Option(help: "The organization (hash tag).")
    var organization = "org-load"
    @Flag(help: "All callers check the same key (otherwise each caller has its own).")
    var sharedKey = false
    @Option(help: "Every check picks one of this many keys (with --distribution) instead of its caller's own key.")
    var keys = 0
    @Option(help: "How --keys are picked: uniform, or zipf (s = 1.1: a few keys take most checks).")
    var distribution = "uniform"
    @Flag(help: "Send every check on its own, even while a call for the same keys is in flight (no group commit).")
    var noCoalesce = false
    @Option(help: "With the group commit: calls of the same keys in flight before later checks queue.")
    var inFlight = 1
    @Option(
        help: """
            Open loop: checks a second, all callers together, each caller on a fixed schedule; latency is \
            measured from the instant a check was due, so a stall is not hidden by callers waiting for it.
            """)
    var rate: Double?
    @Option(help: "Algorithm: fixed_window or token_bucket.")
    var algorithm = "fixed_window"
    @Option(help: "A configuration file whose plan --plan is checked (instead of --algorithm, --limit and --window).")
    var config: String?
    @Option(help: "The plan of --config to check.")
    var plan: String?
    @Flag(help: "Print the plan's Lua script and exit (for redis-benchmark runs of the same script).")
    var printScript = false
    @Flag(
        help: """
            Print the number of keys, the keys and the arguments of one check of the plan for API key \
            __rand_int__, one per line, and exit (for redis-benchmark, which replaces __rand_int__).
            """)
    var printArguments = false
    @Flag(help: "With --print-script or --print-arguments: the previous version's script (one key per limit), the benchmark's baseline.")
    var previousScript = false
    @Flag(
        help: """
            With --print-script or --print-arguments: the script that is sent the calendar quotas' periods \
            (it starts a period's key; the default is the script most checks call, which reads them from the keys).
            """)
    var periodsInArguments = false
    @Flag(help: "Run the callers on the cooperative thread pool instead of the connections' event loops.")
    var noAffinity = false

    /// The monotonic clock in nanoseconds: one vDSO call, no `Duration` arithmetic in the measured loop.
    @inline(__always)
    static func monotonicNanoseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }

    func run() async throws {
        let plan = try loadPlan()
        if printScript {
            print(previousScript ? RedisLimitStore.previousScriptSource : RedisLimitStore.scriptSource(for: plan, periodsInArguments: periodsInArguments))
            return
        }
        if printArguments {
            let partition = Partition(organization: organization, apiKey: "__rand_int__")
            let (keys, arguments) =
                previousScript
                ? RedisLimitStore.previousScriptKeysAndArguments(for: plan, partition: partition, cost: 1)
                : RedisLimitStore.scriptKeysAndArguments(
                    for: plan, partition: partition, cost: 1, periodsInArguments: periodsInArguments)
            print(([String(keys.count)] + keys + arguments).joined(separator: "\n"))
            return
        }
        var redis = try cluster.map { try RedisClusterConfiguration(urls: $0.split(separator: ",").map(String.init)).node } ?? RedisConfiguration(url: url)
        redis.connections = connections
        redis.maximumPendingCommands = max(redis.maximumPendingCommands, callers * 2)
        let logger = Logger(label: "tollgate.redis-load")
        let backend: RedisLimitStore.Backend
        let servers: ServerCounters.Source
        let runner: Task<Void, Never>
        if let cluster {
            var configuration = try RedisClusterConfiguration(urls: cluster.split(separator: ",").map(String.init))
            configuration.node = redis
            let client = try RedisClusterClient(configuration: configuration, logger: logger)
            runner = Task { await client.run() }
            try await client.waitUntilConnected(timeout: .seconds(10))
            backend = .cluster(client)
            servers = .cluster(client)
        } else {
            let client = try RedisClient(configuration: redis, logger: logger)
            runner = Task { await client.run() }
            try await client.waitUntilConnected(timeout: .seconds(5))
            backend = .server(client)
            servers = .server(client)
        }
        defer { runner.cancel() }
        let store = RedisLimitStore(
            backend: backend, configuration: .init(denyCache: false, coalesce: !noCoalesce, maximumInFlight: inFlight), logger: logger)
        guard ["uniform", "zipf"].contains(distribution) else {
            throw ValidationError("--distribution: expected uniform or zipf, found \(distribution)")
        }
        let picker = keys > 0 ? KeyPicker(count: keys, zipf: distribution == "zipf", organization: organization) : nil
        try await store.prepare([plan])
        let before = try await ServerCounters.read(servers)

        // Each caller runs on the event loop of one of the client's connections (a task executor
        // preference), as a gateway does that serves its requests on those loops: a check then never
        // changes thread (see `RedisClient.taskExecutor(for:)`). `--no-affinity` runs the callers on the
        // cooperative pool instead.
        let deadline = seconds.map { Self.monotonicNanoseconds() + Int64($0 * 1e9) }
        let requests = requests
        if let rate, !(rate > 0) { throw ValidationError("--rate: expected checks a second above 0, found \(rate)") }
        // Each caller's interval between checks, its schedule offset by its share of one interval.
        let callerCount = callers
        let interval = rate.map { Int64(1e9 * Double(callerCount) / $0) }
        let origin = Self.monotonicNanoseconds()
        let start = ContinuousClock.now
        let results = try await withThrowingTaskGroup(of: CallerResult.self) { group in
            for caller in 0..<callers {
                let own = Partition(organization: organization, apiKey: sharedKey ? "shared" : "caller-\(caller)")
                let body: @Sendable () async throws -> CallerResult = {
                    var random = SplitMix64(seed: UInt64(caller) &+ 1)
                    var result = CallerResult()
                    result.latencies.reserveCapacity(min(deadline == nil ? requests : 1 << 16, 1 << 16))
                    var done = 0
                    var now = Self.monotonicNanoseconds()
                    while deadline.map({ now < $0 }) ?? (done < requests) {
                        var started = now
                        if let interval {
                            started = origin + interval * Int64(caller) / Int64(callerCount) + interval * Int64(done)
                            if started > now { try await Task.sleep(for: .nanoseconds(started - now)) }
                        }
                        let partition = picker?.pick(&random) ?? own
                        let decision = try await store.check(plan, partition: partition, cost: 1)
                        now = Self.monotonicNanoseconds()
                        result.latencies.append(now - started)
                        if decision.origin != .store { result.failures += 1 } else if decision.isAllowed { result.admitted += 1 }
                        done += 1
                    }
                    return result
                }
                if noAffinity {
                    group.addTask(operation: body)
                } else {
                    group.addTask(executorPreference: servers.taskExecutor(for: caller), operation: body)
                }
            }
            return try await group.reduce(into: [CallerResult]()) { $0.append($1) }
        }
        let elapsed = ContinuousClock.now - start
        let after = try await ServerCounters.read(servers)
        var latencies = results.flatMap(\.latencies).map { Double($0) / 1e3 }
        latencies.sort()
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
        }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        var report: [String: Any] = [
            "callers": callers, "connections": connections, "affinity": !noAffinity, "checks": latencies.count,
            "admitted": results.reduce(0) { $0 + $1.admitted }, "failures": results.reduce(0) { $0 + $1.failures },
            "seconds": (seconds * 1000).rounded() / 1000, "checks_per_second": (Double(latencies.count) / seconds).rounded(),
            "p50_us": percentile(0.5).rounded(), "p99_us": percentile(0.99).rounded(), "plan": plan.name,
        ]
        if let rate {
            report["rate"] = rate
            report["p999_us"] = percentile(0.999).rounded()
        }
        if !latencies.isEmpty {
            report["redis_cpu_us_per_check"] = ((after.cpuSeconds - before.cpuSeconds) * 1e6 / Double(latencies.count) * 100).rounded() / 100
        }
        if after.calls > before.calls {
            report["checks_per_call"] = (Double(latencies.count) / Double(after.calls - before.calls) * 100).rounded() / 100
        }
        if after.reads > before.reads {
            report["commands_per_read"] = (Double(after.calls - before.calls) / Double(after.reads - before.reads) * 100).rounded() / 100
        }
        if case .cluster = servers {
            // Each primary's share of the calls and its own CPU per call; MOVED answers during the run.
            report["moved"] = after.moved - before.moved
            var nodes: [[String: Any]] = []
            for (node, counters) in after.nodes.sorted(by: { $0.key < $1.key }) {
                let start = before.nodes[node] ?? ServerCounters()
                let calls = counters.calls - start.calls
                nodes.append([
                    "node": node, "calls_share": (Double(calls) / Double(max(1, after.calls - before.calls)) * 1000).rounded() / 1000,
                    "redis_cpu_us_per_call": calls > 0 ? ((counters.cpuSeconds - start.cpuSeconds) * 1e6 / Double(calls) * 100).rounded() / 100 : 0,
                ])
            }
            report["nodes"] = nodes
        }
        let json = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
        print(String(decoding: json, as: UTF8.self))
    }
}

extension RedisLoadCommand {
    /// The plan --plan of --config, or the one-limit plan of --algorithm, --limit and --window.
    func loadPlan() throws -> Plan {
        if let config {
            let configuration: TollgateConfiguration
            do {
                configuration = try TollgateConfiguration.load(contentsOfFile: config)
            } catch {
                throw ValidationError(error.description)
            }
            guard let name = plan else {
                throw ValidationError("--config needs --plan, one of: \(configuration.plans.map(\.name).joined(separator: ", "))")
            }
            guard let found = configuration.plan(named: name) else {
                throw ValidationError(
                    "\(config) has no plan \"\(name)\"; its plans are \(configuration.plans.map(\.name).joined(separator: ", "))")
            }
            return found
        }
        if plan != nil { throw ValidationError("--plan names a plan of --config, which is missing") }
        let limitAlgorithm: LimitAlgorithm =
            switch algorithm {
            case "token_bucket": .tokenBucket(capacity: limit, refillTokens: limit, refillPeriod: window * 1_000_000)
            case "fixed_window": .fixedWindow(limit: limit, window: window * 1_000_000)
            default: throw ValidationError("--algorithm: expected fixed_window or token_bucket, found \(algorithm)")
            }
        return try Plan(name: "load", limits: [Limit(name: "limit", algorithm: limitAlgorithm)])
    }
}

/// The server's own CPU time, its `EVALSHA` calls (commands that scripts call are counted apart), its
/// reads and its `MOVED` answers, from `INFO`; on a cluster, summed over the primaries and by primary.
struct ServerCounters {
    var cpuSeconds = 0.0
    var calls = 0
    var reads = 0
    var moved = 0
    /// A cluster's primaries, each on its own.
    var nodes: [String: ServerCounters] = [:]

    /// Where the counters are read, and the callers' event loops.
    enum Source {
        case server(RedisClient)
        case cluster(RedisClusterClient)

        func taskExecutor(for caller: Int) -> any TaskExecutor {
            switch self {
            case .server(let client): client.taskExecutor(for: caller)
            case .cluster(let cluster): cluster.taskExecutor(for: caller)
            }
        }
    }

    static func read(_ source: Source) async throws -> ServerCounters {
        switch source {
        case .server(let client):
            return parse(try await client.send(["INFO", "all"]).string ?? "")
        case .cluster(let cluster):
            var total = ServerCounters()
            for (node, reply) in await cluster.sendToPrimaries(["INFO", "all"]) {
                let counters = parse(try reply.get().string ?? "")
                total.cpuSeconds += counters.cpuSeconds
                total.calls += counters.calls
                total.reads += counters.reads
                total.moved += counters.moved
                total.nodes[node.description] = counters
            }
            return total
        }
    }

    static func parse(_ text: String) -> ServerCounters {
        var counters = ServerCounters()
        for line in text.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "used_cpu_sys", "used_cpu_user": counters.cpuSeconds += Double(parts[1]) ?? 0
            case "cmdstat_evalsha":
                let calls = parts[1].split(separator: ",").first { $0.hasPrefix("calls=") }
                counters.calls = calls.flatMap { Int($0.dropFirst(6)) } ?? 0
            case "total_reads_processed": counters.reads = Int(parts[1]) ?? 0
            case "errorstat_MOVED": counters.moved = Int(parts[1].dropFirst("count=".count).prefix { $0.isNumber }) ?? 0
            default: break
            }
        }
        return counters
    }
}

/// Keys picked uniformly or by Zipf's law (s = 1.1) from a fixed set, each of its own organization.
struct KeyPicker: Sendable {
    let partitions: [Partition]
    /// Cumulative weights, for Zipf (empty: uniform).
    let cumulative: [Double]

    init(count: Int, zipf: Bool, organization: String) {
        partitions = (0..<count).map { Partition(organization: "\(organization)-\($0)", apiKey: "key-\($0)") }
        var total = 0.0
        cumulative = zipf ? (1...count).map { rank in total += 1 / pow(Double(rank), 1.1); return total } : []
    }

    func pick(_ random: inout SplitMix64) -> Partition {
        guard let total = cumulative.last else { return partitions[Int(random.next() % UInt64(partitions.count))] }
        let target = Double(random.next() >> 11) / Double(1 << 53) * total
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulative[middle] < target { low = middle + 1 } else { high = middle }
        }
        return partitions[low]
    }
}


struct CallerResult: Sendable {
    /// Nanoseconds per check.
    var latencies: [Int64] = []
    var admitted = 0
    var failures = 0
}
