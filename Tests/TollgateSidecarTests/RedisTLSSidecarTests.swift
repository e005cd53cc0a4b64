import Foundation
import Testing
import Tollgate
import TollgateSidecar
import TollgateTestSupport

extension EndToEnd {
    /// The sidecar's Redis store over TLS, configured by `store.tls`.
    @Suite struct RedisTLSSidecarTests {
        @Test func checksOverMutualTLS() async throws {
            let authority = try await TestCertificateAuthority.make()
            defer { authority.remove() }
            try await withRedisServer(tls: authority, requireClientCertificate: true) { redis in
                let directory = try TestDirectory()
                defer { directory.remove() }
                // A path relative to the configuration file.
                _ = try directory.write("redis-ca.pem", String(contentsOfFile: authority.caFile, encoding: .utf8))
                let store = """
                    store: { backend: redis, url: "rediss://localhost:\(redis.port)", tls: { ca_file: redis-ca.pem, \
                    cert_file: "\(authority.clientCertificateFile)", key_file: "\(authority.clientKeyFile)" } }
                    """
                try await withSidecar(configuration(upstream: nil, store: store), directory: directory) { sidecar in
                    try await withHTTPClient { client in
                        var statuses: [Int] = []
                        for _ in 0..<4 {
                            statuses.append(try await client.send(.POST, sidecar.base + "/api/v1/messages/send", key: .sender).status)
                        }
                        // The basic plan's burst of 3, counted in Redis.
                        #expect(statuses == [200, 200, 200, 429])
                    }
                }
            }
        }

        @Test func aMissingTLSFileIsNamedWithItsField() throws {
            let directory = try TestDirectory()
            defer { directory.remove() }
            _ = try directory.write("keys.yaml", keyFile(TestKey.all))
            let store = "store: { backend: redis, url: \"rediss://:pw-not-shown@localhost:6380\", tls: { ca_file: missing-ca.pem } }"
            let path = try directory.write("tollgate.yaml", configuration(store: store))
            do {
                _ = try Sidecar(configurationFile: path, logger: quietLogger)
                Issue.record("expected the missing CA file to be refused")
            } catch {
                #expect(error.path == "store.tls.ca_file")
                #expect(error.message.contains(directory.url.appendingPathComponent("missing-ca.pem").path) && error.message.contains("does not exist"))
                #expect(!error.description.contains("pw-not-shown"))
            }
        }
    }
}
