import Foundation
import Tollgate
import TollgateHTTP
import Yams

/// A key file: the registry for local use, holding SHA-256 hashes of keys, never keys. YAML or JSON.
///
/// ```yaml
/// keys:
///   - sha256: 5f1c…e9 (64 hex digits: the SHA-256 of the key, e.g. `printf %s "$KEY" | sha256sum`)
///     org: org_demo            # required: the organization that owns the key
///     plan: free               # required: a plan of the configuration
///     scopes: [messages:send]  # optional, default none: a list, or one space-separated string
///     expires_at: 1767225600   # optional: unix seconds, or an RFC 3339 time such as 2026-01-01T00:00:00Z
///     revoked: false           # optional, default false
///     label: demo free key     # optional: a note for people, ignored
/// ```
///
/// Rotation is two entries: the new key's hash next to the old one, both valid until the old one is
/// marked `revoked` or reaches its `expires_at`. Errors name the file, the line and the field, like the
/// configuration's, and never show a hash in full.
public struct KeyFile: Sendable {
    public let path: String
    /// Records by digest.
    public let records: [KeyDigest: KeyRecord]

    static let fields = ["sha256", "org", "plan", "scopes", "expires_at", "revoked", "label"]

    /// Reads and validates a key file; `plans` are the plan names keys may name.
    public static func load(contentsOfFile path: String, plans: Set<String>) throws(ConfigurationError) -> KeyFile {
        func failure(_ message: String) -> ConfigurationError {
            ConfigurationError(file: path, line: nil, path: "", message: message)
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw failure(
                FileManager.default.fileExists(atPath: path)
                    ? "cannot read the key file" : "no such file; expected a key file (keys.file in the configuration)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw failure("expected UTF-8 text, found bytes that are not UTF-8")
        }
        return try parse(text, file: path, plans: plans)
    }

    /// Validates key file text; `file` names it in errors.
    public static func parse(_ text: String, file: String, plans: Set<String>) throws(ConfigurationError) -> KeyFile {
        func fail(_ node: Node?, _ path: String, _ message: String) -> ConfigurationError {
            ConfigurationError(file: file, line: node?.mark?.line, path: path, message: message)
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw fail(nil, "", "invalid YAML or JSON: \(error)")
        }
        guard let root, case .mapping(let top) = root else {
            throw fail(root, "", "expected a mapping with a keys list")
        }
        var list: Node?
        for (key, value) in top {
            guard key.string == "keys" else {
                throw fail(key, key.string ?? "", "unknown field; a key file takes keys")
            }
            list = value
        }
        guard let list else { throw fail(root, "keys", "missing; expected a list of key entries") }
        if case .scalar(let scalar) = list, scalar.string.isEmpty || scalar.string == "null" || scalar.string == "~" {
            return KeyFile(path: file, records: [:])
        }
        guard case .sequence(let entries) = list else {
            throw fail(list, "keys", "expected a list of key entries (items starting with '-')")
        }
        var records: [KeyDigest: KeyRecord] = [:]
        var firstLine: [KeyDigest: Int] = [:]
        let planList = plans.sorted().joined(separator: ", ")
        for (index, entry) in entries.enumerated() {
            let at = "keys[\(index)]"
            guard case .mapping(let mapping) = entry else {
                throw fail(entry, at, "expected a key entry (a mapping with sha256, org, plan, …)")
            }
            var values: [String: Node] = [:]
            for (key, value) in mapping {
                guard let name = key.string, fields.contains(name) else {
                    throw fail(key, "\(at).\(key.string ?? "?")", "unknown field; a key entry takes \(fields.joined(separator: ", "))")
                }
                guard values[name] == nil else { throw fail(key, "\(at).\(name)", "appears twice") }
                values[name] = value
            }
            func text(_ name: String, required: Bool) throws(ConfigurationError) -> String? {
                guard let node = values[name] else {
                    if required { throw fail(entry, "\(at).\(name)", "missing required field") }
                    return nil
                }
                guard case .scalar(let scalar) = node, !scalar.string.isEmpty else {
                    throw fail(node, "\(at).\(name)", "expected a non-empty string")
                }
                return scalar.string
            }
            let hash = try text("sha256", required: true)!
            guard let digest = KeyDigest(hex: hash) else {
                throw fail(
                    values["sha256"], "\(at).sha256",
                    "expected 64 hex digits (the SHA-256 of the key, never the key itself), found \(hash.count) characters")
            }
            if let line = firstLine[digest] {
                throw fail(values["sha256"], "\(at).sha256", "the same hash as the entry at line \(line); each key may appear once")
            }
            firstLine[digest] = values["sha256"]?.mark?.line ?? 0
            let organization = try text("org", required: true)!
            guard (1...128).contains(organization.utf8.count) else {
                throw fail(values["org"], "\(at).org", "expected an organization id of 1-128 bytes")
            }
            let plan = try text("plan", required: true)!
            guard plans.contains(plan) else {
                throw fail(values["plan"], "\(at).plan", "unknown plan \"\(plan)\"; the configuration defines \(planList)")
            }
            var scopes: Set<String> = []
            if let node = values["scopes"] {
                switch node {
                case .sequence(let items):
                    for item in items {
                        guard let scope = item.string, !scope.isEmpty, !scope.contains(" ") else {
                            throw fail(item, "\(at).scopes", "expected scopes without spaces, such as messages:send")
                        }
                        scopes.insert(scope)
                    }
                case .scalar(let scalar):
                    scopes = Set(scalar.string.split(separator: " ").map(String.init))
                default:
                    throw fail(node, "\(at).scopes", "expected a list of scopes or one space-separated string")
                }
            }
            var expiresAt: Int64?
            if let raw = try text("expires_at", required: false) {
                guard let seconds = Self.unixSeconds(raw) else {
                    throw fail(
                        values["expires_at"], "\(at).expires_at",
                        "expected unix seconds (1767225600) or an RFC 3339 time (2026-01-01T00:00:00Z), found \"\(raw.prefix(40))\"")
                }
                expiresAt = seconds
            }
            var revoked = false
            if let raw = try text("revoked", required: false) {
                switch raw {
                case "true", "1": revoked = true
                case "false", "0": revoked = false
                default: throw fail(values["revoked"], "\(at).revoked", "expected true or false, found \"\(raw.prefix(40))\"")
                }
            }
            records[digest] = KeyRecord(
                organization: organization, plan: plan, scopes: scopes, expiresAt: expiresAt, revoked: revoked)
        }
        return KeyFile(path: file, records: records)
    }

    /// `1767225600` or `2026-01-01T00:00:00Z`.
    static func unixSeconds(_ text: String) -> Int64? {
        if let seconds = Int64(text) { return seconds }
        let formatter = ISO8601DateFormatter()
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970.rounded(.down)) }
        return nil
    }
}

/// Keys from a key file, looked up in memory.
///
/// The table is indexed by the first 8 bytes of the digest and the candidate's full digest is then
/// compared in constant time, so the lookup's timing depends on nothing but that prefix of a hash.
public final class FileKeySource: KeySource {
    public let file: KeyFile
    private let index: [UInt64: [(KeyDigest, KeyRecord)]]

    public init(file: KeyFile) {
        self.file = file
        var index: [UInt64: [(KeyDigest, KeyRecord)]] = [:]
        for (digest, record) in file.records {
            index[Self.prefix(digest), default: []].append((digest, record))
        }
        self.index = index
    }

    public func record(for digest: KeyDigest) async throws -> KeyRecord? {
        guard let candidates = index[Self.prefix(digest)] else { return nil }
        var found: KeyRecord?
        for (candidate, record) in candidates where ConstantTime.equals(candidate.bytes, digest.bytes) {
            found = record
        }
        return found
    }

    public func isReachable() async -> Bool { true }

    static func prefix(_ digest: KeyDigest) -> UInt64 {
        digest.bytes.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
}
