import NIOCore
import Synchronization
import Testing
import TollgateTestSupport

@testable import TollgateRedis

/// Against a real `redis-server`: `TOLLGATE_REDIS_URL` when set (for the tests that can share one), else
/// a server each test starts for itself. Serialized: several of them measure time or kill servers.
@Suite(.serialized) struct LiveRedisTests {
    @Test func setAndGetRoundTrip() async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let key = uniqueKey("round-trip")
                #expect(try await client.send(["SET", key, "héllo", "EX", "60"]) == .status("OK"))
                #expect(try await client.send(["GET", key]).string == "héllo")
                var binary = ByteBuffer()
                binary.writeBytes([0, 1, 2, 0xFF, 13, 10])
                _ = try await client.send([RedisArgument("SET"), RedisArgument(key), RedisArgument(binary)])
                #expect(try await client.send(["GET", key]).bytes == binary)
                #expect(try await client.send(["GET", uniqueKey("missing")]) == .null)
                _ = try await client.send(["DEL", key])
            }
        }
    }

    @Test func aThousandConcurrentCommandsArePipelinedOverThePool() async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                // Round-robin: eight picks visit each of the four connections twice.
                let picks = try (0..<8).map { _ in ObjectIdentifier(try client.pickConnection()) }
                #expect(Set(picks).count == configuration.connections)
                #expect(Dictionary(grouping: picks, by: { $0 }).values.allSatisfy { $0.count == 2 })

                let prefix = uniqueKey("concurrent")
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<1000 {
                        group.addTask {
                            let key = "\(prefix):\(index)"
                            _ = try await client.send(["SET", key, "value-\(index)", "EX", "60"])
                            #expect(try await client.send(["GET", key]).string == "value-\(index)")
                            _ = try await client.send(["INCR", "\(prefix):counter"])
                        }
                    }
                    try await group.waitForAll()
                }
                #expect(try await client.send(["GET", "\(prefix):counter"]).int64 == 1000)
                _ = try await client.send(["DEL", "\(prefix):counter"])
            }
        }
    }

    @Test func authenticatesWithAPassword() async throws {
        try await withRedisServer(arguments: ["--requirepass", "s3cret-pw"]) { server in
            var configuration = server.configuration
            configuration.password = "s3cret-pw"
            try await withClient(configuration) { client in
                let reply = try await client.send(["PING"])
                #expect(reply == .status("PONG"))
            }

            let anonymous = try await RedisConnection.connect(configuration: server.configuration, logger: quietLogger)
            let refused = await outcome { () async throws(RedisClientError) in try await anonymous.send(["GET", "k"]) }
            if case .failure(let error) = refused {
                #expect(error.serverErrorPrefix == "NOAUTH")
            } else {
                Issue.record("expected NOAUTH")
            }
            await anonymous.close()

            var wrong = configuration
            wrong.password = "not-the-password"
            let failed = await outcome { () async throws(RedisClientError) in
                _ = try await RedisConnection.connect(configuration: wrong, logger: quietLogger)
                return .null
            }
            guard case .failure(let error) = failed else {
                Issue.record("expected the connect to fail")
                return
            }
            #expect(error.code == .connectFailed)
            #expect(error.description.contains("WRONGPASS"))
            #expect(!error.description.contains("not-the-password"))
        }
    }

    @Test func authenticatesAnACLUser() async throws {
        try await withRedisServer { server in
            let admin = try await RedisConnection.connect(configuration: server.configuration, logger: quietLogger)
            _ = try await admin.send(["ACL", "SETUSER", "tollgate", "on", ">user-pw", "~tg:*", "+@all"])
            await admin.close()

            var configuration = server.configuration
            configuration.username = "tollgate"
            configuration.password = "user-pw"
            try await withClient(configuration) { client in
                let whoami = try await client.send(["ACL", "WHOAMI"])
                #expect(whoami.string == "tollgate")
                let set = try await client.send(["SET", "tg:{org}:k", "1"])
                #expect(set == .status("OK"))
                // The user's key pattern is enforced by the server.
                let denied = await outcome { () async throws(RedisClientError) in try await client.send(["SET", "other", "1"]) }
                if case .failure(let error) = denied {
                    #expect(error.serverErrorPrefix == "NOPERM")
                } else {
                    Issue.record("expected NOPERM")
                }
            }

            configuration.password = "wrong"
            let failed = await outcome { () async throws(RedisClientError) in
                _ = try await RedisConnection.connect(configuration: configuration, logger: quietLogger)
                return .null
            }
            #expect(failed.errorCode == .connectFailed)
        }
    }

    @Test func selectsTheConfiguredDatabase() async throws {
        try await withAnyRedis { configuration in
            var other = configuration
            other.database = configuration.database == 2 ? 3 : 2
            let key = uniqueKey("select")
            try await withClient(other) { client in
                _ = try await client.send(["SET", key, "in-\(other.database)", "EX", "60"])
                #expect(try await client.send(["GET", key]).string == "in-\(other.database)")
            }
            try await withClient(configuration) { client in
                let reply = try await client.send(["GET", key])
                #expect(reply == .null)
            }
        }
    }

    @Test func connectsOverAUnixSocket() async throws {
        try await withRedisServer(unixSocket: true) { server in
            let path = try #require(server.unixSocketPath)
            let configuration = RedisConfiguration(unixSocketPath: path, connections: 2)
            try await withClient(configuration) { client in
                #expect(try await client.send(["PING"]) == .status("PONG"))
                _ = try await client.send(["SET", "unix-key", "over-the-socket"])
                #expect(try await client.send(["GET", "unix-key"]).string == "over-the-socket")
                // The server sees this connection as a unix-socket client.
                let info = try #require(try await client.send(["CLIENT", "INFO"]).string)
                #expect(info.contains("laddr=\(path)") || info.contains("addr=/"))
            }
        }
    }

    @Test func scriptLoadAndEvalSHA() async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let sha = try await client.scriptLoad(
                    "return {KEYS[1], ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[1])}"
                )
                #expect(sha.utf8.count == 40)
                let key = uniqueKey("script")
                let reply = try await client.evalSHA(sha, keys: [RedisArgument(key)], args: ["5"])
                #expect(
                    reply
                        == .array([.bulkString(ByteBuffer(string: key)), .bulkString(ByteBuffer(string: "5")), .integer(5)])
                )
                _ = try await client.send(["DEL", key])
            }
        }
    }

    @Test func noScriptAfterFlushReloadsAndRetriesOnce() async throws {
        try await withRedisServer { server in
            try await withClient(server.configuration) { client in
                let sha = try await client.scriptLoad("return redis.call('INCR', KEYS[1])")
                #expect(try await client.evalSHA(sha, keys: ["counter"]) == .integer(1))
                _ = try await client.send(["SCRIPT", "FLUSH"])
                #expect(try await client.evalSHA(sha, keys: ["counter"]) == .integer(2))

                // Exactly: 3 EVALSHA (one answered NOSCRIPT) and 2 SCRIPT LOAD.
                let stats = try #require(try await client.send(["INFO", "commandstats"]).string)
                #expect(Self.calls(of: "evalsha", in: stats) == 3)
                #expect(Self.calls(of: "script|load", in: stats) == 2)

                // A script this client never loaded cannot be reloaded: NOSCRIPT reaches the caller.
                let unknown = await outcome { () async throws(RedisClientError) in
                    try await client.evalSHA(String(repeating: "0", count: 40), keys: ["counter"])
                }
                if case .failure(let error) = unknown {
                    #expect(error.serverErrorPrefix == "NOSCRIPT")
                } else {
                    Issue.record("expected NOSCRIPT")
                }
                #expect(try await client.send(["GET", "counter"]).int64 == 2)
            }
        }
    }

    @Test func aFullQueueAnswersOverloadedAtOnce() async throws {
        try await withAnyRedis { base in
            var configuration = base
            configuration.connections = 1
            configuration.maximumPendingCommands = 3
            configuration.commandTimeout = .seconds(5)
            try await withClient(configuration) { client in
                let connection = try client.pickConnection()
                let key = uniqueKey("overload")
                try await withThrowingTaskGroup(of: RedisReply.self) { group in
                    // BLPOP holds the connection for 2 s; the GETs, sent once it is pending (tasks start in
                    // no set order, and a GET sent first would be answered at once), wait behind it.
                    group.addTask { try await client.send(["BLPOP", key, "2"]) }
                    try await waitUntil("the BLPOP pending") { connection.pendingCommands >= 1 }
                    group.addTask { try await client.send(["GET", key]) }
                    group.addTask { try await client.send(["GET", key]) }
                    try await waitUntil("three commands pending") { connection.pendingCommands >= 3 }

                    let started = ContinuousClock.now
                    let refused = await outcome { () async throws(RedisClientError) in try await client.send(["PING"]) }
                    #expect(refused.errorCode == .overloaded)
                    #expect(ContinuousClock.now - started < .milliseconds(200))

                    for try await reply in group {
                        #expect(reply == .null)
                    }
                }
                #expect(try await client.send(["PING"]) == .status("PONG"))
            }
        }
    }

    @Test func aCommandTimeoutIsReportedAndNeverReplayed() async throws {
        try await withRedisServer { server in
            var configuration = server.configuration
            configuration.connections = 1
            configuration.commandTimeout = .milliseconds(300)
            configuration.reconnectBackoffMinimum = .milliseconds(10)
            configuration.reconnectBackoffMaximum = .milliseconds(100)
            try await withClient(configuration) { client in
                let started = ContinuousClock.now
                let slow = await outcome { () async throws(RedisClientError) in try await client.send(["BLPOP", "queue", "2"]) }
                let elapsed = ContinuousClock.now - started
                #expect(slow.errorCode == .timeout)
                #expect(elapsed >= .milliseconds(250) && elapsed < .seconds(1))

                // The timed-out connection was closed; the client reconnects on its own.
                try await client.waitUntilConnected(timeout: .seconds(5))
                _ = try await client.send(["LPUSH", "queue", "item"])
                try await Task.sleep(for: .milliseconds(100))
                // Had the BLPOP been sent again it would have taken the item.
                #expect(try await client.send(["LLEN", "queue"]) == .integer(1))
            }
        }
    }

    @Test func killingTheServerFailsPendingCallsFast() async throws {
        try await withRedisServer { server in
            var configuration = server.configuration
            configuration.connections = 2
            configuration.commandTimeout = .seconds(3)
            configuration.reconnectBackoffMinimum = .milliseconds(20)
            configuration.reconnectBackoffMaximum = .milliseconds(200)
            try await withClient(configuration) { client in
                let connections = try client.slots.map { slot -> RedisConnection in
                    guard case .connected(let connection) = slot.state.withLock({ $0 }) else {
                        throw TestSetupError(description: "a connection is not up")
                    }
                    return connection
                }
                try await withThrowingTaskGroup(of: (Result<RedisReply, RedisClientError>, Duration).self) { group in
                    // Each connection blocks on its first BLPOP; everything else queues behind it.
                    for index in 0..<20 {
                        group.addTask {
                            let started = ContinuousClock.now
                            let result = await outcome { () async throws(RedisClientError) in
                                try await client.send(["BLPOP", "list-\(index)", "10"])
                            }
                            return (result, ContinuousClock.now - started)
                        }
                    }
                    try await waitUntil("twenty commands pending") {
                        connections.reduce(0, { $0 + $1.pendingCommands }) >= 20
                    }
                    try await Task.sleep(for: .milliseconds(100))
                    await server.kill()

                    for try await (result, elapsed) in group {
                        #expect(result.errorCode == .connectionClosed)
                        #expect(elapsed < configuration.commandTimeout)
                    }
                }

                // While the server is down, callers fail at once with a clear error.
                for _ in 0..<5 {
                    let started = ContinuousClock.now
                    let result = await outcome { () async throws(RedisClientError) in try await client.send(["PING"]) }
                    #expect(result.errorCode == .notConnected)
                    #expect(ContinuousClock.now - started < .milliseconds(250))
                    if case .failure(let error) = result {
                        #expect(error.message.contains("the command was not sent"))
                    }
                    try await Task.sleep(for: .milliseconds(30))
                }
            }
        }
    }

    @Test func reconnectsAfterTheServerRestartsOnTheSamePort() async throws {
        let first = try await RedisTestServer.start()
        let port = first.port
        var configuration = first.configuration
        configuration.reconnectBackoffMinimum = .milliseconds(20)
        configuration.reconnectBackoffMaximum = .milliseconds(200)
        var restarted: RedisTestServer?
        do {
            try await withClient(configuration) { client in
                #expect(try await client.send(["SET", "k", "before"]) == .status("OK"))
                await first.kill()
                // Wait until the client has noticed.
                let noticed = ContinuousClock.now + .seconds(5)
                while ContinuousClock.now < noticed {
                    let result = await outcome { () async throws(RedisClientError) in try await client.send(["PING"]) }
                    if result.errorCode == .notConnected { break }
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(await outcome { () async throws(RedisClientError) in try await client.send(["PING"]) }.errorCode == .notConnected)

                restarted = try await RedisTestServer.start(port: port)
                try await client.waitUntilConnected(timeout: .seconds(5))
                #expect(try await client.send(["GET", "k"]) == .null)  // a fresh server: nothing saved
                #expect(try await client.send(["SET", "k", "after"]) == .status("OK"))
                #expect(try await client.send(["GET", "k"]).string == "after")
            }
        } catch {
            await first.kill()
            await restarted?.kill()
            throw error
        }
        await first.kill()
        await restarted?.kill()
    }

    @Test func aRefusedConnectionFailsFast() async throws {
        let port = try await freePort()
        let started = ContinuousClock.now
        let result = await outcome { () async throws(RedisClientError) in
            _ = try await RedisConnection.connect(configuration: RedisConfiguration(port: port), logger: quietLogger)
            return .null
        }
        #expect(result.errorCode == .connectFailed)
        #expect(ContinuousClock.now - started < .seconds(1))
    }

    /// The `calls=` count of one command in `INFO commandstats`.
    static func calls(of command: String, in stats: String) -> Int? {
        for line in stats.split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_\(command):") {
            for field in line.dropFirst("cmdstat_\(command):".count).split(separator: ",") where field.hasPrefix("calls=") {
                return Int(field.dropFirst("calls=".count))
            }
        }
        return nil
    }
}
