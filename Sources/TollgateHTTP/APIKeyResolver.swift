/// Who a valid API key belongs to and what it may do: what a key registry knows about a key.
public struct APIKeyIdentity: Sendable, Equatable {
    /// The organization that owns the key.
    public var organization: String
    /// The name of the key's plan in the configuration.
    public var plan: String
    /// What the key may do, such as `messages:send`.
    public var scopes: Set<String>
    /// A stable, non-secret identifier of the key that its per-key counters are kept under
    /// (`Partition.apiKey`), such as a prefix of the key's SHA-256.
    public var keyID: String
    /// A short non-secret tag for logs (8 hex digits of the key's SHA-256 in the sidecar).
    public var fingerprint: String

    public init(organization: String, plan: String, scopes: Set<String>, keyID: String, fingerprint: String? = nil) {
        self.organization = organization
        self.plan = plan
        self.scopes = scopes
        self.keyID = keyID
        self.fingerprint = fingerprint ?? String(keyID.prefix(8))
    }
}

/// The answer of a key registry for one key.
public struct KeyResolution: Sendable, Equatable {
    public enum Status: Sendable, Equatable {
        /// The key is valid now.
        case active(APIKeyIdentity)
        /// No such key.
        case unknown
        /// The key was revoked.
        case revoked
        /// The key's expiry has passed.
        case expired
    }

    public var status: Status
    /// A short non-secret tag of the key for logs, even when it is unknown; empty when the resolver has none.
    public var fingerprint: String

    public init(_ status: Status, fingerprint: String = "") {
        self.status = status
        self.fingerprint = fingerprint
        if fingerprint.isEmpty, case .active(let identity) = status { self.fingerprint = identity.fingerprint }
    }

    public static func active(_ identity: APIKeyIdentity) -> KeyResolution { KeyResolution(.active(identity)) }
    public static let unknown = KeyResolution(.unknown)
}

/// Looks API keys up. The sidecar's registry hashes the key and asks a file or Redis, with a cache; a
/// gateway can bring its own.
///
/// Throwing means the registry could not answer (the caller answers 503); an unknown key is not an error.
public protocol APIKeyResolver: Sendable {
    func resolve(_ key: APIKey) async throws -> KeyResolution
}

/// A resolver that keeps answers in process and can give a cached one without suspending.
public protocol CachingAPIKeyResolver: APIKeyResolver {
    /// The answer for `key` when a fresh one is cached, else nil (call `resolve`).
    func cachedResolution(_ key: APIKey) -> KeyResolution?
    /// `cachedResolution`, with how long the answer may be used again without asking (nil: it may not).
    func cachedLookup(_ key: APIKey) -> (resolution: KeyResolution, reuse: KeyReuse?)?
    /// Whether an answer given with `reuse` still stands: its cache entry is fresh, the keys were not
    /// reloaded since and the key has not expired. Counted as a cache hit when it does.
    func isStillFresh(_ reuse: KeyReuse) -> Bool
}

/// How long a cached answer may be used again without asking the resolver (`CachingAPIKeyResolver`):
/// what a caller that keeps the answer (a client connection, request after request) hands back to
/// `isStillFresh(_:)`. It holds no secret.
public struct KeyReuse: Sendable {
    /// The cache's own freshness: the answer is asked again after this, as a cached one would be.
    public var freshUntil: ContinuousClock.Instant
    /// The key's expiry (unix seconds), checked on every use as the resolver checks it.
    public var expiresAt: Int64?
    /// The resolver's cache generation when the answer was given: a reload of the keys starts another.
    public var generation: UInt64

    public init(freshUntil: ContinuousClock.Instant, expiresAt: Int64?, generation: UInt64) {
        self.freshUntil = freshUntil
        self.expiresAt = expiresAt
        self.generation = generation
    }
}

extension CachingAPIKeyResolver {
    /// The cached answer for `key` with how long it may be used again; by default the answer alone (it
    /// is then asked for every time).
    public func cachedLookup(_ key: APIKey) -> (resolution: KeyResolution, reuse: KeyReuse?)? {
        cachedResolution(key).map { ($0, nil) }
    }

    /// Whether an answer given with `reuse` still stands; by default never.
    public func isStillFresh(_ reuse: KeyReuse) -> Bool { false }
}
