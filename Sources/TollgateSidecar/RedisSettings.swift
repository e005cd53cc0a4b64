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
