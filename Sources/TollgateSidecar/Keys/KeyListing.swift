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
    /// `SCAN … MATCH tg:key:<prefix>*`, then each hash: a walk over the key space, for operators' requests
    /// only (never on a request's path).
    public func records(hexPrefix: String) async throws -> [(digest: KeyDigest, record: KeyRecord)] {
        if cluster != nil {
            // A cluster's SCAN is per primary, each with its own cursor: not offered yet.
            throw RedisClientError(
                .protocolError,
                message: "listing keys is not supported on a Redis Cluster yet; list them per primary with "
                    + "`redis-cli -c --scan --pattern '\(Self.keyPrefix)*'`")
        }
        var cursor = "0"
        var names: Set<String> = []
        repeat {
            let reply = try await send(["SCAN", cursor, "MATCH", Self.keyPrefix + hexPrefix + "*", "COUNT", "1000"], key: Self.keyPrefix)
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string, let batch = parts[1].array else {
                throw RedisClientError(.protocolError, message: "SCAN answered something other than a cursor and a list")
            }
            for item in batch { if let name = item.string { names.insert(name) } }
            cursor = next
        } while cursor != "0"
        var found: [(digest: KeyDigest, record: KeyRecord)] = []
        for name in names.sorted() {
            guard let digest = KeyDigest(hex: String(name.dropFirst(Self.keyPrefix.count))),
                let record = try await record(for: digest)
            else { continue }
            found.append((digest, record))
        }
        return found
    }
}
