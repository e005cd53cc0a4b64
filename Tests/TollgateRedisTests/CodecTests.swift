import NIOCore
import Testing

@testable import TollgateRedis

/// hiredis as the RESP codec: commands formatted by `redisFormatCommandArgv`, replies read by its reader.
@Suite struct CodecTests {
    @Test func encodesTextAndBinaryArguments() throws {
        var binary = ByteBuffer()
        binary.writeBytes([0x00, 0x0D, 0x0A, 0xFF])
        let encoded = try RESPCommandEncoder.encode(["SET", "tg:{org}:k", RedisArgument(binary), "", 42])
        var expected = ByteBuffer(string: "*5\r\n$3\r\nSET\r\n$10\r\ntg:{org}:k\r\n$4\r\n")
        expected.writeBytes([0x00, 0x0D, 0x0A, 0xFF])
        expected.writeString("\r\n$0\r\n\r\n$2\r\n42\r\n")
        #expect(encoded == expected)
    }

    @Test func encodesOnlyEmptyArguments() throws {
        let encoded = try RESPCommandEncoder.encode(["", ""])
        #expect(String(buffer: encoded) == "*2\r\n$0\r\n\r\n$0\r\n\r\n")
    }

    @Test func appendsToAnExistingBuffer() throws {
        var buffer = ByteBuffer(string: "prefix")
        try RESPCommandEncoder.encode(["PING"], into: &buffer)
        #expect(String(buffer: buffer) == "prefix*1\r\n$4\r\nPING\r\n")
    }

    @Test func refusesACommandWithoutArguments() {
        #expect(throws: RedisClientError.self) { try RESPCommandEncoder.encode([]) }
    }

    @Test func decodesEveryReplyType() throws {
        let decoder = try RESPReplyDecoder()
        try decoder.feed(ByteBuffer(string: "+OK\r\n-ERR bad\r\n:-7\r\n$5\r\nhello\r\n$-1\r\n*-1\r\n*0\r\n$0\r\n\r\n"))
        var replies: [RedisReply] = []
        while let reply = try decoder.next() { replies.append(reply) }
        #expect(
            replies == [
                .status("OK"), .error("ERR bad"), .integer(-7), .bulkString(ByteBuffer(string: "hello")), .null, .null,
                .array([]), .bulkString(ByteBuffer()),
            ]
        )
    }

    @Test func decodesNestedArrays() throws {
        let decoder = try RESPReplyDecoder()
        try decoder.feed(ByteBuffer(string: "*3\r\n*2\r\n:1\r\n*1\r\n$1\r\na\r\n$-1\r\n*2\r\n-NOPE x\r\n+QUEUED\r\n"))
        let reply = try #require(try decoder.next())
        #expect(
            reply
                == .array([
                    .array([.integer(1), .array([.bulkString(ByteBuffer(string: "a"))])]),
                    .null,
                    .array([.error("NOPE x"), .status("QUEUED")]),
                ])
        )
        #expect(try decoder.next() == nil)
    }

    @Test func decodesAReplyFedByteByByte() throws {
        let decoder = try RESPReplyDecoder()
        let wire = Array("*2\r\n$12\r\nhello\r\nworld\r\n:12345\r\n".utf8)
        for (index, byte) in wire.enumerated() {
            try decoder.feed(ByteBuffer(bytes: [byte]))
            let reply = try decoder.next()
            if index < wire.count - 1 {
                #expect(reply == nil)
            } else {
                #expect(reply == .array([.bulkString(ByteBuffer(string: "hello\r\nworld")), .integer(12345)]))
            }
        }
    }

    @Test func keepsBinaryBulkStrings() throws {
        let decoder = try RESPReplyDecoder()
        var wire = ByteBuffer(string: "$3\r\n")
        wire.writeBytes([0x00, 0xFF, 0x0A])
        wire.writeString("\r\n")
        try decoder.feed(wire)
        #expect(try decoder.next()?.bytes == ByteBuffer(bytes: [0x00, 0xFF, 0x0A]))
    }

    @Test(arguments: ["?what\r\n", ":12a\r\n", "$abc\r\n", "*1\r\n!x\r\n"])
    func malformedBytesAreAProtocolError(_ wire: String) throws {
        let decoder = try RESPReplyDecoder()
        do {
            try decoder.feed(ByteBuffer(string: wire))
            while try decoder.next() != nil {}
            Issue.record("expected a protocol error")
        } catch {
            #expect(error.code == .protocolError)
            #expect(error.message.hasPrefix("the server sent bytes that are not valid RESP: "))
        }
    }

    @Test func nestingDeeperThanHiredisSupportsIsAProtocolError() throws {
        let decoder = try RESPReplyDecoder()
        try decoder.feed(ByteBuffer(string: String(repeating: "*1\r\n", count: 12) + ":1\r\n"))
        #expect(throws: RedisClientError.self) { try decoder.next() }
    }

    @Test func replyAccessors() {
        #expect(RedisReply.bulkString(ByteBuffer(string: "12")).int64 == 12)
        #expect(RedisReply.integer(3).int64 == 3)
        #expect(RedisReply.status("PONG").string == "PONG")
        #expect(RedisReply.null.isNull)
        #expect(RedisReply.array([.null]).array == [.null])
        #expect(RedisReply.bulkString(ByteBuffer(string: "secret")).description == "bulkString(6 bytes)")
    }

    @Test func serverMessagesLoseEchoedArguments() {
        let error = RedisClientError.server("ERR unknown command 'FOO', with args beginning with: 'wz_live_abc' ")
        #expect(error.message == "ERR unknown command 'FOO'")
        #expect(error.serverErrorPrefix == "ERR")
        #expect(!error.description.contains("wz_live"))
    }
}
