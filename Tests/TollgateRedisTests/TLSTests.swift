import Foundation
import Testing
import Tollgate
import TollgateTestSupport

@testable import TollgateRedis

/// Against a real `redis-server` serving TLS only (`--tls-port`), with a CA, server and client
/// certificates made by `openssl` for each test.
@Suite(
    .enabled(
        if: RedisTestServer.serverSupportsTLS,
        "SKIPPED: TOLLGATE_REDIS_SERVER_TLS=no says the server under test (TOLLGATE_REDIS_SERVER) was built without TLS"),
    .serialized) struct TLSTests {
    /// The password given to refused connections: no error may repeat it.
    static let password = "tls-Secret-pw"

    /// Runs `body` with a fresh certificate authority and a TLS server it certified.
    func withTLSServer(
        requireClientCertificate: Bool = false,
        arguments: [String] = [],
        _ body: (RedisTestServer, TestCertificateAuthority) async throws -> Void
    ) async throws {
        let authority = try await TestCertificateAuthority.make()
        defer { authority.remove() }
        try await withRedisServer(tls: authority, requireClientCertificate: requireClientCertificate, arguments: arguments) {
            server in try await body(server, authority)
        }
    }

    /// The error of `body`, which must fail; it never repeats the password.
    func failure(_ what: String, _ body: () async throws(RedisClientError) -> Void) async throws -> RedisClientError {
        do {
            try await body()
        } catch {
            #expect(!error.description.contains(Self.password))
            return error
        }
        throw TestSetupError(description: "\(what) was expected to fail")
    }

    /// The error of a connection attempt that must fail.
    func refusal(_ configuration: RedisConfiguration) async throws -> RedisClientError {
        try await failure("connecting to \(configuration.endpointDescription)") { () async throws(RedisClientError) in
            let connection = try await RedisConnection.connect(configuration: configuration, logger: quietLogger)
            await connection.close()
        }
    }

    @Test func commandsAndScriptsOverTLS() async throws {
        try await withTLSServer(arguments: ["--requirepass", Self.password]) { server, authority in
            var configuration = server.configuration
            configuration.password = Self.password
            try await withClient(configuration) { client in
                #expect(try await client.send(["SET", "tg:{org}:k", "over-tls"]) == .status("OK"))
                #expect(try await client.send(["GET", "tg:{org}:k"]).string == "over-tls")
                let sha = try await client.scriptLoad("return redis.call('INCR', KEYS[1])")
                #expect(try await client.evalSHA(sha, keys: ["tg:{org}:n"]) == .integer(1))
            }

            // The URL form: the host name is the name verified (and sent as SNI).
            var fromURL = try RedisConfiguration(url: "rediss://:\(Self.password)@localhost:\(server.port)")
            #expect(fromURL.tls == RedisTLSConfiguration())
            fromURL.tls?.caFile = authority.caFile
            fromURL.connections = 1
            try await withClient(fromURL) { client in
                let reply = try await client.send(["PING"])
                #expect(reply == .status("PONG"))
            }
        }
    }

    /// The ACL user README.md documents, with `password`.
    static func readmeACL(password: String) throws -> [String] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let line = try #require(readme.split(separator: "\n").first { $0.hasPrefix("ACL SETUSER tollgate ") })
        return line.split(separator: " ").map { $0 == ">CHANGE-ME" ? ">" + password : String($0) }
    }

    /// Checks over TLS as the ACL user README.md documents: every algorithm's script runs with the
    /// commands it grants, and nothing outside `tg:*` is reachable.
    @Test func aLimitStoreChecksOverTLSWithTheDocumentedACL() async throws {
        try await withTLSServer { server, _ in
            let admin = try await RedisConnection.connect(configuration: server.configuration, logger: quietLogger)
            let acl = try Self.readmeACL(password: Self.password)
            #expect(try await admin.send(acl) == .status("OK"))
            await admin.close()

            var configuration = server.configuration
            configuration.username = "tollgate"
            configuration.password = Self.password
            try await withClient(configuration) { client in
                let store = RedisLimitStore(client: client, configuration: .init(failurePolicy: .deny, denyCache: false), logger: quietLogger)
                let bucket = try Plan(
                    name: "tls-\(UInt32.random(in: 0...UInt32.max))", timeZone: TimeZone(identifier: "UTC")!,
                    limits: [Limit(name: "burst", algorithm: .tokenBucket(capacity: 2, refillTokens: 1, refillPeriod: 60 * second))])
                let partition = Partition(organization: "org_tls", apiKey: "k1")
                var decisions: [Decision] = []
                for _ in 0..<3 { decisions.append(try await store.check(bucket, partition: partition, cost: 1)) }
                #expect(decisions.map(\.origin) == [.store, .store, .store])
                #expect(decisions.map(\.isAllowed) == [true, true, false])
                #expect(decisions[2].denial == .limited)
                #expect((decisions[2].retryAfterMicroseconds ?? 0) > 0)

                let mixed = try everyAlgorithmPlan(name: "tls-mixed")
                for cost in [1, 3, 0, 2, 5] {
                    let decision = try await store.check(mixed, partition: partition, cost: cost)
                    #expect(decision.origin == .store, "cost \(cost): \(decision)")
                }
                #expect(try await client.send(["HGETALL", "tg:key:0123"]) == .array([]))
                let outside = await outcome { () async throws(RedisClientError) in try await client.send(["GET", "other"]) }
                if case .failure(let error) = outside {
                    #expect(error.serverErrorPrefix == "NOPERM")
                } else {
                    Issue.record("expected NOPERM outside tg:*")
                }
            }
        }
    }

    @Test func aWrongCAIsRefused() async throws {
        try await withTLSServer { server, authority in
            var configuration = server.configuration
            configuration.password = Self.password
            configuration.tls?.caFile = authority.otherCAFile
            let error = try await refusal(configuration)
            #expect(error.code == .connectFailed)
            #expect(error.message.contains("the server's certificate is not trusted"))
            #expect(error.message.contains(authority.otherCAFile))

            // The system's roots do not know the test CA either.
            configuration.tls?.caFile = nil
            let system = try await refusal(configuration)
            #expect(system.message.contains("not signed by the system's trusted roots"))

            // A running client reports the same reason while it keeps retrying.
            configuration.connections = 1
            let client = try RedisClient(configuration: configuration, logger: quietLogger)
            let runner = Task { await client.run() }
            defer { runner.cancel() }
            let notConnected = try await failure("waiting for the client") { () async throws(RedisClientError) in
                try await client.waitUntilConnected(timeout: .milliseconds(500))
            }
            #expect(notConnected.code == .notConnected)
            #expect(notConnected.description.contains("not trusted"))
        }
    }

    @Test func aWrongHostNameIsRefused() async throws {
        try await withTLSServer { server, _ in
            var configuration = server.configuration
            configuration.tls?.serverName = "redis.example.com"
            let error = try await refusal(configuration)
            #expect(error.code == .connectFailed)
            #expect(error.message.contains("not valid for the name redis.example.com"))

            // By address, without a name: the certificate names no address.
            configuration.tls?.serverName = nil
            let byAddress = try await refusal(configuration)
            #expect(byAddress.message.contains("not valid for the address 127.0.0.1:\(server.port)"))
        }
    }

    @Test func mutualTLS() async throws {
        try await withTLSServer(requireClientCertificate: true) { server, authority in
            var configuration = server.configuration
            configuration.tls?.certificateFile = authority.clientCertificateFile
            configuration.tls?.privateKeyFile = authority.clientKeyFile
            try await withClient(configuration) { client in
                let reply = try await client.send(["PING"])
                #expect(reply == .status("PONG"))
            }

            var anonymous = server.configuration
            anonymous.password = Self.password
            let error = try await refusal(anonymous)
            #expect(error.code == .connectFailed)
            #expect(error.message.contains("requires a client certificate"), "\(error)")
        }
    }

    @Test func aKeyThatIsNotTheCertificatesIsNamed() async throws {
        let authority = try await TestCertificateAuthority.make()
        defer { authority.remove() }
        var configuration = RedisConfiguration(
            tls: RedisTLSConfiguration(certificateFile: authority.clientCertificateFile, privateKeyFile: authority.serverKeyFile))
        configuration.password = Self.password
        do {
            _ = try RedisClient(configuration: configuration, logger: quietLogger)
            Issue.record("expected the mismatched key to be refused")
        } catch {
            #expect(error.code == .invalidConfiguration)
            #expect(error.field == "tls.privateKeyFile")
            #expect(error.message.contains(authority.serverKeyFile) && error.message.contains(authority.clientCertificateFile))
            #expect(!error.description.contains(Self.password))
        }
    }

    @Test func aPlainServerIsNotMistakenForTLS() async throws {
        let authority = try await TestCertificateAuthority.make()
        defer { authority.remove() }
        try await withRedisServer { server in
            var configuration = server.configuration
            configuration.tls = RedisTLSConfiguration(caFile: authority.caFile, serverName: "localhost")
            configuration.connectTimeout = .milliseconds(500)
            let error = try await refusal(configuration)
            #expect(error.code == .connectFailed)
            #expect(error.message.contains("TLS"))
        }
    }
}
