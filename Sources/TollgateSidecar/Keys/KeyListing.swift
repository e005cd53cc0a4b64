import TollgateRedis

/// A key source that can enumerate its records: the admin API and the CLI find keys by id and by
/// organization with it. Records come with their digests, never with keys.
public protocol KeyListing: KeySource {
    /// Every record whose digest, in lowercase hex, starts with `hexPrefix` (every record for "").
    func records(hexPrefix: String) async throws -> [(digest: KeyDigest, record: KeyRecord)]
}

extension FileKeySource: KeyListing {
    public func records(hexPrefix: String) async throws -> [(digest: KeyDigest, record: KeyRecord)] {
        file.records.filter { $0.key.hex.hasPrefix(hexPrefix) }.map { (digest: $0.key, record: $0.value) }.sorted { $0.digest.hex < $1.digest.hex }
    }
}

extension RedisKeySource: KeyListing {
    /// `SCAN … MATCH tg:key:<prefix>*` (on a cluster, on every primary, each with its own cursor), then
    /// each key's `TYPE` and, for a hash, its fields: a walk over the key space, for operators' requests
    /// only (never on a request's path). A key of another type under the prefix is not a record: skipped,
    /// and logged by its digest's fingerprint. On a cluster whose slots move during the walk, a key that
    /// moves between two primaries' scans can be missed; list again after a resharding.
    public func records(hexPrefix: String) async throws -> [(digest: KeyDigest, record: KeyRecord)] {
        let pattern = Self.keyPrefix + hexPrefix + "*"
        var names: Set<String> = []
        if let cluster {
            for primary in cluster.primaryAddresses {
                try await Self.scan(pattern, into: &names) { (command) async throws(RedisClientError) in
                    try await cluster.send(command.map { RedisArgument($0) }, toPrimary: primary)
                }
            }
        } else {
            try await Self.scan(pattern, into: &names) { (command) async throws(RedisClientError) in
                try await self.send(command, key: Self.keyPrefix)
            }
        }
        var found: [(digest: KeyDigest, record: KeyRecord)] = []
        for name in names.sorted() {
            guard let digest = KeyDigest(hex: String(name.dropFirst(Self.keyPrefix.count))) else { continue }
            let type = try await send(["TYPE", name], key: name)
            guard type.string == "hash" else {
                if type.string != "none" {  // "none": deleted since the scan
                    logger.warning(
                        "key registry entry that is not a hash; not listed",
                        metadata: ["key": "\(digest.fingerprint)", "type": "\(type.string ?? "\(type)")"])
                }
                continue
            }
            guard let record = try await record(for: digest) else { continue }
            found.append((digest, record))
        }
        return found
    }

    /// Every name that `SCAN 0 MATCH pattern` and its cursors return from one server, `send` sending each.
    private static func scan(
        _ pattern: String, into names: inout Set<String>, send: ([String]) async throws(RedisClientError) -> RedisReply
    ) async throws(RedisClientError) {
        var cursor = "0"
        repeat {
            let reply = try await send(["SCAN", cursor, "MATCH", pattern, "COUNT", "1000"])
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string, let batch = parts[1].array else {
                throw RedisClientError(.protocolError, message: "SCAN answered something other than a cursor and a list")
            }
            for item in batch { if let name = item.string { names.insert(name) } }
            cursor = next
        } while cursor != "0"
    }
}
