import Foundation
import Logging
import Synchronization
import Testing
import Tollgate
import TollgateHTTP

@testable import TollgateSidecar

/// The key registry's cache and the key file, on clocks the tests move by hand.
@Suite struct KeyRegistryTests {
    /// A key source in memory that counts lookups and can fail.
    final class MemorySource: KeySource {
        let records = Mutex<[KeyDigest: KeyRecord]>([:])
        let lookups = Atomic<Int>(0)
        let down = Atomic<Bool>(false)
        struct Down: Error {}

        func record(for digest: KeyDigest) async throws -> KeyRecord? {
            lookups.add(1, ordering: .relaxed)
            if down.load(ordering: .relaxed) { throw Down() }
            return records.withLock { $0[digest] }
        }

        func isReachable() async -> Bool { !down.load(ordering: .relaxed) }

        func set(_ key: String, _ record: KeyRecord?) {
            records.withLock { $0[KeyDigest(ofKeyText: key)] = record }
        }
    }

    /// A monotonic instant and a wall clock that move only when told.
    final class Clocks: Sendable {
        let start = ContinuousClock.now
        let offset = Atomic<Int64>(0)  // milliseconds
        let unix = Atomic<Int64>(1_800_000_000)

        var instant: ContinuousClock.Instant { start + .milliseconds(offset.load(ordering: .relaxed)) }
        func advance(milliseconds: Int64) {
            offset.add(milliseconds, ordering: .relaxed)
            unix.add(milliseconds / 1_000, ordering: .relaxed)
        }
    }

    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    func registry(_ source: MemorySource, _ clocks: Clocks, capacity: Int = 100) -> KeyRegistry {
        KeyRegistry(
            source: source,
            policy: .init(ttl: .seconds(5), negativeTTL: .seconds(2), capacity: capacity, staleIfError: .seconds(60)),
            logger: Self.logger, wallClock: { clocks.unix.load(ordering: .relaxed) }, now: { clocks.instant })
    }

    func status(_ registry: KeyRegistry, _ key: String) async throws -> String {
        switch try await registry.resolve(APIKey(key)!).status {
        case .active(let identity): "active \(identity.organization)"
        case .unknown: "unknown"
        case .revoked: "revoked"
        case .expired: "expired"
        }
    }

    @Test func revokedKeyStopsWithinTheTTL() async throws {
        let source = MemorySource()
        let clocks = Clocks()
        let keys = registry(source, clocks)
        source.set("wz_a", KeyRecord(organization: "org_1", plan: "free", scopes: []))
        #expect(try await status(keys, "wz_a") == "active org_1")
        source.set("wz_a", KeyRecord(organization: "org_1", plan: "free", scopes: [], revoked: true))
        clocks.advance(milliseconds: 4_999)
        #expect(try await status(keys, "wz_a") == "active org_1")  // cached
        clocks.advance(milliseconds: 1)
        #expect(try await status(keys, "wz_a") == "revoked")  // the TTL is up
        #expect(source.lookups.load(ordering: .relaxed) == 2)
    }

    @Test func unknownKeysAreCachedNegatively() async throws {
        let source = MemorySource()
        let clocks = Clocks()
        let keys = registry(source, clocks)
        for _ in 0..<100 { #expect(try await status(keys, "wz_nobody") == "unknown") }
        #expect(source.lookups.load(ordering: .relaxed) == 1)
        source.set("wz_nobody", KeyRecord(organization: "org_2", plan: "free", scopes: []))
        clocks.advance(milliseconds: 1_999)
        #expect(try await status(keys, "wz_nobody") == "unknown")
        clocks.advance(milliseconds: 1)
        #expect(try await status(keys, "wz_nobody") == "active org_2")
    }

    @Test func expiryIsCheckedOnEveryRequest() async throws {
        let source = MemorySource()
        let clocks = Clocks()
        let keys = registry(source, clocks)
        source.set("wz_b", KeyRecord(organization: "org_1", plan: "free", scopes: [], expiresAt: 1_800_000_002))
        #expect(try await status(keys, "wz_b") == "active org_1")
        clocks.advance(milliseconds: 2_000)  // still cached, but past its expiry
        #expect(try await status(keys, "wz_b") == "expired")
        #expect(source.lookups.load(ordering: .relaxed) == 1)
    }

    @Test func cacheIsBounded() async throws {
        let source = MemorySource()
        let keys = registry(source, Clocks(), capacity: 10)
        for index in 0..<25 { _ = try await status(keys, "wz_k\(index)") }
        #expect(keys.cachedCount == 10)
        // The oldest went first: the newest are still cached.
        let before = source.lookups.load(ordering: .relaxed)
        _ = try await status(keys, "wz_k24")
        #expect(source.lookups.load(ordering: .relaxed) == before)
        _ = try await status(keys, "wz_k0")
        #expect(source.lookups.load(ordering: .relaxed) == before + 1)
    }

    @Test func staleIfError() async throws {
        let source = MemorySource()
        let clocks = Clocks()
        let keys = registry(source, clocks)
        source.set("wz_c", KeyRecord(organization: "org_1", plan: "free", scopes: []))
        _ = try await status(keys, "wz_c")
        source.down.store(true, ordering: .relaxed)
        clocks.advance(milliseconds: 30_000)
        #expect(try await status(keys, "wz_c") == "active org_1")  // found 30 s ago, registry down
        await #expect(throws: MemorySource.Down.self) { _ = try await status(keys, "wz_never_seen") }
        clocks.advance(milliseconds: 30_001)
        await #expect(throws: MemorySource.Down.self) { _ = try await status(keys, "wz_c") }
    }

    @Test func digestsAndFingerprints() throws {
        let digest = KeyDigest(ofKeyText: "wz_test_demo_free_4f7b2c9e1d3a")
        #expect(digest.hex == "669510a85d8cb3c18b88bbca1cd68ac860dd58bb93fb6d2f5bf20c48584affd4")
        #expect(digest.fingerprint == "669510a8" && digest.keyID == "669510a85d8cb3c1")
        #expect("\(digest)" == "sha256:669510a8…")
        #expect(KeyDigest(hex: digest.hex.uppercased()) == digest)
        #expect(KeyDigest(hex: "xyz") == nil)
    }

    @Test func redisRecordsFailClosed() {
        let digest = KeyDigest(ofKeyText: "wz_d")
        #expect(RedisKeySource.record(from: ["org": "o", "plan": "p", "scopes": "a b", "revoked": "0"], digest: digest, logger: Self.logger)
            == KeyRecord(organization: "o", plan: "p", scopes: ["a", "b"]))
        #expect(RedisKeySource.record(from: ["org": "o", "plan": "p", "revoked": "yes"], digest: digest, logger: Self.logger)?.revoked == true)
        #expect(RedisKeySource.record(from: ["org": "o"], digest: digest, logger: Self.logger) == nil)
        #expect(RedisKeySource.record(from: ["org": "o", "plan": "p", "expires_at": "soon"], digest: digest, logger: Self.logger) == nil)
        #expect(RedisKeySource.record(from: ["org": "o", "plan": "p", "expires_at": "1767225600"], digest: digest, logger: Self.logger)?.expiresAt == 1_767_225_600)
    }

