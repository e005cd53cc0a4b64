import Foundation
import Logging
import Tollgate
import TollgateRedis
import Yams

/// A new API key: `wz_live_` or `wz_test_`, then 43 characters of base64url (32 bytes from the
/// system's cryptographic random source: `getrandom` on Linux). Only its digest is ever stored.
public struct NewKey: Sendable {
    /// The key itself: shown once, to whoever asked for it, and never stored.
    public let text: String
    public var digest: KeyDigest { KeyDigest(ofKeyText: text) }

    public init(live: Bool) {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let encoded = Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        text = (live ? "wz_live_" : "wz_test_") + encoded
    }
}

/// Where `tollgate keys` writes records: a key file or Redis (`tg:key:<sha256>`, see `RedisKeySource`).
/// Records only, by digest: a key is never written anywhere.
public protocol KeyRecordStore: Sendable {
    /// Every record, by digest.
    func all() async throws -> [(digest: KeyDigest, record: KeyRecord)]
    /// Writes (adds or replaces) records.
    func write(_ records: [(digest: KeyDigest, record: KeyRecord)]) async throws
}

/// A key file rewritten whole on each change: entries in their order, each with its fields (a `label`
/// kept), comments not kept; the new text is validated like the sidecar validates it, then put in place
/// by a rename, so that a reader (or the file watcher) sees the old file or the new one, never half.
public struct KeyFileStore: KeyRecordStore {
    public let path: String
    public let plans: Set<String>

    public init(path: String, plans: Set<String>) {
        self.path = path
        self.plans = plans
    }

    /// The entries in file order: digest hex, record and label.
    func entries() throws(ConfigurationError) -> [(hex: String, record: KeyRecord, label: String?)] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        let file = try KeyFile.load(contentsOfFile: path, plans: plans)
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        // Order and labels from the document; records from the validated file.
        var ordered: [(hex: String, record: KeyRecord, label: String?)] = []
        if case .mapping(let top)? = try? Yams.compose(yaml: text), case .sequence(let list)? = top["keys"] {
            for entry in list {
                guard case .mapping(let fields) = entry, let hex = fields["sha256"]?.string, let digest = KeyDigest(hex: hex),
                    let record = file.records[digest]
                else { continue }
                ordered.append((digest.hex, record, fields["label"]?.string))
            }
        }
        return ordered
    }

    public func all() async throws -> [(digest: KeyDigest, record: KeyRecord)] {
        try entries().compactMap { entry in KeyDigest(hex: entry.hex).map { ($0, entry.record) } }
    }

    public func write(_ records: [(digest: KeyDigest, record: KeyRecord)]) async throws {
        var entries = try entries()
        for (digest, record) in records {
            if let index = entries.firstIndex(where: { $0.hex == digest.hex }) {
                entries[index].record = record
            } else {
                entries.append((digest.hex, record, nil))
            }
        }
        let text = Self.render(entries)
        _ = try KeyFile.parse(text, file: path, plans: plans)
        let temporary = path + ".tmp-\(ProcessInfo.processInfo.processIdentifier)"
        try text.write(toFile: temporary, atomically: false, encoding: .utf8)
        guard rename(temporary, path) == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw ConfigurationError(file: path, line: nil, path: "", message: "could not replace the key file (errno \(errno))")
        }
    }

    static func render(_ entries: [(hex: String, record: KeyRecord, label: String?)]) -> String {
        func quoted(_ text: String) -> String { CounterAdmin.json([text]).dropFirst().dropLast().description }
        var out = "# Tollgate key file: SHA-256 digests of API keys, never keys. Written by `tollgate keys`.\nkeys:\n"
        if entries.isEmpty { return out + "  []\n" }
        for entry in entries {
            out += "  - sha256: \(entry.hex)\n"
            out += "    org: \(quoted(entry.record.organization))\n"
            out += "    plan: \(quoted(entry.record.plan))\n"
            out += "    scopes: [\(entry.record.scopes.sorted().map(quoted).joined(separator: ", "))]\n"
            if let expiresAt = entry.record.expiresAt { out += "    expires_at: \(expiresAt)\n" }
            if entry.record.revoked { out += "    revoked: true\n" }
            if let label = entry.label { out += "    label: \(quoted(label))\n" }
        }
        return out
    }
}

/// Key records in Redis hashes, as `RedisKeySource` reads them.
public struct RedisKeyRecordStore: KeyRecordStore {
    public let source: RedisKeySource

    public init(client: RedisClient, logger: Logger) {
        source = RedisKeySource(client: client, logger: logger)
    }

    /// Records on a Redis Cluster: each hash on the primary of its key's slot.
    public init(cluster: RedisClusterClient, logger: Logger) {
        source = RedisKeySource(cluster: cluster, logger: logger)
    }

    public func all() async throws -> [(digest: KeyDigest, record: KeyRecord)] {
        try await source.records(hexPrefix: "")
    }

    public func write(_ records: [(digest: KeyDigest, record: KeyRecord)]) async throws {
        for (digest, record) in records {
            var command = [
                "HSET", RedisKeySource.redisKey(digest), "org", record.organization, "plan", record.plan,
                "scopes", record.scopes.sorted().joined(separator: " "), "revoked", record.revoked ? "1" : "0",
                "expires_at", record.expiresAt.map(String.init) ?? "",
            ]
            if record.expiresAt == nil { command.removeLast(2) }
            let key = RedisKeySource.redisKey(digest)
            let reply = try await source.send(command, key: key)
            if case .error(let message) = reply { throw RedisClientError(.serverError, message: message) }
            if record.expiresAt == nil {
                _ = try await source.send(["HDEL", key, "expires_at"], key: key)
            }
        }
    }
}
