import ArgumentParser
import Foundation
import Logging
import Tollgate
import TollgateRedis
import TollgateSidecar

/// Output of the operators' commands.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

/// Where `tollgate keys`, `usage` and `reset` find plans, keys and counters: the configuration file's
/// sections, unless `--key-file` or `--redis` says otherwise.
struct OperatorOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The configuration file: its plans, and its keys and store sections.", valueName: "file"))
    var config: String = "Config/tollgate.yaml"

    @Option(name: .customLong("key-file"), help: ArgumentHelp("Keys in this key file (instead of the configuration's keys section).", valueName: "file"))
    var keyFile: String?

    @Option(help: ArgumentHelp("Keys and counters in this Redis (redis://, rediss:// or unix://).", valueName: "url"))
    var redis: String?

    @Option(help: "Output: table or json.")
    var format: OutputFormat = .table

    func configuration() throws -> TollgateConfiguration {
        do {
            return try TollgateConfiguration.load(contentsOfFile: config)
        } catch {
            FileHandle.standardError.write(Data("\(error.description)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// A connected client to `url`, run until `body` returns.
    static func withRedis<T>(_ url: String, _ body: (RedisClient) async throws -> T) async throws -> T {
        let logger = Logger(label: "tollgate.cli")
        let client: RedisClient
        do {
            client = try RedisClient(configuration: try RedisConfiguration(url: url), logger: logger)
        } catch {
            throw ValidationError("--redis: \(error)")
        }
        return try await whileRunning(
            { await client.run() }, ready: { () async throws(RedisClientError) in try await client.waitUntilConnected(timeout: .seconds(5)) },
            unreachable: "could not connect to Redis at \(client.configuration.endpointDescription)"
        ) { try await body(client) }
    }

    /// Runs `body` while `run` runs (cancelled when `body` returns), once `ready` says the client is connected.
    static func whileRunning<T>(
        _ run: @escaping @Sendable () async -> Void, ready: () async throws(RedisClientError) -> Void, unreachable: String,
        _ body: () async throws -> T
    ) async throws -> T {
        let runner = Task { await run() }
        defer { runner.cancel() }
        do {
            try await ready()
        } catch {
            throw ValidationError("\(unreachable): \(error)")
        }
        return try await body()
    }

    /// Where keys are: `--key-file`, else `--redis` (for the keys commands), else the configuration's keys section.
    enum KeyPlace {
        case file(String)
        case redis(String)
        /// The store's Redis Cluster (`store.cluster`): its seed URLs.
        case cluster([String])
    }

    func keyPlace(_ configuration: TollgateConfiguration, redisForKeys: Bool) throws -> KeyPlace {
        if let keyFile { return .file(keyFile) }
        if redisForKeys, let redis { return .redis(redis) }
        let keys = configuration.sidecar.keys
        switch keys.source {
        case .file:
            let file = keys.file
            return .file(file.hasPrefix("/") ? file : URL(fileURLWithPath: config).deletingLastPathComponent().appendingPathComponent(file).path)
        case .redis:
            if let url = keys.url ?? configuration.sidecar.store.url ?? redis { return .redis(url) }
            if let seeds = configuration.sidecar.store.cluster { return .cluster(seeds) }
            throw ValidationError("the configuration keeps keys in Redis without a URL: give --redis")
        }
    }

    /// Runs `body` with the key records' store.
    func withKeyStore<T>(_ body: (any KeyRecordStore, TollgateConfiguration) async throws -> T) async throws -> T {
        let configuration = try configuration()
        let plans = Set(configuration.plans.map(\.name))
        switch try keyPlace(configuration, redisForKeys: true) {
        case .file(let path):
            return try await body(KeyFileStore(path: path, plans: plans), configuration)
        case .redis(let url):
            return try await Self.withRedis(url) { client in
                try await body(RedisKeyRecordStore(client: client, logger: Logger(label: "tollgate.cli")), configuration)
            }
        case .cluster(let seeds):
            return try await withCluster(seeds, tls: configuration.sidecar.store.tls) { cluster in
                try await body(RedisKeyRecordStore(cluster: cluster, logger: Logger(label: "tollgate.cli")), configuration)
            }
        }
    }

    /// A running client of the Redis Cluster at `seeds` (with `store.tls` for `rediss://` seeds, its paths
    /// relative to the configuration file), run until `body` returns.
    func withCluster<T>(_ seeds: [String], tls: StoreTLSSettings?, _ body: (RedisClusterClient) async throws -> T) async throws -> T {
        let logger = Logger(label: "tollgate.cli")
        let client: RedisClusterClient
        do {
            let resolve = { (path: String) in
                path.hasPrefix("/") ? path : URL(fileURLWithPath: config).deletingLastPathComponent().appendingPathComponent(path).path
            }
            let settings = seeds.allSatisfy({ $0.hasPrefix("rediss://") }) ? tls : nil
            let tlsConfiguration = settings.map {
                RedisTLSConfiguration(
                    caFile: $0.caFile.map(resolve), certificateFile: $0.certFile.map(resolve), privateKeyFile: $0.keyFile.map(resolve),
                    serverName: $0.serverName)
            }
            client = try RedisClusterClient(configuration: RedisClusterConfiguration(urls: seeds, tls: tlsConfiguration), logger: logger)
        } catch {
            throw ValidationError("store.cluster: \(error)")
        }
        return try await Self.whileRunning(
            { await client.run() }, ready: { () async throws(RedisClientError) in try await client.waitUntilConnected(timeout: .seconds(5)) },
            unreachable: "could not reach the Redis Cluster at \(client.endpointDescription)"
        ) { try await body(client) }
    }

    /// Runs `body` with the counter operations straight against the store: `--redis`, else the
    /// configuration's Redis store (a memory store lives inside the sidecar: use `--admin`).
    func withCounters<T>(_ body: (CounterAdmin) async throws -> T) async throws -> T {
        let configuration = try configuration()
        let settings = configuration.sidecar.store
        guard let url = redis ?? (settings.backend == .redis ? settings.url : nil) else {
            let place =
                settings.backend != .redis ? "in the sidecar's memory"
                : settings.cluster != nil ? "on a Redis Cluster, which this command does not read directly"
                : "behind Redis Sentinel, which this command does not read directly"
            throw ValidationError("the configuration keeps counters \(place): ask the sidecar (--admin URL --token TOKEN), or give --redis")
        }
        let logger = Logger(label: "tollgate.cli")
        return try await Self.withRedis(url) { client in
            let store = RedisLimitStore(client: client, configuration: .init(denyCache: false, coalesce: false), logger: logger)
            switch try keyPlace(configuration, redisForKeys: false) {
            case .file(let path):
                let file = try loadKeyFile(path, plans: Set(configuration.plans.map(\.name)))
                return try await body(CounterAdmin(store: store, plans: configuration.plans, keys: FileKeySource(file: file)))
            case .redis(let keysURL) where keysURL == url:
                return try await body(CounterAdmin(store: store, plans: configuration.plans, keys: RedisKeySource(client: client, logger: logger)))
            case .redis(let keysURL):
                return try await Self.withRedis(keysURL) { keysClient in
                    try await body(CounterAdmin(store: store, plans: configuration.plans, keys: RedisKeySource(client: keysClient, logger: logger)))
                }
            case .cluster(let seeds):
                return try await withCluster(seeds, tls: configuration.sidecar.store.tls) { cluster in
                    try await body(CounterAdmin(store: store, plans: configuration.plans, keys: RedisKeySource(cluster: cluster, logger: logger)))
                }
            }
        }
    }

    func loadKeyFile(_ path: String, plans: Set<String>) throws -> KeyFile {
        do {
            return try KeyFile.load(contentsOfFile: path, plans: plans)
        } catch {
            FileHandle.standardError.write(Data("\(error.description)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// Times on the command line: unix seconds, an RFC 3339 time, or a duration from now (`30d`, `12h`, `90m`, `45s`).
enum CommandLineTime {
    static func parse(_ text: String, now: Int64 = Int64(Date().timeIntervalSince1970)) -> Int64? {
        if let seconds = Int64(text) { return seconds }
        if let date = ISO8601DateFormatter().date(from: text) { return Int64(date.timeIntervalSince1970) }
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3_600, "d": 86_400]
        guard let unit = text.last.flatMap({ units[$0] }), let count = Int64(text.dropLast()), count > 0 else { return nil }
        return now + count * unit
    }

    static let help = "unix seconds, an RFC 3339 time (2027-01-01T00:00:00Z) or a duration from now (30d, 12h, 90m)"

    static func render(_ seconds: Int64?) -> String {
        guard let seconds else { return "-" }
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
    }
}

/// A plain text table: a header row and aligned columns.
enum TextTable {
    static func render(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }
}