    @Test func shippedDemoKeyFile() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Config/keys.yaml")
        let file = try KeyFile.load(contentsOfFile: url.path, plans: ["free", "starter", "pro", "enterprise"])
        #expect(file.records.count == 6)
        let text = try String(contentsOf: url, encoding: .utf8)
        // The documented demo keys are the ones hashed in the file, and no plaintext key is in an entry.
        for (key, plan) in [
            ("wz_test_demo_free_4f7b2c9e1d3a", "free"), ("wz_test_demo_pro_8a1e5d7c3b9f", "pro"),
            ("wz_test_demo_readonly_5b9d2e8a4c1f", "free"), ("wz_test_demo_revoked_2c6e9a4f1b8d", "free"),
            ("wz_test_demo_expired_7d3b1f5a9c2e", "free"), ("wz_test_acme_pro_3e8b6d2a9f4c", "pro"),
        ] {
            #expect(file.records[KeyDigest(ofKeyText: key)]?.plan == plan, "\(key)")
        }
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            #expect(!line.contains("wz_"), "plaintext key outside a comment: \(line)")
        }
        #expect(file.records[KeyDigest(ofKeyText: "wz_test_demo_revoked_2c6e9a4f1b8d")]?.revoked == true)
        #expect(file.records[KeyDigest(ofKeyText: "wz_test_demo_expired_7d3b1f5a9c2e")]?.expiresAt == 1_577_836_800)
        #expect(file.records[KeyDigest(ofKeyText: "wz_test_demo_readonly_5b9d2e8a4c1f")]?.scopes == ["messages:read"])
    }

    @Test(arguments: [
        ("keys: x\n", "keys", "expected a list"),
        ("other: []\n", "other", "unknown field"),
        ("keys:\n  - sha256: abc\n    org: o\n    plan: free\n", "keys[0].sha256", "64 hex digits"),
        ("keys:\n  - sha256: \(String(repeating: "a", count: 64))\n    plan: free\n", "keys[0].org", "missing required field"),
        ("keys:\n  - sha256: \(String(repeating: "a", count: 64))\n    org: o\n    plan: gold\n", "keys[0].plan", "unknown plan \"gold\""),
        ("keys:\n  - sha256: \(String(repeating: "a", count: 64))\n    org: o\n    plan: free\n    expires_at: tomorrow\n", "keys[0].expires_at", "unix seconds"),
        ("keys:\n  - sha256: \(String(repeating: "a", count: 64))\n    org: o\n    plan: free\n    key: wz_x\n", "keys[0].key", "unknown field"),
        (
            "keys:\n  - { sha256: \(String(repeating: "a", count: 64)), org: o, plan: free }\n  - { sha256: \(String(repeating: "A", count: 64)), org: o, plan: free }\n",
            "keys[1].sha256", "the same hash"
        ),
    ])
    func badKeyFiles(text: String, path: String, message: String) {
        do {
            _ = try KeyFile.parse(text, file: "keys.yaml", plans: ["free"])
            Issue.record("\(text) should be refused")
        } catch {
            #expect(error.path == path, "\(error)")
            #expect(error.message.contains(message), "\(error)")
        }
    }
}
