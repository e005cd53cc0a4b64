import Foundation
import Logging
import Testing
import Tollgate
import TollgateRedis
import TollgateTestSupport

/// The Redis example in README.md is this code: the test checks that the README shows it verbatim,
/// and runs it against a real redis-server.
@Suite struct ReadmeRedisExampleTests {
    // README-EXAMPLE-BEGIN
    func checkOnRedis(url: String, plan: Plan, logger: Logger) async throws -> Decision {
        let client = try RedisClient(configuration: RedisConfiguration(url: url), logger: logger)
        let connections = Task { await client.run() }  // keeps the connections, reconnects with backoff
        defer { connections.cancel() }
        try await client.waitUntilConnected(timeout: .seconds(2))
        let store = RedisLimitStore(client: client, configuration: .init(failurePolicy: .local), logger: logger)
        let partition = Partition(organization: "org_123", apiKey: "9f86d081884c7d65")
        return try await store.check(plan, partition: partition, cost: 1)
    }
    // README-EXAMPLE-END

    @Test func readmeShowsThisExampleVerbatim() throws {
        let source = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let begin = try #require(source.range(of: "    // README-EXAMPLE-BEGIN\n"))
        let end = try #require(source.range(of: "    // README-EXAMPLE-END"))
        let snippet = source[begin.upperBound..<end.lowerBound]
            .split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasPrefix("    ") ? String($0.dropFirst(4)) : String($0) }
            .joined(separator: "\n")
        #expect(readme.contains(snippet), "README.md must contain the Redis example exactly as compiled here")
    }

    @Test func exampleRunsAgainstRedis() async throws {
        try await withRedisServer { server in
            let plan = try Plan(name: "readme", limits: [Limit(name: "burst", algorithm: .tokenBucket(capacity: 5, refillTokens: 1, refillPeriod: 1_000_000))])
            let decision = try await checkOnRedis(url: "redis://127.0.0.1:\(server.port)", plan: plan, logger: quietLogger)
            #expect(decision.origin == .store)
            #expect(decision.isAllowed && decision.results[0].remaining == 4)
        }
    }
}
