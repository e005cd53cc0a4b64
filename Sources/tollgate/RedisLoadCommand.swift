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
            Every caller checks one plan of one limit (a fixed window of --limit per --window seconds) \
            for its own key, or for one shared key with --shared-key. Prints one JSON object.
            """
    )

    @Option(help: "Redis URL (redis://[user:password@]host:port[/db] or unix:///path).")
    var url = "redis://127.0.0.1:6379"
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
    @Option(help: "Algorithm: fixed_window or token_bucket.")
    var algorithm = "fixed_window"
    @Flag(help: "Print the limit script's Lua source and exit (for redis-benchmark runs of the same script).")
    var printScript = false
    @Flag(help: "Print the script's ARGV for one check of the load's limit, one per line, and exit (for redis-benchmark).")
    var printArguments = false
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
        if printScript {
            print(RedisLimitStore.scriptSource)
            return
        }
        let limitAlgorithm: LimitAlgorithm =
            algorithm == "token_bucket"
            ? .tokenBucket(capacity: limit, refillTokens: limit, refillPeriod: window * 1_000_000)
            : .fixedWindow(limit: limit, window: window * 1_000_000)
        let plan = try Plan(name: "load", limits: [Limit(name: "limit", algorithm: limitAlgorithm)])
        if printArguments {
            print(RedisLimitStore.scriptArguments(for: plan, cost: 1).joined(separator: "\n"))
            return
        }
        var redis = try RedisConfiguration(url: url)
        redis.connections = connections
        redis.maximumPendingCommands = max(redis.maximumPendingCommands, callers * 2)
        let logger = Logger(label: "tollgate.redis-load")
        let client = try RedisClient(configuration: redis, logger: logger)
        let runner = Task { await client.run() }
        defer { runner.cancel() }
        try await client.waitUntilConnected(timeout: .seconds(5))
        let store = RedisLimitStore(client: client, configuration: .init(denyCache: false), logger: logger)
        try await store.prepare()

        // Each caller runs on the event loop of one of the client's connections (a task executor
        // preference), as a gateway does that serves its requests on those loops: a check then never
        // changes thread (see `RedisClient.taskExecutor(for:)`). `--no-affinity` runs the callers on the
        // cooperative pool instead.
        let deadline = seconds.map { Self.monotonicNanoseconds() + Int64($0 * 1e9) }
        let requests = requests
        let start = ContinuousClock.now
        let results = try await withThrowingTaskGroup(of: CallerResult.self) { group in
            for caller in 0..<callers {
                let partition = Partition(organization: organization, apiKey: sharedKey ? "shared" : "caller-\(caller)")
                let body: @Sendable () async throws -> CallerResult = {
                    var result = CallerResult()
                    result.latencies.reserveCapacity(min(deadline == nil ? requests : 1 << 16, 1 << 16))
                    var done = 0
                    var now = Self.monotonicNanoseconds()
                    while deadline.map({ now < $0 }) ?? (done < requests) {
                        let started = now
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
                    group.addTask(executorPreference: client.taskExecutor(for: caller), operation: body)
                }
            }
            return try await group.reduce(into: [CallerResult]()) { $0.append($1) }
        }
        let elapsed = ContinuousClock.now - start
        var latencies = results.flatMap(\.latencies).map { Double($0) / 1e3 }
        latencies.sort()
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
        }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let report: [String: Any] = [
            "callers": callers, "connections": connections, "affinity": !noAffinity, "checks": latencies.count,
            "admitted": results.reduce(0) { $0 + $1.admitted }, "failures": results.reduce(0) { $0 + $1.failures },
            "seconds": (seconds * 1000).rounded() / 1000, "checks_per_second": (Double(latencies.count) / seconds).rounded(),
            "p50_us": percentile(0.5).rounded(), "p99_us": percentile(0.99).rounded(),
        ]
        let json = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
        print(String(decoding: json, as: UTF8.self))
    }
}

struct CallerResult: Sendable {
    /// Nanoseconds per check.
    var latencies: [Int64] = []
    var admitted = 0
    var failures = 0
}
