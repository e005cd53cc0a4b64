import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import TollgateRedis

/// The connection and its channel handler over `NIOAsyncTestingChannel`, with the test as the server.
@Suite struct ChannelHandlerTests {
    @Test func pipelinedCommandsGetTheirOwnRepliesInOrder() async throws {
        let (channel, connection) = try await makeTestConnection()
        async let a = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "a"]) }
        async let b = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "b"]) }
        async let c = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "c"]) }
        // The three may reach the loop in any order; the server answers each with its key, in the order sent.
        let sent = try await channel.readCommands(3)
        #expect(Set(sent.map { $0[1] }) == ["a", "b", "c"])
        for command in sent {
            let key = command[1]
            try await channel.writeInbound(ByteBuffer(string: "$\(key.utf8.count + 6)\r\nvalue-\(key)\r\n"))
        }
        #expect(try await a.get().string == "value-a")
        #expect(try await b.get().string == "value-b")
        #expect(try await c.get().string == "value-c")
        try await channel.close()
    }

    @Test func aReplySplitByteByByteCompletesOnce() async throws {
        let (channel, connection) = try await makeTestConnection()
        async let reply = outcome { () async throws(RedisClientError) in try await connection.send(["LRANGE", "k", "0", "-1"]) }
        #expect(try await channel.readCommands(1) == [["LRANGE", "k", "0", "-1"]])
        for byte in Array("*3\r\n$5\r\nhello\r\n:42\r\n*2\r\n+OK\r\n$-1\r\n".utf8) {
            try await channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        #expect(
            try await reply.get()
                == .array([.bulkString(ByteBuffer(string: "hello")), .integer(42), .array([.status("OK"), .null])])
        )
        try await channel.close()
    }

    @Test func anErrorReplyFailsOnlyItsCommand() async throws {
        let (channel, connection) = try await makeTestConnection()
        async let first = outcome { () async throws(RedisClientError) in try await connection.send(["INCR", "k"]) }
        _ = try await channel.readCommands(1)
        try await channel.writeInbound(ByteBuffer(string: "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"))
        let result = await first
        guard case .failure(let error) = result else {
            Issue.record("expected a server error")
            return
        }
        #expect(error.code == .serverError)
        #expect(error.serverErrorPrefix == "WRONGTYPE")
        // The connection stays usable.
        async let second = outcome { () async throws(RedisClientError) in try await connection.send(["PING"]) }
        _ = try await channel.readCommands(1)
        try await channel.writeInbound(ByteBuffer(string: "+PONG\r\n"))
        #expect(try await second.get() == .status("PONG"))
        #expect(channel.isActive)
        try await channel.close()
    }

    @Test func nilAndNestedArrays() async throws {
        let (channel, connection) = try await makeTestConnection()
        async let missing = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "missing"]) }
        _ = try await channel.readCommands(1)
        try await channel.writeInbound(ByteBuffer(string: "$-1\r\n"))
        #expect(try await missing.get() == .null)

        async let nested = outcome { () async throws(RedisClientError) in try await connection.send(["EXEC"]) }
        _ = try await channel.readCommands(1)
        try await channel.writeInbound(ByteBuffer(string: "*2\r\n*2\r\n:1\r\n*-1\r\n-ERR inner\r\n"))
        #expect(try await nested.get() == .array([.array([.integer(1), .null]), .error("ERR inner")]))
        try await channel.close()
    }

    @Test func aTimeoutFailsTheLateCommandAndClosesTheConnection() async throws {
        let (channel, connection) = try await makeTestConnection(RedisConfiguration(commandTimeout: .seconds(1)))
        async let slow = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "slow"]) }
        _ = try await channel.readCommands(1)
        await channel.testingEventLoop.advanceTime(by: .milliseconds(500))
        async let later = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "later"]) }
        _ = try await channel.readCommands(1)
        // t = 1 s: the first command's deadline passes, the second has 500 ms left.
        await channel.testingEventLoop.advanceTime(by: .milliseconds(500))
        #expect(await slow.errorCode == .timeout)
        let laterResult = await later
        #expect(laterResult.errorCode == .connectionClosed)
        if case .failure(let error) = laterResult { #expect(error.message.contains("timed out")) }
        #expect(!channel.isActive)
        // Sent after the close: refused without being written.
        let after = await outcome { () async throws(RedisClientError) in try await connection.send(["GET", "x"]) }
        #expect(after.errorCode == .notConnected)
    }

    @Test func aCommandAnsweredInTimeIsNotFailedByAnEarlierTimer() async throws {
        let (channel, connection) = try await makeTestConnection(RedisConfiguration(commandTimeout: .seconds(1)))
        async let first = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "1"]) }
        _ = try await channel.readCommands(1)
        await channel.testingEventLoop.advanceTime(by: .milliseconds(500))
        async let second = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "2"]) }
        _ = try await channel.readCommands(1)
        try await channel.writeInbound(ByteBuffer(string: "+one\r\n"))
        #expect(try await first.get() == .status("one"))
        // The timer armed for the first command fires at t = 1 s and finds nothing expired.
        await channel.testingEventLoop.advanceTime(by: .milliseconds(600))
        try await channel.writeInbound(ByteBuffer(string: "+two\r\n"))
        #expect(try await second.get() == .status("two"))
        await channel.testingEventLoop.advanceTime(by: .seconds(5))
        #expect(channel.isActive)
        try await channel.close()
    }

    @Test func aSpentBudgetIsRefusedWithoutTouchingTheConnection() async throws {
        let (channel, connection) = try await makeTestConnection()
        let result = await outcome { () async throws(RedisClientError) in try await connection.send(["GET", "a"], timeout: .zero) }
        #expect(result.errorCode == .timeout)
        #expect(try await channel.readOutbound(as: ByteBuffer.self) == nil)
        #expect(channel.isActive)
        try await channel.close()
    }

    @Test func closingTheConnectionFailsEveryPendingCommand() async throws {
        let (channel, connection) = try await makeTestConnection()
        async let a = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "a"]) }
        async let b = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "b"]) }
        async let c = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "c"]) }
        _ = try await channel.readCommands(3)
        try await channel.close()
        #expect(await a.errorCode == .connectionClosed)
        #expect(await b.errorCode == .connectionClosed)
        #expect(await c.errorCode == .connectionClosed)
    }

    @Test func malformedBytesFailPendingCommandsWithAProtocolError() async throws {
        let (channel, connection) = try await makeTestConnection()
        async let a = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "a"]) }
        async let b = outcome { () async throws(RedisClientError) in try await connection.send(["GET", "b"]) }
        _ = try await channel.readCommands(2)
        _ = try? await channel.writeInbound(ByteBuffer(string: "+OK\r\n?garbage\r\n"))
        let results = [await a, await b]
        // Whichever was sent first got the valid reply; the other fails with a protocol error.
        #expect(results.filter { (try? $0.get()) == .status("OK") }.count == 1)
        #expect(results.filter { $0.errorCode == .protocolError }.count == 1)
        #expect(!channel.isActive)
    }

    @Test func anUnsolicitedReplyClosesTheConnection() async throws {
        let (channel, _) = try await makeTestConnection()
        _ = try? await channel.writeInbound(ByteBuffer(string: "+OK\r\n"))
        #expect(!channel.isActive)
    }

    @Test func writesOfOneTickShareOneFlush() async throws {
        let channel = NIOAsyncTestingChannel()
        let counter = FlushCounter()
        try await channel.pipeline.addHandler(counter)
        try await RedisConnection.addHandler(to: channel, logger: quietLogger)
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).get()
        let loop = channel.testingEventLoop
        try await loop.executeInContext {
            for key in ["a", "b", "c"] {
                let request = RedisRequest(
                    command: try RESPCommandEncoder.encode(["GET", RedisArgument(key)]),
                    deadline: loop.now + .seconds(1),
                    promise: loop.makePromise()
                )
                channel.write(request, promise: nil)
            }
        }
        // Nothing has been flushed yet: the flush runs once the loop gets to the end of its tick.
        #expect(try await channel.readOutbound(as: ByteBuffer.self) == nil)
        await loop.run()
        #expect(try await channel.readCommands(3).map { $0[1] } == ["a", "b", "c"])
        #expect(counter.flushes == 1)
        try await channel.close()
    }

    @Test func authAndSelectArePipelinedAtConnect() async throws {
        let channel = NIOAsyncTestingChannel()
        try await RedisConnection.addHandler(to: channel, logger: quietLogger)
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).get()
        var configuration = RedisConfiguration(username: "tollgate", password: "pw", database: 3)
        configuration.commandTimeout = .seconds(1)
        async let connected = RedisConnection.handshake(
            channel: channel,
            configuration: configuration,
            timeout: .seconds(1),
            logger: quietLogger
        )
        #expect(try await channel.readCommands(2) == [["AUTH", "tollgate", "pw"], ["SELECT", "3"]])
        try await channel.writeInbound(ByteBuffer(string: "+OK\r\n+OK\r\n"))
        _ = try await connected
        try await channel.close()
    }

    @Test func aFailedAuthFailsTheConnectWithoutThePassword() async throws {
        let channel = NIOAsyncTestingChannel()
        try await RedisConnection.addHandler(to: channel, logger: quietLogger)
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).get()
        async let connected = outcome { () async throws(RedisClientError) in
            _ = try await RedisConnection.handshake(
                channel: channel,
                configuration: RedisConfiguration(password: "hunter2"),
                timeout: .seconds(1),
                logger: quietLogger
            )
            return .null
        }
        _ = try await channel.readCommands(1)
        try await channel.writeInbound(ByteBuffer(string: "-WRONGPASS invalid username-password pair\r\n"))
        guard case .failure(let error) = await connected else {
            Issue.record("expected the connect to fail")
            return
        }
        #expect(error.code == .connectFailed)
        #expect(error.description.contains("WRONGPASS"))
        #expect(!error.description.contains("hunter2"))
    }
}

/// Counts the flushes that reach the front of the pipeline.
final class FlushCounter: ChannelOutboundHandler, Sendable {
    typealias OutboundIn = ByteBuffer
    let count = Mutex(0)
    var flushes: Int { count.withLock { $0 } }

    func flush(context: ChannelHandlerContext) {
        count.withLock { $0 += 1 }
        context.flush()
    }
}
