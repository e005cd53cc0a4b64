import Foundation
import NIOCore
import NIOPosix
import Testing
import TollgateTestSupport

@testable import TollgateRedis

extension RedisTestServer {
    /// A client configuration for this server over TCP (or its unix socket when it has one); for a TLS
    /// server, TLS trusting the test CA and expecting the name its certificate carries.
    var configuration: RedisConfiguration {
        var configuration = RedisConfiguration(host: "127.0.0.1", port: port)
        configuration.unixSocketPath = unixSocketPath
        if let tls {
            configuration.tls = RedisTLSConfiguration(caFile: tls.caFile, serverName: "localhost")
        }
        return configuration
    }
}

/// Runs `body` against the Redis named by `TOLLGATE_REDIS_URL` or, when it is unset, a fresh server.
func withAnyRedis(_ body: (RedisConfiguration) async throws -> Void) async throws {
    if let url = ProcessInfo.processInfo.environment["TOLLGATE_REDIS_URL"], !url.isEmpty {
        try await body(RedisConfiguration(url: url))
    } else {
        try await withRedisServer { server in try await body(server.configuration) }
    }
}

/// Runs `body` with a running client whose connections are all up, and stops the client afterwards.
func withClient(_ configuration: RedisConfiguration, _ body: (RedisClient) async throws -> Void) async throws {
    let client = try RedisClient(configuration: configuration, logger: quietLogger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await client.run() }
        do {
            try await client.waitUntilConnected(timeout: .seconds(5))
            try await body(client)
        } catch {
            group.cancelAll()
            throw error
        }
        group.cancelAll()
    }
}

/// A key prefix no other test (or test run) uses.
func uniqueKey(_ name: String) -> String {
    "tollgate-test:\(UInt64.random(in: 0...UInt64.max)):\(name)"
}

/// Waits until `condition` holds, polling every millisecond; throws after `timeout` rather than waiting
/// for ever (a test that set up a race it then lost must fail, not hang the suite).
func waitUntil(
    _ what: @autoclosure () -> String, timeout: Duration = .seconds(5), _ condition: () -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else {
            throw TestSetupError(description: "\(what()) did not happen within \(timeout)")
        }
        try await Task.sleep(for: .milliseconds(1))
    }
}
