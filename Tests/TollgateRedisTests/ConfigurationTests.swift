import Foundation
import Testing

@testable import TollgateRedis

@Suite struct ConfigurationTests {
    @Test func defaults() throws {
        let configuration = RedisConfiguration()
        #expect(configuration.host == "127.0.0.1" && configuration.port == 6379)
        #expect(configuration.connections == 4)
        #expect(configuration.maximumPendingCommands == 1024)
        try configuration.validate()
    }

    @Test func parsesRedisURLs() throws {
        let full = try RedisConfiguration(url: "redis://alice:p%40ss@cache.internal:6390/5")
        #expect(full.host == "cache.internal" && full.port == 6390 && full.database == 5)
        #expect(full.username == "alice" && full.password == "p@ss")

        let passwordOnly = try RedisConfiguration(url: "redis://:secret@127.0.0.1:6399")
        #expect(passwordOnly.username == nil && passwordOnly.password == "secret" && passwordOnly.port == 6399)

        let ipv6 = try RedisConfiguration(url: "redis://[::1]:7000")
        #expect(ipv6.host == "::1" && ipv6.port == 7000 && ipv6.endpointDescription == "[::1]:7000")

        let unix = try RedisConfiguration(url: "unix:///run/redis.sock?db=2")
        #expect(unix.unixSocketPath == "/run/redis.sock" && unix.database == 2)
    }

    @Test(arguments: ["http://x", "redis://host:port", "redis://h:1/x", "unix://relative", "redis://:%4@h"])
    func rejectsBadURLs(_ url: String) {
        #expect(throws: RedisClientError.self) { try RedisConfiguration(url: url) }
    }

    @Test func aBadURLDoesNotRepeatThePassword() {
        do {
            _ = try RedisConfiguration(url: "redis://:topsecret@h:notaport")
            Issue.record("expected an error")
        } catch {
            #expect(!error.description.contains("topsecret"))
        }
    }

    @Test func validationNamesTheField() {
        var configuration = RedisConfiguration()
        configuration.connections = 0
        do {
            try configuration.validate()
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .invalidConfiguration)
            #expect(error.message == "RedisConfiguration.connections must be at least 1, found 0")
        }
        configuration = RedisConfiguration(reconnectBackoffMinimum: .seconds(2), reconnectBackoffMaximum: .seconds(1))
        #expect(throws: RedisClientError.self) { try configuration.validate() }
        configuration = RedisConfiguration(username: "u")
        #expect(throws: RedisClientError.self) { try configuration.validate() }
    }

    @Test func descriptionRedactsThePassword() {
        let configuration = RedisConfiguration(username: "u", password: "hunter2")
        #expect(!"\(configuration)".contains("hunter2"))
        #expect("\(configuration)".contains("<redacted>"))
    }

    @Test func redissURLsTurnTLSOn() throws {
        let secure = try RedisConfiguration(url: "rediss://user:pw@redis.example.com:6380/1")
        #expect(secure.tls == RedisTLSConfiguration())
        #expect(secure.host == "redis.example.com" && secure.port == 6380 && secure.database == 1 && secure.username == "user")
        #expect(try RedisConfiguration(url: "redis://redis.example.com").tls == nil)
        #expect("\(secure)".contains("tls: TLS(trust: system roots)") && !"\(secure)".contains("pw@"))
    }

    @Test(arguments: [
        (RedisTLSConfiguration(certificateFile: "/c.pem"), "tls.privateKeyFile", "set when certificateFile is set"),
        (RedisTLSConfiguration(privateKeyFile: "/k.pem"), "tls.certificateFile", "set when privateKeyFile is set"),
        (RedisTLSConfiguration(caFile: ""), "tls.caFile", "a file path or nil"),
        (RedisTLSConfiguration(serverName: "10.0.0.1"), "tls.serverName", "not an IP address"),
        (RedisTLSConfiguration(serverName: "redis .example"), "tls.serverName", "a DNS name"),
    ])
    func tlsValidationNamesTheField(_ tls: RedisTLSConfiguration, field: String, expected: String) {
        let configuration = RedisConfiguration(tls: tls)
        do {
            try configuration.validate()
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .invalidConfiguration && error.field == field)
            #expect(error.message.hasPrefix("RedisConfiguration.\(field) must be") && error.message.contains(expected), "\(error)")
        }
    }

    @Test func tlsNeedsTCP() {
        let configuration = RedisConfiguration(unixSocketPath: "/run/redis.sock", tls: RedisTLSConfiguration())
        #expect(throws: RedisClientError.self) { try configuration.validate() }
    }

    /// A client reads the files when it is made: a missing, unreadable or wrong file is named, with its field.
    @Test func aBadTLSFileIsNamed() throws {
        let directory = NSTemporaryDirectory() + "tollgate-tls-config-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let notPEM = directory + "/not.pem"
        try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: notPEM))
        let cases: [(RedisTLSConfiguration, String, String)] = [
            (RedisTLSConfiguration(caFile: directory + "/missing.pem"), "tls.caFile", "does not exist"),
            (RedisTLSConfiguration(caFile: directory), "tls.caFile", "is a directory"),
            (RedisTLSConfiguration(caFile: notPEM), "tls.caFile", "holds no PEM certificate"),
            (RedisTLSConfiguration(certificateFile: notPEM, privateKeyFile: notPEM), "tls.certificateFile", "holds no PEM certificate"),
        ]
        for (tls, field, why) in cases {
            var configuration = RedisConfiguration(tls: tls)
            configuration.password = "file-test-pw"
            do {
                _ = try RedisClient(configuration: configuration, logger: quietLogger)
                Issue.record("expected \(tls) to be refused")
            } catch {
                #expect(error.code == .invalidConfiguration && error.field == field, "\(error)")
                #expect(error.message.contains(why), "\(error)")
                #expect(error.message.contains(tls.caFile ?? notPEM), "\(error)")
                #expect(!error.description.contains("file-test-pw"))
            }
        }
    }

    @Test func backoffDoublesUpToTheMaximumWithJitter() {
        let backoff = ReconnectBackoff(minimum: .milliseconds(50), maximum: .seconds(1))
        #expect(backoff.nominalDelay(attempt: 0) == .milliseconds(50))
        #expect(backoff.nominalDelay(attempt: 1) == .milliseconds(100))
        #expect(backoff.nominalDelay(attempt: 4) == .milliseconds(800))
        #expect(backoff.nominalDelay(attempt: 5) == .seconds(1))
        #expect(backoff.nominalDelay(attempt: 1000) == .seconds(1))
        for attempt in 0..<8 {
            let delay = backoff.delay(attempt: attempt)
            let nominal = backoff.nominalDelay(attempt: attempt)
            #expect(delay >= nominal / 2 && delay <= nominal)
        }
    }

    @Test func aClientThatIsNotRunningFailsFast() async throws {
        let client = try RedisClient(configuration: RedisConfiguration(), logger: quietLogger)
        let result = await outcome { () async throws(RedisClientError) in try await client.send(["PING"]) }
        #expect(result.errorCode == .notConnected)
    }
}
