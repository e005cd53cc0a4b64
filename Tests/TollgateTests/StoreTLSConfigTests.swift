import Testing

@testable import Tollgate

/// `store.tls` and `rediss://` URLs in the sidecar's configuration.
@Suite("Store TLS configuration")
struct StoreTLSConfigTests {
    typealias Bad = SidecarConfigTests.Bad

    @Test func everyTLSField() throws {
        let settings = try SidecarConfigTests.parse(
            """
            store:
              backend: redis
              url: rediss://tollgate:secret@redis.example.com:6380
              tls:
                ca_file: certs/redis-ca.pem
                cert_file: /etc/tollgate/client.pem
                key_file: /etc/tollgate/client.key
                server_name: redis.internal
            keys:
              source: redis
            """)
        #expect(settings.store.url == "rediss://tollgate:secret@redis.example.com:6380")
        #expect(
            settings.store.tls
                == StoreTLSSettings(
                    caFile: "certs/redis-ca.pem", certFile: "/etc/tollgate/client.pem", keyFile: "/etc/tollgate/client.key",
                    serverName: "redis.internal"))
        #expect(settings.keys.url == settings.store.url)
    }

    @Test func aRedissURLAloneTrustsTheSystemRoots() throws {
        let settings = try SidecarConfigTests.parse("store:\n  backend: redis\n  url: rediss://redis.example.com:6380\n")
        #expect(settings.store.url == "rediss://redis.example.com:6380")
        #expect(settings.store.tls == nil)
        #expect(try SidecarConfigTests.parse("store:\n  backend: redis\n  url: rediss://h\n  tls: {}\n").store.tls == StoreTLSSettings())
    }

    // The plans take lines 1-4; `store:` is line 5.
    @Test(arguments: [
        Bad("store:\n  backend: redis\n  url: redis://h\n  tls: { ca_file: ca.pem }\n", path: "store.tls",
            "expected a rediss:// store.url with tls", "found a redis:// URL", line: 8),
        Bad("store:\n  url: rediss://h\n", path: "store.url", "does not apply to the memory backend"),
        Bad("store:\n  tls: { ca_file: ca.pem }\n", path: "store.tls", "does not apply to the memory backend"),
        Bad("store:\n  backend: redis\n  url: rediss://h\n  tls: ca.pem\n", path: "store.tls", "expected a mapping of TLS settings"),
        Bad("store:\n  backend: redis\n  url: rediss://h\n  tls:\n    cafile: ca.pem\n", path: "store.tls.cafile",
            "unknown field \"cafile\"", "store.tls takes ca_file, cert_file, key_file and server_name", line: 9),
        Bad("store:\n  backend: redis\n  url: rediss://h\n  tls:\n    ca_file: ''\n", path: "store.tls.ca_file", "expected the path of a PEM file"),
        Bad("store:\n  backend: redis\n  url: rediss://h\n  tls:\n    cert_file: c.pem\n", path: "store.tls.key_file",
            "cert_file needs the certificate's private key in key_file", line: 9),
        Bad("store:\n  backend: redis\n  url: rediss://h\n  tls:\n    key_file: k.pem\n", path: "store.tls.cert_file",
            "key_file needs the client certificate in cert_file"),
        Bad("store:\n  backend: redis\n  url: rediss://h\n  tls:\n    server_name: 10.0.0.5\n", path: "store.tls.server_name",
            "not an address"),
        Bad("store:\n  backend: redis\n  url: rediss://h\n  tls:\n    server_name: redis/internal\n", path: "store.tls.server_name",
            "expected a DNS name such as redis.example.com"),
        Bad("store:\n  backend: redis\n  url: redis5://h\n", path: "store.url", "none of redis://, rediss:// or unix://"),
    ])
    func refused(_ bad: Bad) throws {
        try SidecarConfigTests().refused(bad)
    }

    /// The TLS errors name the scheme, never the URL: it may hold a password.
    @Test func theURLIsNeverEchoed() throws {
        let error = try #require(
            SidecarConfigTests.failure("store:\n  backend: redis\n  url: redis://:hunter2@h\n  tls: { server_name: r.example }\n"))
        #expect(error.path == "store.tls")
        #expect(!error.description.contains("hunter2"))
    }
}
