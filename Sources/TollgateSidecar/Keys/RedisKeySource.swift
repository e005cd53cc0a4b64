import Logging
import TollgateRedis

/// Keys from Redis: the contract with whatever issues keys.
///
/// One hash per key, named after the SHA-256 of the key in lowercase hex:
///
/// ```
/// HSET tg:key:<sha256 hex> org org_123 plan pro scopes "messages:send messages:read" expires_at 1767225600 revoked 0
/// ```
///
/// | field | required | value |
/// | --- | --- | --- |
/// | `org` | yes | the organization that owns the key |
/// | `plan` | yes | the name of a plan of the sidecar's configuration |
/// | `scopes` | no | scopes separated by spaces, such as `messages:send messages:read`; none when absent |
/// | `expires_at` | no | unix seconds; the key is refused from that second on; absent or empty: no expiry |
/// | `revoked` | no | `1` (or `true`): refused; `0`, `false`, absent: not revoked |
///
/// Other fields are ignored (an issuer may keep its own, such as `created_at` or `label`). Rotation is
/// two hashes: write the new key's, then revoke or expire the old one when clients have moved. A hash
/// without `org` or `plan` is treated as no key (and logged): the sidecar fails closed. Changes take
/// effect within the registry cache's TTL (`keys.cache_ttl`).
public final class RedisKeySource: KeySource {
    /// The server holding the hashes; nil on a cluster or behind Sentinel.
    public let client: RedisClient?
    /// The Redis Cluster holding the hashes (each on the primary of its key's slot); nil otherwise.
    public let cluster: RedisClusterClient?
    /// The primary found through Redis Sentinel that holds the hashes; nil otherwise.
    public let sentinel: RedisSentinelClient?
    let logger: Logger

    public static let keyPrefix = "tg:key:"

    public init(client: RedisClient, logger: Logger) {
        self.client = client
        cluster = nil
        sentinel = nil
        self.logger = logger
    }

    public init(cluster: RedisClusterClient, logger: Logger) {
        client = nil
        self.cluster = cluster
        sentinel = nil
        self.logger = logger
    }

    public init(sentinel: RedisSentinelClient, logger: Logger) {
        client = nil
        cluster = nil
        self.sentinel = sentinel
        self.logger = logger
    }

    /// The Redis key of a digest's hash.
    public static func redisKey(_ digest: KeyDigest) -> String { keyPrefix + digest.hex }

    /// Sends `command`, about the hash `key`, to the server, the primary Sentinel names, or the primary
    /// of `key`'s slot.
    func send(_ command: [String], key: String) async throws(RedisClientError) -> RedisReply {
        if let cluster { return try await cluster.send(command, key: key) }
        if let sentinel { return try await sentinel.send(command) }
        return try await client!.send(command)
    }

    public func record(for digest: KeyDigest) async throws -> KeyRecord? {
        let key = Self.redisKey(digest)
        let reply =
            if let cluster {
                try await cluster.send(["HGETALL", key], key: key)
            } else if let sentinel {
                try await sentinel.send(["HGETALL", key])
            } else {
                try await client!.send(["HGETALL", key])
            }
        guard let items = reply.array else {
            throw RedisClientError(.protocolError, message: "HGETALL answered \(reply), not an array")
        }
        if items.isEmpty { return nil }
        var fields: [String: String] = [:]
        var index = 0
        while index + 1 < items.count {
            if let name = items[index].string, let value = items[index + 1].string { fields[name] = value }
            index += 2
        }
        return Self.record(from: fields, digest: digest, logger: logger)
    }

    /// A record from the hash's fields; nil (and a log line) when it is unusable.
    static func record(from fields: [String: String], digest: KeyDigest, logger: Logger) -> KeyRecord? {
        guard let organization = fields["org"], !organization.isEmpty, let plan = fields["plan"], !plan.isEmpty else {
            logger.warning(
                "key registry entry without org or plan; refusing the key",
                metadata: ["key": "\(digest.fingerprint)", "redis_key": "\(keyPrefix)\(digest.fingerprint)…"])
            return nil
        }
        let scopes = Set((fields["scopes"] ?? "").split(separator: " ").map(String.init))
        var expiresAt: Int64?
        if let raw = fields["expires_at"], !raw.isEmpty {
            guard let seconds = Int64(raw) else {
                logger.warning(
                    "key registry entry with an expires_at that is not unix seconds; refusing the key",
                    metadata: ["key": "\(digest.fingerprint)"])
                return nil
            }
            expiresAt = seconds
        }
        let revoked: Bool
        switch fields["revoked"] ?? "0" {
        case "0", "false", "": revoked = false
        default: revoked = true  // anything but an explicit "not revoked" fails closed
        }
        return KeyRecord(organization: organization, plan: plan, scopes: scopes, expiresAt: expiresAt, revoked: revoked)
    }

    public func isReachable() async -> Bool {
        if let cluster { return await cluster.isReachable() }
        if let sentinel { return await sentinel.isReachable() }
        return (try? await client!.send(["PING"]))?.string == "PONG"
    }
}
