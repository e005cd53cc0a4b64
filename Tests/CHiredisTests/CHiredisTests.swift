import CHiredis
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// The system library links and its reader and formatter work from Swift.
@Suite struct CHiredisTests {
    @Test func formatsACommandAsRESP() throws {
        let args = ["SET", "tg:{org}:k", "1"]
        var target: UnsafeMutablePointer<CChar>?
        let cStrings = args.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        var pointers = cStrings.map { UnsafePointer($0) }
        let lengths = args.map { $0.utf8.count }
        let length = redisFormatCommandArgv(&target, Int32(args.count), &pointers, lengths)
        defer { redisFreeCommand(target) }
        let encoded = String(cString: try #require(target))
        #expect(length == encoded.utf8.count)
        #expect(encoded == "*3\r\n$3\r\nSET\r\n$10\r\ntg:{org}:k\r\n$1\r\n1\r\n")
    }

    @Test func readerParsesRepliesSplitAcrossFeeds() throws {
        let reader = try #require(redisReaderCreate())
        defer { redisReaderFree(reader) }
        let wire = Array("*2\r\n:42\r\n$5\r\nhello\r\n".utf8)
        var reply: UnsafeMutableRawPointer?
        for (index, byte) in wire.enumerated() {
            var one = CChar(bitPattern: byte)
            #expect(redisReaderFeed(reader, &one, 1) == REDIS_OK)
            #expect(redisReaderGetReply(reader, &reply) == REDIS_OK)
            if index < wire.count - 1 { #expect(reply == nil) }
        }
        let root = try #require(reply).assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(reply) }
        #expect(root.pointee.type == REDIS_REPLY_ARRAY)
        #expect(root.pointee.elements == 2)
        #expect(root.pointee.element[0]!.pointee.integer == 42)
        #expect(String(cString: root.pointee.element[1]!.pointee.str) == "hello")
    }

    @Test func readerReportsAProtocolError() throws {
        let reader = try #require(redisReaderCreate())
        defer { redisReaderFree(reader) }
        var garbage = Array("?nonsense\r\n".utf8).map { CChar(bitPattern: $0) }
        _ = redisReaderFeed(reader, &garbage, garbage.count)
        var reply: UnsafeMutableRawPointer?
        #expect(redisReaderGetReply(reader, &reply) == REDIS_ERR)
        #expect(CHiredis_readerHasError(reader) != 0)
        let message = String(cString: try #require(CHiredis_readerErrorString(reader)))
        #expect(message.contains("Protocol error"))
    }
}
