import TollgateHTTP

/// What the registry holds about one API key (stored under the key's SHA-256, never the key).
public struct KeyRecord: Sendable, Equatable {
    /// The organization that owns the key.
    public var organization: String
    /// The plan's name in the configuration.
    public var plan: String
    /// What the key may do.
    public var scopes: Set<String>
    /// Unix seconds after which the key is no longer valid; nil for a key that does not expire.
    public var expiresAt: Int64?
    /// A revoked key is refused at once (after the cache TTL), whatever its expiry.
    public var revoked: Bool

    public init(organization: String, plan: String, scopes: Set<String>, expiresAt: Int64? = nil, revoked: Bool = false) {
        self.organization = organization
        self.plan = plan
        self.scopes = scopes
        self.expiresAt = expiresAt
        self.revoked = revoked
    }
}

/// A key record with what every request needs of it worked out once, when it is cached: the identity
/// (the digest's hex prefixes) is the same for every request; only the expiry depends on the time.
struct ResolvedKey: Sendable {
    let record: KeyRecord
    let fingerprint: String
    let identity: APIKeyIdentity

    init(_ record: KeyRecord, digest: KeyDigest) {
        self.record = record
        fingerprint = digest.fingerprint
        identity = APIKeyIdentity(
            organization: record.organization, plan: record.plan, scopes: record.scopes, keyID: digest.keyID,
            fingerprint: fingerprint)
    }

    /// Whether the key is usable at `now` (unix seconds); the expiry instant itself is already expired.
    func resolution(now: Int64) -> KeyResolution {
        if record.revoked { return KeyResolution(.revoked, fingerprint: fingerprint) }
        if let expiresAt = record.expiresAt, now >= expiresAt { return KeyResolution(.expired, fingerprint: fingerprint) }
        return KeyResolution(.active(identity), fingerprint: fingerprint)
    }
}

/// Where key records come from: a key file or Redis.
public protocol KeySource: Sendable {
    /// The record stored for `digest`, or nil when there is none. Throws when the source cannot answer.
    func record(for digest: KeyDigest) async throws -> KeyRecord?
    /// Whether the source can answer now (for `/readyz`).
    func isReachable() async -> Bool
}
