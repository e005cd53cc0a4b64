import Tollgate

/// Where a plan's counters live in Redis: one key per scope of the plan, as the in-process store keeps
/// one entry per scope.
///
/// ```
/// tg:{<organization>}:<scope id>:k<api key id>    the plan's per-key limits   e.g. tg:{org_123}:5c0f2e:k9f86d081884c7d65
/// tg:{<organization>}:<scope id>:o                its organization-wide limits
/// … :l<n>                                         the entries of the scope's n-th limit, a sliding log (a list)
/// ```
///
/// Every key of one request carries the organization as its hash tag, so one script can touch all of
/// them on a Redis Cluster. `<scope id>` is six hex digits of a hash of the plan's name and time zone
/// and the scope's limits, their names and numbers (`scopeID(plan:scope:)`): new whenever one of them
/// changes, so a changed plan starts that scope's counters afresh instead of misreading old state (old
/// keys expire by their TTL). The value is the binary layout of `ScopeLayout`.
///
/// Names are at most 44 bytes, because the name is most of a counter's memory and Redis rounds it up to
/// 48 bytes up to that length: an organization is its own tag when it is plain `[A-Za-z0-9_.:@-]` of up
/// to 14 bytes, otherwise `#` and 11 base-62 digits of a 64-bit hash of it (a `#` never appears in a
/// plain tag, and a `{` or `}` can never split the tag); an API key id of up to 16 bytes is written as
/// `k<id>`, a longer one as `h` and 11 base-62 digits of its hash. Every key has a TTL no shorter than
/// the windows it serves.
///
/// The previous layout kept one key per limit, `<limit id>` (`limitID(plan:index:)`) in place of the
/// scope id, and a sliding log's total in `… :sum`; the limit script reads it once when a scope key is
/// absent (`PlanScript`).
public enum LimitKeys {
    /// The hash tag (without braces) for an organization.
    public static func hashTag(_ organization: String) -> String {
        hashTag(organization, hash: StableHash.of(organization))
    }

    /// The hash tag of a partition's organization (its hash is already computed).
    static func hashTag(for partition: Partition) -> String {
        hashTag(partition.organization, hash: partition.organizationHash)
    }

    private static func hashTag(_ organization: String, hash: UInt64) -> String {
        let utf8 = organization.utf8
        guard (1...14).contains(utf8.count) else { return hashed("#", hash) }
        // Checked on every request: over the contiguous bytes when there are (always, for native strings).
        let plain = utf8.withContiguousStorageIfAvailable { bytes in bytes.allSatisfy(isPlain) } ?? utf8.allSatisfy(isPlain)
        return plain ? organization : hashed("#", hash)
    }

    /// What follows a per-key limit's id: `k<api key id>`, or `h<hash>` for an id over 16 bytes.
    static func subject(for partition: Partition) -> String {
        partition.apiKey.utf8.count <= 16 ? "k" + partition.apiKey : hashed("h", partition.apiKeyHash)
    }

    /// `marker` and 11 base-62 digits of `hash`: 12 bytes, a small string that allocates nothing.
    private static func hashed(_ marker: Character, _ hash: UInt64) -> String {
        String(unsafeUninitializedCapacity: 12) { buffer in
            buffer[0] = marker.asciiValue!
            var rest = hash
            for index in stride(from: 11, through: 1, by: -1) {
                buffer[index] = base62[Int(rest % 62)]
                rest /= 62
            }
            return 12
        }
    }

    private static let base62 = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    @inline(__always)
    private static func isPlain(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"),
            UInt8(ascii: "@"), UInt8(ascii: "-"):
            true
        default: false
        }
    }

    /// The stable identity of one scope of a plan: six hex digits of the definitions of its limits.
    public static func scopeID(plan: Plan, scope: LimitScope) -> String {
        let members = plan.limits.filter { $0.scope == scope }.map { "\($0.name)|\($0.algorithm)|\($0.shadow)" }
        let definition = StableHash.of(
            (["scope", plan.name, plan.timeZone.identifier, scope.rawValue] + members).joined(separator: "|"))
        return hex(definition, digits: 6)
    }

    /// The stable identity of one limit of a plan in the previous layout: six hex digits of its whole definition.
    public static func limitID(plan: Plan, index: Int) -> String {
        let limit = plan.limits[index]
        let definition = StableHash.of(
            "\(plan.name)|\(plan.timeZone.identifier)|\(limit.name)|\(limit.algorithm)|\(limit.scope.rawValue)")
        return hex(definition, digits: 6)
    }

    /// The keys of one check of `plan` for `partition`, in the order of the plan's script: its scope keys,
    /// then its sliding logs' lists.
    static func keys(plan: Plan, partition: Partition) -> [String] {
        let prefix = "tg:{\(hashTag(for: partition))}:"
        let scopes = ScopeLayout.scopes(of: plan).map { layout in
            prefix + scopeID(plan: plan, scope: layout.scope) + ":" + (layout.scope == .apiKey ? subject(for: partition) : "o")
        }
        let logs = plan.limits.indices.filter { plan.compiled.specs[$0].kind == .slidingLog }.map { index in
            scopes[plan.limits[index].scope == .apiKey ? 0 : scopes.count - 1] + ":l\(logNumber(plan: plan, index: index))"
        }
        return scopes + logs
    }

    /// A sliding log's list is named after its position among its scope's limits (from 1), so that
    /// changing the other scope's limits leaves it where it is.
    static func logNumber(plan: Plan, index: Int) -> Int {
        plan.limits[..<index].filter { $0.scope == plan.limits[index].scope }.count + 1
    }

    /// The state keys of every limit of `plan` for `partition` in the previous layout, in plan order (two
    /// for a sliding log), and for each limit the 1-based index of its first key.
    static func previousKeys(plan: Plan, partition: Partition, limitIDs: [String]) -> (keys: [String], first: [Int]) {
        let prefix = "tg:{\(hashTag(for: partition))}:"
        var keys: [String] = []
        var first: [Int] = []
        keys.reserveCapacity(plan.limits.count + 1)
        for (index, limit) in plan.limits.enumerated() {
            let subject = limit.scope == .apiKey ? subject(for: partition) : "o"
            let key = prefix + limitIDs[index] + ":" + subject
            first.append(keys.count + 1)
            keys.append(key)
            if case .slidingLog = limit.algorithm { keys.append(key + ":sum") }
        }
        return (keys, first)
    }

    static func hex(_ value: UInt64, digits: Int) -> String {
        let text = String(value, radix: 16)
        let padded = String(repeating: "0", count: max(0, 16 - text.count)) + text
        return String(padded.prefix(digits))
    }
}
