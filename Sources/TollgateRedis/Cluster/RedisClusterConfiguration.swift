/// How `RedisClusterClient` finds a Redis Cluster and talks to its nodes.
///
/// | field | type | default | meaning |
/// | --- | --- | --- | --- |
/// | `seeds` | `[ClusterAddress]` | — | nodes asked for the slot map at start (any of the cluster's; one that answers is enough) |
/// | `node` | `RedisConfiguration` | `RedisConfiguration()` | everything but the address, for every node: credentials, TLS, connections per primary, timeouts (its host and port are ignored) |
/// | `refreshInterval` | `Duration` | 10 s | the slot map is read again at least this often |
/// | `minimumRefreshInterval` | `Duration` | 250 ms | at most one refresh per interval, however many `MOVED` or lost connections ask for one |
/// | `maximumRedirects` | `Int` | 5 | `MOVED`/`ASK` followed per command before it fails |
/// | `tryAgainAttempts` | `Int` | 5 | retries of a command answered `TRYAGAIN` (its keys are mid-migration) |
/// | `tryAgainDelay` | `Duration` | 5 ms | the wait before the first such retry; the n-th waits n times as long |
///
/// The database is always 0 (a cluster has no other).
public struct RedisClusterConfiguration: Sendable, Hashable {
    public var seeds: [ClusterAddress]
    public var node: RedisConfiguration
    public var refreshInterval: Duration
    public var minimumRefreshInterval: Duration
    public var maximumRedirects: Int
    public var tryAgainAttempts: Int
    public var tryAgainDelay: Duration

    public init(
        seeds: [ClusterAddress], node: RedisConfiguration = RedisConfiguration(), refreshInterval: Duration = .seconds(10),
        minimumRefreshInterval: Duration = .milliseconds(250), maximumRedirects: Int = 5, tryAgainAttempts: Int = 5,
        tryAgainDelay: Duration = .milliseconds(5)
    ) {
        self.seeds = seeds
        self.node = node
        self.refreshInterval = refreshInterval
        self.minimumRefreshInterval = minimumRefreshInterval
        self.maximumRedirects = maximumRedirects
        self.tryAgainAttempts = tryAgainAttempts
        self.tryAgainDelay = tryAgainDelay
    }

    /// Seeds from URLs (`redis://[[user]:password@]host[:port]` or `rediss://…`): the first URL's
    /// credentials and TLS apply to every node; `tls`, when given, replaces its TLS settings.
    public init(urls: [String], tls: RedisTLSConfiguration? = nil) throws(RedisClientError) {
        guard let first = urls.first else {
            throw RedisClientError(.invalidConfiguration, message: "a Redis Cluster needs at least one seed node URL", field: "seeds")
        }
        var node = try RedisConfiguration(url: first)
        var seeds: [ClusterAddress] = []
        for url in urls {
            let seed = try RedisConfiguration(url: url)
            guard seed.unixSocketPath == nil else {
                throw RedisClientError(
                    .invalidConfiguration, message: "a Redis Cluster seed must be a redis:// or rediss:// URL, not a unix socket",
                    field: "seeds")
            }
            guard seed.database == 0 else {
                throw RedisClientError(
                    .invalidConfiguration, message: "a Redis Cluster has database 0 only; a seed URL names database \(seed.database)",
                    field: "seeds")
            }
            guard (seed.tls != nil) == (node.tls != nil) else {
                throw RedisClientError(
                    .invalidConfiguration, message: "the seed URLs of a Redis Cluster must all be redis:// or all rediss://",
                    field: "seeds")
            }
            seeds.append(ClusterAddress(host: seed.host, port: seed.port))
        }
        if let tls { node.tls = tls }
        self.init(seeds: seeds, node: node)
    }

    /// The configuration of the node at `address`.
    func configuration(of address: ClusterAddress) -> RedisConfiguration {
        var configuration = node.at(address)
        configuration.database = 0
        return configuration
    }

    /// Checks every field; the error names the field, what was expected and what was found.
    public func validate() throws(RedisClientError) {
        func fail(_ field: String, _ expected: String, _ found: String) -> RedisClientError {
            .invalidField(field, of: "RedisClusterConfiguration", expected: expected, found: found)
        }
        let first = try ClusterAddress.firstOfValid(seeds, field: "seeds", of: "RedisClusterConfiguration")
        guard node.unixSocketPath == nil else { throw fail("node.unixSocketPath", "nil (cluster nodes are reached over TCP)", "a path") }
        guard node.database == 0 else { throw fail("node.database", "0 (a cluster has no other database)", "\(node.database)") }
        try configuration(of: first).validate()
        guard refreshInterval > .zero else { throw fail("refreshInterval", "positive", "\(refreshInterval)") }
        guard minimumRefreshInterval > .zero, minimumRefreshInterval <= refreshInterval else {
            throw fail("minimumRefreshInterval", "positive and at most refreshInterval", "\(minimumRefreshInterval)")
        }
        guard maximumRedirects >= 1 else { throw fail("maximumRedirects", "at least 1", "\(maximumRedirects)") }
        guard tryAgainAttempts >= 0 else { throw fail("tryAgainAttempts", "0 or more", "\(tryAgainAttempts)") }
        guard tryAgainDelay > .zero else { throw fail("tryAgainDelay", "positive", "\(tryAgainDelay)") }
    }
}

extension RedisConfiguration {
    /// The same settings for the server at `address` (over TCP).
    func at(_ address: ClusterAddress) -> RedisConfiguration {
        var configuration = self
        configuration.host = address.host
        configuration.port = address.port
        configuration.unixSocketPath = nil
        return configuration
    }
}
