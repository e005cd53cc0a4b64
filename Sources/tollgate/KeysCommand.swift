import ArgumentParser
import Foundation
import Tollgate
import TollgateSidecar

/// `tollgate keys create|revoke|rotate|list`: API keys in the key file or in Redis. A key is printed
/// once, when it is made; only its SHA-256 is stored.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Create, revoke, rotate and list API keys (only their SHA-256 is stored).",
        discussion: """
            Keys go to the key file of the configuration's keys section (or --key-file), or to Redis \
            (tg:key:<sha256> hashes) when the configuration keeps keys there (or with --redis). The sidecar \
            sees a change within keys.cache_ttl (Redis), or when it reloads the key file (it watches it).
            """,
        subcommands: [Create.self, Revoke.self, Rotate.self, List.self]
    )

    /// Prints one key record (never a key) as a table row or JSON.
    struct Row: Codable {
        var keyId: String
        var sha256Prefix: String
        var org: String
        var plan: String
        var scopes: [String]
        var expiresAt: Int64?
        var revoked: Bool

        init(_ digest: KeyDigest, _ record: KeyRecord) {
            keyId = digest.keyID
            sha256Prefix = digest.fingerprint
            org = record.organization
            plan = record.plan
            scopes = record.scopes.sorted()
            expiresAt = record.expiresAt
            revoked = record.revoked
        }

        var cells: [String] {
            [keyId, org, plan, scopes.joined(separator: " "), CommandLineTime.render(expiresAt), revoked ? "yes" : "no"]
        }
        static let header = ["KEY ID", "ORG", "PLAN", "SCOPES", "EXPIRES", "REVOKED"]
    }

    /// The one record whose digest starts with `id`.
    static func find(_ id: String, in store: any KeyRecordStore) async throws -> (digest: KeyDigest, record: KeyRecord) {
        let prefix = id.lowercased()
        guard prefix.count >= 8, prefix.allSatisfy(\.isHexDigit) else {
            throw ValidationError("expected a key id (at least 8 hex digits of the key's SHA-256), never a key")
        }
        let matches = try await store.all().filter { $0.digest.hex.hasPrefix(prefix) }
        guard matches.count == 1 else {
            throw ValidationError(matches.isEmpty ? "no key with id \(prefix)" : "\(matches.count) keys have ids starting with \(prefix); give more digits")
        }
        return matches[0]
    }

    /// Makes a key, stores its record, prints it once.
    static func issue(
        _ record: KeyRecord, live: Bool, into store: any KeyRecordStore, format: OutputFormat, extra: [String: String] = [:]
    ) async throws {
        let key = NewKey(live: live)
        try await store.write([(key.digest, record)])
        switch format {
        case .json:
            var fields: [String: Any] = [
                "key": key.text, "key_id": key.digest.keyID, "sha256": key.digest.hex, "org": record.organization,
                "plan": record.plan, "scopes": record.scopes.sorted(),
            ]
            if let expiresAt = record.expiresAt { fields["expires_at"] = expiresAt }
            for (name, value) in extra { fields[name] = value }
            let data = try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        case .table:
            print(key.text)
            print(TextTable.render(Row.header, [Row(key.digest, record).cells]))
            for (name, value) in extra.sorted(by: { $0.key < $1.key }) { print("\(name): \(value)") }
            print("The key is shown once and stored nowhere: only its SHA-256 is kept.")
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a key, store its SHA-256 and print the key once.")

        @OptionGroup var options: OperatorOptions
        @Option(help: "The organization that owns the key.") var org: String
        @Option(help: "A plan of the configuration.") var plan: String
        @Option(parsing: .upToNextOption, help: "Scopes the key holds (messages:send messages:read …).") var scopes: [String] = []
        @Option(help: ArgumentHelp("When the key stops working: \(CommandLineTime.help).", valueName: "time")) var expires: String?
        @Flag(help: "A wz_test_ key instead of wz_live_.") var test = false

        func run() async throws {
            try await options.withKeyStore { store, configuration in
                guard configuration.plan(named: plan) != nil else {
                    throw ValidationError("--plan: unknown plan \"\(plan)\"; the configuration defines \(configuration.plans.map(\.name).joined(separator: ", "))")
                }
                guard (1...128).contains(org.utf8.count) else { throw ValidationError("--org: expected an organization id of 1-128 bytes") }
                var expiresAt: Int64?
                if let expires {
                    guard let time = CommandLineTime.parse(expires) else { throw ValidationError("--expires: expected \(CommandLineTime.help)") }
                    expiresAt = time
                }
                let scopes = Set(scopes.flatMap { $0.split(separator: " ").map(String.init) })
                let record = KeyRecord(organization: org, plan: plan, scopes: scopes, expiresAt: expiresAt)
                try await KeysCommand.issue(record, live: !test, into: store, format: options.format)
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key: refused from the next lookup on.")

        @OptionGroup var options: OperatorOptions
        @Argument(help: "The key's id (16 hex digits, as `keys list` shows).") var keyID: String

        func run() async throws {
            try await options.withKeyStore { store, _ in
                let found = try await KeysCommand.find(keyID, in: store)
                let digest = found.digest
                var record = found.record
                record.revoked = true
                try await store.write([(digest, record)])
                print(options.format == .json ? CounterAdmin.json(Row(digest, record)) : TextTable.render(Row.header, [Row(digest, record).cells]))
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new key with the same organization, plan, scopes and expiry; the old one works until --old-valid-until.")

        @OptionGroup var options: OperatorOptions
        @Argument(help: "The old key's id.") var keyID: String
        @Option(help: ArgumentHelp("When the old key stops working: \(CommandLineTime.help).", valueName: "time"))
        var oldValidUntil: String = "24h"
        @Flag(help: "A wz_test_ key instead of wz_live_.") var test = false

        func run() async throws {
            guard let until = CommandLineTime.parse(oldValidUntil) else {
                throw ValidationError("--old-valid-until: expected \(CommandLineTime.help)")
            }
            try await options.withKeyStore { store, _ in
                let found = try await KeysCommand.find(keyID, in: store)
                let digest = found.digest
                var old = found.record
                guard !old.revoked else { throw ValidationError("key \(digest.keyID) is revoked; create a new key instead") }
                let new = KeyRecord(organization: old.organization, plan: old.plan, scopes: old.scopes, expiresAt: old.expiresAt)
                old.expiresAt = min(old.expiresAt ?? until, until)
                try await store.write([(digest, old)])
                try await KeysCommand.issue(
                    new, live: !test, into: store, format: options.format,
                    extra: ["replaces": digest.keyID, "old_valid_until": CommandLineTime.render(old.expiresAt)])
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys: ids, organization, plan, scopes, expiry (never a key).")

        @OptionGroup var options: OperatorOptions
        @Option(help: "Only this organization's keys.") var org: String?

        func run() async throws {
            try await options.withKeyStore { store, _ in
                let rows = try await store.all().filter { org == nil || $0.record.organization == org }.map { Row($0.digest, $0.record) }
                print(options.format == .json ? CounterAdmin.json(rows) : TextTable.render(Row.header, rows.map(\.cells)))
            }
        }
    }
}
