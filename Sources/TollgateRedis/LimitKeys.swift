import Tollgate

/// Where a plan's counters live in Redis.
///
/// ```
/// tg:{<organization>}:<limit>:k<api key id>    per-key limit            e.g. tg:{org_123}:5c0f2e:k9f86d081884c7d65
/// tg:{<organization>}:<limit>:o                organization-wide limit  e.g. tg:{org_123}:a41b07:o
/// … :sum                                       a sliding log's running total
/// ```
///
/// Every key of one request carries the organization as its hash tag, so one script can touch all of
/// them on a Redis Cluster. `<limit>` is six hex digits of a hash of the plan's name and time zone and the
/// limit's name, numbers and scope (`limitID(plan:index:)`): short, because the key name is most of a
/// counter's memory, and new whenever a definition changes, so a changed limit starts afresh instead of
/// misreading old state (old keys expire by their TTL). Organizations whose identifier is not plain
/// `[A-Za-z0-9_.:@-]` (up to 128 bytes) are tagged by a hash of it instead, so a `{` or `}` can never
/// split the tag. Values: `a:b:c` decimal strings (see `LimitState` in the core); a sliding log is a list
/// of `time:cost` entries, oldest first, plus its `:sum`. Every key has a TTL no shorter than its window.
public enum LimitKeys {
    /// The hash tag (without braces) for an organization.
    public static func hashTag(_ organization: String) -> String {
        let utf8 = organization.utf8
        guard (1...128).contains(utf8.count) else { return hashed(organization) }
        // Checked on every request: over the contiguous bytes when there are (always, for native strings).
        let plain = utf8.withContiguousStorageIfAvailable { bytes in bytes.allSatisfy(isPlain) } ?? utf8.allSatisfy(isPlain)
        return plain ? organization : hashed(organization)
    }

    private static func hashed(_ organization: String) -> String {
        "h" + hex(StableHash.of(organization), digits: 16)
    }

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

    /// The stable identity of one limit of a plan: six hex digits of its whole definition.
    public static func limitID(plan: Plan, index: Int) -> String {
        let limit = plan.limits[index]
        let definition = StableHash.of(
            "\(plan.name)|\(plan.timeZone.identifier)|\(limit.name)|\(limit.algorithm)|\(limit.scope.rawValue)")
        return hex(definition, digits: 6)
    }

    /// The state keys of every limit of `plan` for `partition`, in plan order (two for a sliding log),
    /// and for each limit the 1-based index of its first key.
    static func keys(plan: Plan, partition: Partition, limitIDs: [String]) -> (keys: [String], first: [Int]) {
        let prefix = "tg:{\(hashTag(partition.organization))}:"
        var keys: [String] = []
        var first: [Int] = []
        keys.reserveCapacity(plan.limits.count + 1)
        for (index, limit) in plan.limits.enumerated() {
            let subject = limit.scope == .apiKey ? "k" + partition.apiKey : "o"
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
