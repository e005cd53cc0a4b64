import Tollgate
import TollgateRedis

/// From the `store` section to the Redis client's configuration, and from the client's configuration
/// errors back to the section's field names.
extension StoreSettings {
    /// The configuration of a client for `url`, one of the sidecar's Redis URLs: the store's connections
    /// and time budget and, when `url` is `rediss://`, `tls` with its paths resolved against the
    /// configuration file's folder.
    func redisConfiguration(url: String, configurationFile: String) throws(RedisClientError) -> RedisConfiguration {
        var redis = try RedisConfiguration(url: url)
        redis.connections = connections
        redis.commandTimeout = timeout
        if redis.tls != nil, let tls {
            let resolve = { (path: String) in Sidecar.resolve(path, relativeTo: configurationFile) }
            redis.tls = RedisTLSConfiguration(
                caFile: tls.caFile.map(resolve), certificateFile: tls.certFile.map(resolve),
                privateKeyFile: tls.keyFile.map(resolve), serverName: tls.serverName)
        }
        return redis
    }

    /// The cluster client's configuration from `cluster`, with the same connections, timeout and TLS as a
    /// single server's.
    func clusterConfiguration(urls: [String], configurationFile: String) throws(RedisClientError) -> RedisClusterConfiguration {
        var cluster = try RedisClusterConfiguration(urls: urls)
        cluster.node = try redisConfiguration(url: urls[0], configurationFile: configurationFile)
        return cluster
    }

    /// The Sentinel client's configuration from `sentinel`: the primary with the store's connections,
    /// timeout and TLS (when the sentinel URLs are `rediss://`), and the section's credentials.
    func sentinelConfiguration(_ sentinel: StoreSentinelSettings, configurationFile: String) throws(RedisClientError) -> RedisSentinelConfiguration {
        var primary = try redisConfiguration(url: sentinel.nodes[0], configurationFile: configurationFile)
        primary.username = sentinel.username
        primary.password = sentinel.password
        primary.database = 0
        return try RedisSentinelConfiguration(masterName: sentinel.master, urls: sentinel.nodes, primary: primary, tls: primary.tls)
    }

    /// The field of the configuration file that `error` is about: the `store.tls` field it names, else
    /// `urlField`, the URL the client was made from.
    static func field(of error: RedisClientError, urlField: String) -> String {
        switch error.field {
        case "tls.caFile": "store.tls.ca_file"
        case "tls.certificateFile": "store.tls.cert_file"
        case "tls.privateKeyFile": "store.tls.key_file"
        case "tls.serverName": "store.tls.server_name"
        case "tls": "store.tls"
        default: urlField
        }
    }
}
