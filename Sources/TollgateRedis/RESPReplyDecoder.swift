import CHiredis
import NIOCore

/// Decodes RESP replies with hiredis' reader: bytes go in as they arrive, whole replies come out.
///
/// Not thread-safe; owned by one channel handler on its event loop. A reply split across any number of
/// reads is returned once its last byte has been fed.
final class RESPReplyDecoder {
    private let reader: UnsafeMutablePointer<redisReader>

    init() throws(RedisClientError) {
        guard let reader = redisReaderCreate() else {
            throw RedisClientError(.protocolError, message: "hiredis could not create a reply reader (out of memory)")
        }
        self.reader = reader
    }

    deinit {
        redisReaderFree(reader)
    }

    /// Hands the readable bytes of `buffer` to the reader.
    func feed(_ buffer: ByteBuffer) throws(RedisClientError) {
        let status = buffer.withUnsafeReadableBytes { bytes in
            bytes.withMemoryRebound(to: CChar.self) { characters in
                redisReaderFeed(reader, characters.baseAddress, characters.count)
            }
        }
        guard status == REDIS_OK else { throw readerError() }
    }

    /// The next complete reply, or `nil` when more bytes are needed.
    func next() throws(RedisClientError) -> RedisReply? {
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &raw) == REDIS_OK else { throw readerError() }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return Self.convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    private func readerError() -> RedisClientError {
        let detail = CHiredis_readerErrorString(reader).map { String(cString: $0) } ?? "unknown reader error"
        return RedisClientError(.protocolError, message: "the server sent bytes that are not valid RESP: \(detail)")
    }

    /// Copies a hiredis reply tree into a `RedisReply`; the caller frees the tree. hiredis 0.14 caps
    /// nesting at 7 levels, so the recursion is shallow.
    private static func convert(_ reply: UnsafePointer<redisReply>) -> RedisReply {
        let node = reply.pointee
        switch node.type {
        case REDIS_REPLY_STRING:
            return .bulkString(ByteBuffer(bytes: UnsafeRawBufferPointer(start: node.str, count: node.len)))
        case REDIS_REPLY_STATUS:
            return .status(text(node))
        case REDIS_REPLY_ERROR:
            return .error(text(node))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(node.integer))
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_ARRAY:
            var elements: [RedisReply] = []
            elements.reserveCapacity(node.elements)
            for index in 0..<node.elements {
                if let element = node.element[index] {
                    elements.append(convert(element))
                } else {
                    elements.append(.null)
                }
            }
            return .array(elements)
        default:
            // hiredis 0.14 creates no other types; treat anything else as null rather than trap.
            return .null
        }
    }

    private static func text(_ node: redisReply) -> String {
        String(decoding: UnsafeRawBufferPointer(start: node.str, count: node.len), as: UTF8.self)
    }
}
