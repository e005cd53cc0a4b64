import Synchronization
import Testing

@testable import TollgateRedis

/// `evalSHA`'s one reload on NOSCRIPT, over a fake that records what would have been sent.
@Suite struct ScriptRetryTests {
    final class FakeRedis: Sendable {
        let sent = Mutex<[[String]]>([])
        let answers: Mutex<[Result<RedisReply, RedisClientError>]>

        init(_ answers: [Result<RedisReply, RedisClientError>]) {
            self.answers = Mutex(answers)
        }

        func send(_ arguments: [RedisArgument]) throws(RedisClientError) -> RedisReply {
            sent.withLock {
                $0.append(arguments.map { argument in
                    if case .string(let text) = argument.storage { return text }
                    return "<bytes>"
                })
            }
            return try answers.withLock { $0.removeFirst() }.get()
        }
    }

    static let sha = String(repeating: "a", count: 40)
    static let noScript = RedisClientError.server("NOSCRIPT No matching script. Please use EVAL.")

    @Test func noScriptReloadsAndRetriesOnce() async throws {
        let fake = FakeRedis([.failure(Self.noScript), .success(.bulkString(.init(string: Self.sha))), .success(.integer(7))])
        let reply = try await RedisClient.evalSHA(Self.sha, keys: ["k"], args: ["1"], source: "return 7") { arguments throws(RedisClientError) in
            try fake.send(arguments)
        }
        #expect(reply == .integer(7))
        #expect(
            fake.sent.withLock { $0 } == [
                ["EVALSHA", Self.sha, "1", "k", "1"], ["SCRIPT", "LOAD", "return 7"], ["EVALSHA", Self.sha, "1", "k", "1"],
            ]
        )
    }

    @Test func aSecondNoScriptReachesTheCaller() async throws {
        let fake = FakeRedis([.failure(Self.noScript), .success(.bulkString(.init(string: Self.sha))), .failure(Self.noScript)])
        await #expect(throws: RedisClientError.self) {
            try await RedisClient.evalSHA(Self.sha, keys: [], args: [], source: "return 7") { arguments throws(RedisClientError) in
                try fake.send(arguments)
            }
        }
        #expect(fake.sent.withLock { $0.count } == 3)
    }

    @Test(arguments: [
        RedisClientError(.timeout, message: "t"), RedisClientError(.connectionClosed, message: "c"),
        RedisClientError.server("ERR boom"),
    ])
    func otherFailuresAreNeverReplayed(_ failure: RedisClientError) async throws {
        let fake = FakeRedis([.failure(failure)])
        await #expect(throws: RedisClientError.self) {
            try await RedisClient.evalSHA(Self.sha, keys: [], args: [], source: "return 7") { arguments throws(RedisClientError) in
                try fake.send(arguments)
            }
        }
        #expect(fake.sent.withLock { $0.count } == 1)
    }

    @Test func withoutTheSourceNoScriptReachesTheCaller() async throws {
        let fake = FakeRedis([.failure(Self.noScript)])
        await #expect(throws: RedisClientError.self) {
            try await RedisClient.evalSHA(Self.sha, keys: [], args: [], source: nil) { arguments throws(RedisClientError) in
                try fake.send(arguments)
            }
        }
        #expect(fake.sent.withLock { $0.count } == 1)
    }
}
