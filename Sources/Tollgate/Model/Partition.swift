/// Who a request is counted against: the API key and the organization that owns it.
///
/// Build one per request or keep one per key: the hashes used to find its counters are computed once,
/// here, so a check never hashes a string. A kept partition passed `inout` to `MemoryStore.checkNow`
/// also remembers where its counters are. `apiKey` is an identifier of the key, such as its SHA-256
/// hex digest or a prefix of it — never the secret itself.
public struct Partition: Sendable, Hashable {
    /// The organization that owns the key; also the Redis hash tag.
    public let organization: String
    /// A stable, non-secret identifier of the API key.
    public let apiKey: String
    package let organizationHash: UInt64
    package let apiKeyHash: UInt64

    public init(organization: String, apiKey: String) {
        self.organization = organization
        self.apiKey = apiKey
        organizationHash = StableHash.of(organization)
        apiKeyHash = StableHash.of(apiKey)
    }

    /// Where `MemoryStore` last found this partition's entries; never part of equality.
    @usableFromInline var hints = EntryHints()

    func subject(for scope: LimitScope) -> String {
        switch scope {
        case .apiKey: apiKey
        case .organization: organization
        }
    }

    func hash(for scope: LimitScope) -> UInt64 {
        switch scope {
        case .apiKey: apiKeyHash
        case .organization: organizationHash
        }
    }

    public static func == (lhs: Partition, rhs: Partition) -> Bool {
        lhs.organization == rhs.organization && lhs.apiKey == rhs.apiKey
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(organization)
        hasher.combine(apiKey)
    }
}

/// The positions at which a partition's entries were last found in their shard tables, per scope
/// (position + 1; 0 for none). Only a hint: the store checks the entry there before trusting it, so a
/// stale hint, or one from another store, costs one comparison and the ordinary lookup.
@usableFromInline
struct EntryHints: Sendable {
    var apiKey: Int32 = 0
    var organization: Int32 = 0

    @usableFromInline init() {}

    /// The hinted position for `scope`, or -1.
    @inline(__always)
    func position(for scope: LimitScope) -> Int {
        switch scope {
        case .apiKey: Int(apiKey) &- 1
        case .organization: Int(organization) &- 1
        }
    }

    @inline(__always)
    mutating func remember(_ position: Int, for scope: LimitScope) {
        // Positions stay below 2^24 (a shard's bound).
        switch scope {
        case .apiKey: apiKey = Int32(truncatingIfNeeded: position &+ 1)
        case .organization: organization = Int32(truncatingIfNeeded: position &+ 1)
        }
    }
}

/// A fast, unseeded 64-bit string hash (FNV-1a with a final avalanche) for placing counters in shards.
/// Not for untrusted-input hash tables on its own: the store's tables bound probe lengths by load factor.
package enum StableHash {
    package static func of(_ string: String) -> UInt64 {
        var copy = string
        return copy.withUTF8 { bytes in
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in bytes {
                h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
            }
            return mix(h)
        }
    }

    /// The finalizer of SplitMix64: spreads every input bit over the whole word.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
