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
