/// How `RedisSentinelClient` finds the primary that Redis Sentinel names, and talks to it.
///
/// | field | type | default | meaning |
/// | --- | --- | --- | --- |
/// | `masterName` | `String` | — | the name the sentinels monitor the primary under |
/// | `sentinels` | `[ClusterAddress]` | — | sentinels to ask, in order, until one answers |
/// | `sentinelUsername` | `String?` | `nil` | with `sentinelPassword`, `AUTH username password` to each sentinel |
/// | `sentinelPassword` | `String?` | `nil` | `AUTH` to each sentinel |
/// | `node` | `RedisConfiguration` | `RedisConfiguration()` | the primary's settings but its address: credentials, database, connections, timeouts; its `tls` applies to the sentinels too |
/// | `resolveInterval` | `Duration` | 30 s | the primary is asked for again at least this often, event or not |
/// | `minimumResolveInterval` | `Duration` | 250 ms | at most one resolution per interval, however many lost connections ask for one |
public struct RedisSentinelConfiguration: Sendable, Hashable {
    public var masterName: String
    public var sentinels: [ClusterAddress]
    public var sentinelUsername: String?
    public var sentinelPassword: String?
    public var node: RedisConfiguration
    public var resolveInterval: Duration
    public var minimumResolveInterval: Duration

    public init(
        masterName: String, sentinels: [ClusterAddress], sentinelUsername: String? = nil, sentinelPassword: String? = nil,
        node: RedisConfiguration = RedisConfiguration(), resolveInterval: Duration = .seconds(30),
        minimumResolveInterval: Duration = .milliseconds(250)
    ) {
        self.masterName = masterName
        self.sentinels = sentinels
        self.sentinelUsername = sentinelUsername
        self.sentinelPassword = sentinelPassword
        self.node = node
        self.resolveInterval = resolveInterval
        self.minimumResolveInterval = minimumResolveInterval
    }

    /// Sentinels from URLs (`redis://[[user]:password@]host[:port]`, `rediss://…` for TLS): the first URL's
    /// credentials authenticate to every sentinel; the primary is reached with `primary`'s settings (its
    /// host and port are ignored) and, when the URLs are `rediss://`, TLS (`tls` when given).
    public init(
        masterName: String, urls: [String], primary: RedisConfiguration = RedisConfiguration(), tls: RedisTLSConfiguration? = nil
    ) throws(RedisClientError) {
        guard let first = urls.first else {
            throw RedisClientError(.invalidConfiguration, message: "Redis Sentinel needs at least one sentinel URL", field: "sentinels")
        }
        let head = try RedisConfiguration(url: first)
        var sentinels: [ClusterAddress] = []
        for url in urls {
            let sentinel = try RedisConfiguration(url: url)
            guard sentinel.unixSocketPath == nil, (sentinel.tls != nil) == (head.tls != nil) else {
                throw RedisClientError(
                    .invalidConfiguration, message: "sentinel URLs must all be redis:// or all rediss:// (not unix sockets)",
                    field: "sentinels")
            }
            sentinels.append(ClusterAddress(host: sentinel.host, port: sentinel.port))
        }
        var node = primary
        if head.tls != nil { node.tls = tls ?? node.tls ?? RedisTLSConfiguration() }
        self.init(
            masterName: masterName, sentinels: sentinels, sentinelUsername: head.username, sentinelPassword: head.password, node: node)
    }

    /// The primary's configuration at `address`.
    func configuration(ofPrimary address: ClusterAddress) -> RedisConfiguration {
        node.at(address)
    }

    /// A sentinel's configuration: its address and credentials, the nodes' TLS and timeouts, one connection.
    func configuration(ofSentinel address: ClusterAddress) -> RedisConfiguration {
        var configuration = configuration(ofPrimary: address)
        configuration.username = sentinelUsername
        configuration.password = sentinelPassword
        configuration.database = 0
        configuration.connections = 1
        return configuration
    }

    /// Checks every field; the error names the field, what was expected and what was found.
    public func validate() throws(RedisClientError) {
        func fail(_ field: String, _ expected: String, _ found: String) -> RedisClientError {
            .invalidField(field, of: "RedisSentinelConfiguration", expected: expected, found: found)
        }
        guard !masterName.isEmpty, !masterName.contains(where: \.isWhitespace) else {
            throw fail("masterName", "the name the sentinels monitor, without spaces", "\"\(masterName)\"")
        }
        let first = try ClusterAddress.firstOfValid(sentinels, field: "sentinels", of: "RedisSentinelConfiguration")
        guard sentinelUsername == nil || sentinelPassword != nil else { throw fail("sentinelPassword", "set when sentinelUsername is set", "nil") }
        guard node.unixSocketPath == nil else { throw fail("node.unixSocketPath", "nil (the primary is reached over TCP)", "a path") }
        try configuration(ofSentinel: first).validate()
        try configuration(ofPrimary: first).validate()
        guard minimumResolveInterval > .zero, minimumResolveInterval <= resolveInterval else {
            throw fail("minimumResolveInterval", "positive and at most resolveInterval", "\(minimumResolveInterval)")
        }
    }
}
