import Foundation
import Testing

@testable import TollgateSidecar

/// What `GET /v1/config` shows: secrets never.
@Suite struct ConfigurationSnapshotTests {
    @Test(arguments: [
        ("redis://:s3cret@redis:6379/0", "redis://:<redacted>@redis:6379/0"),
        ("rediss://tollgate:s3cret@redis.example.com:6380", "rediss://tollgate:<redacted>@redis.example.com:6380"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("http://127.0.0.1:3000/a@b", "http://127.0.0.1:3000/a@b"),
        ("plain text", "plain text"),
    ])
    func urlPasswordsAreRedacted(url: String, shown: String) {
        #expect(ConfigurationSnapshot.redactURL(url) == shown)
    }

    @Test func secretFieldsAreRedactedAtAnyDepth() throws {
        let text = """
            server: { admin_token: abcdefghijklmnopqrstuvwxyz, port: 8080 }
            store: { backend: redis, url: "redis://:pw@r:6379", tls: { key_file: client.key } }
            extra: [ { password: x }, { client_secret: y }, 1.5, true, null ]
            plans: { free: { limits: [ { name: burst, refill: { tokens: 7, per: 1s } } ] } }
            """
        let redacted = ConfigurationSnapshot(file: "tollgate.yaml", text: text, sha256: "").redacted
        let json = String(decoding: try JSONSerialization.data(withJSONObject: redacted, options: [.sortedKeys]), as: UTF8.self)
        #expect(!json.contains("abcdefghijklmnopqrstuvwxyz") && !json.contains(":pw@") && !json.contains("\"x\"") && !json.contains("\"y\""))
        #expect(json.contains("\"port\":8080") && json.contains("client.key") && json.contains("null"))
        #expect(json.contains("\"tokens\":7"))
    }
}
