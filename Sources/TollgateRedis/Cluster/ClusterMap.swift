/// Where a Redis Cluster node listens, as the cluster names it (`host:port`).
public struct ClusterAddress: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// The first of `addresses` after checking them all: at least one, each with a host and a port
    /// between 1 and 65535; the error names `type`'s `field`.
    static func firstOfValid(_ addresses: [ClusterAddress], field: String, of type: String) throws(RedisClientError) -> ClusterAddress {
        guard let first = addresses.first else {
            throw RedisClientError.invalidField(field, of: type, expected: "at least one host:port address", found: "none")
        }
        for address in addresses where address.host.isEmpty || !(1...65535).contains(address.port) {
            throw RedisClientError.invalidField(
                field, of: type, expected: "host:port addresses with a port between 1 and 65535", found: "\(address)")
        }
        return first
    }

    /// `host:port` as Redis writes it in `MOVED`/`ASK` (an IPv6 host unbracketed, an empty host meaning
    /// the node that answered: `fallbackHost`).
    init?(redirect text: Substring, fallbackHost: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.init(host: host.isEmpty ? fallbackHost : host, port: port)
    }
}

/// A run of slots and the primary that serves them.
struct SlotRange: Equatable, Sendable {
    var first: Int
    var last: Int
    var primary: ClusterAddress
}

/// Reading the cluster's own description of its slots: `CLUSTER SHARDS` (Redis 7+, Valkey) or the older
/// `CLUSTER SLOTS`. Pure functions of the reply, so the odd shapes are tested without a cluster.
enum ClusterMap {
    /// The primaries' slot ranges from a `CLUSTER SHARDS` reply. In each shard the primary is the node
    /// whose role is `master` and whose health is not `fail`; a shard without one (its primary just
    /// failed, no replica elected yet) or without slots is left out, so its slots stay unserved until
    /// the next refresh. `tls` picks the node's `tls-port` when it has one.
    static func fromShards(_ reply: RedisReply, answeredBy node: ClusterAddress, tls: Bool) throws(RedisClientError) -> [SlotRange] {
        guard let shards = reply.array else { throw bad("CLUSTER SHARDS", reply, "an array of shards") }
        var ranges: [SlotRange] = []
        for shard in shards {
            let fields = try pairs(shard, "CLUSTER SHARDS")
            guard let slots = fields["slots"]?.array, let nodes = fields["nodes"]?.array else {
                throw bad("CLUSTER SHARDS", shard, "a shard with slots and nodes")
            }
            var primary: ClusterAddress?
            for member in nodes {
                let info = try pairs(member, "CLUSTER SHARDS")
                guard info["role"]?.string == "master", info["health"]?.string != "fail" else { continue }
                let port = (tls ? info["tls-port"]?.int64 : nil) ?? info["port"]?.int64
                guard let port, (1...65535).contains(port) else { throw bad("CLUSTER SHARDS", member, "a node with a port") }
                var host = info["endpoint"]?.string ?? ""
                if host.isEmpty || host == "?" { host = info["ip"]?.string ?? "" }
                // No address known to the node itself: the one we reached it at.
                primary = ClusterAddress(host: host.isEmpty ? node.host : host, port: Int(port))
                if info["health"]?.string == "online" { break }
            }
            guard let primary else { continue }
            guard slots.count % 2 == 0 else { throw bad("CLUSTER SHARDS", shard, "slot bounds in pairs") }
            var index = 0
            while index < slots.count {
                guard let first = slots[index].int64, let last = slots[index + 1].int64, 0 <= first, first <= last,
                    last < HashSlot.count
                else { throw bad("CLUSTER SHARDS", shard, "slot bounds between 0 and 16383") }
                ranges.append(SlotRange(first: Int(first), last: Int(last), primary: primary))
                index += 2
            }
        }
        return ranges
    }

    /// The primaries' slot ranges from a `CLUSTER SLOTS` reply: `[first, last, [host, port, id, …], replicas…]`.
    static func fromSlots(_ reply: RedisReply, answeredBy node: ClusterAddress) throws(RedisClientError) -> [SlotRange] {
        guard let entries = reply.array else { throw bad("CLUSTER SLOTS", reply, "an array of slot ranges") }
        var ranges: [SlotRange] = []
        for entry in entries {
            guard let items = entry.array, items.count >= 3, let first = items[0].int64, let last = items[1].int64,
                0 <= first, first <= last, last < HashSlot.count, let primary = items[2].array, primary.count >= 2,
                let port = primary[1].int64, (1...65535).contains(port)
            else { throw bad("CLUSTER SLOTS", entry, "[first slot, last slot, [host, port, …], …]") }
            var host = primary[0].string ?? ""
            if host.isEmpty || host == "?" { host = node.host }
            ranges.append(SlotRange(first: Int(first), last: Int(last), primary: ClusterAddress(host: host, port: Int(port))))
        }
        return ranges
    }

    /// A RESP2 map (an array of names and values) as a dictionary.
    private static func pairs(_ reply: RedisReply, _ command: String) throws(RedisClientError) -> [String: RedisReply] {
        guard let items = reply.array, items.count % 2 == 0 else { throw bad(command, reply, "a list of names and values") }
        var fields: [String: RedisReply] = [:]
        var index = 0
        while index < items.count {
            if let name = items[index].string { fields[name] = items[index + 1] }
            index += 2
        }
        return fields
    }

    private static func bad(_ command: String, _ reply: RedisReply, _ expected: String) -> RedisClientError {
        RedisClientError(.protocolError, message: "\(command) answered \(reply) where \(expected) was expected")
    }
}
