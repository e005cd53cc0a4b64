import CHiredis
import NIOCore

/// Decodes RESP replies with hiredis' reader: bytes go in as they arrive, whole replies come out.
///
/// hiredis parses; what it builds is ours. The reader is created with `redisReaderCreateWithFunctions`
/// and object functions that append each value hiredis hands over (an array header, an integer, a string,
/// a nil) to a flat tape in the order it parses them, instead of allocating one `redisReply` per value
/// and freeing the tree afterwards. When the reader reports a whole reply, the tape holds it in pre-order
/// and becomes one `RedisReply`.
///
/// Not thread-safe; owned by one channel handler on its event loop. A reply split across any number of
/// reads is returned once its last byte has been fed.
final class RESPReplyDecoder {
    private let reader: UnsafeMutablePointer<redisReader>
    private let tape: UnsafeMutablePointer<ReplyTape>

    init() throws(RedisClientError) {
        guard let reader = redisReaderCreateWithFunctions(ReplyTape.functions) else {
            throw RedisClientError(.protocolError, message: "hiredis could not create a reply reader (out of memory)")
        }
        self.reader = reader
        tape = .allocate(capacity: 1)
        tape.initialize(to: ReplyTape())
        reader.pointee.privdata = UnsafeMutableRawPointer(tape)
    }

    deinit {
        redisReaderFree(reader)
        tape.pointee.release()
        tape.deinitialize(count: 1)
        tape.deallocate()
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
        guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
            tape.pointee.reset()
            throw readerError()
        }
        // Without a whole reply, the tape keeps what has been parsed so far; hiredis continues from there.
        guard raw != nil else { return nil }
        var cursor = 0
        let reply = tape.pointee.reply(at: &cursor)
        tape.pointee.reset()
        return reply
    }

    private func readerError() -> RedisClientError {
        let detail = CHiredis_readerErrorString(reader).map { String(cString: $0) } ?? "unknown reader error"
        return RedisClientError(.protocolError, message: "the server sent bytes that are not valid RESP: \(detail)")
    }
}

/// The values of the reply being parsed, in the order hiredis parsed them (pre-order), and the bytes of
/// its strings. Plain memory, reached from hiredis' callbacks through the reader's `privdata`.
struct ReplyTape {
    struct Node {
        /// `REDIS_REPLY_*`.
        var type: Int32
        /// The integer, the number of elements of an array, or the length of a string.
        var value: Int64
        /// Where a string's bytes start in `bytes`.
        var offset: Int
    }

    private var nodes: UnsafeMutablePointer<Node>
    private var nodeCount = 0
    private var nodeCapacity = 16
    private var bytes: UnsafeMutableRawPointer
    private var byteCount = 0
    private var byteCapacity = 256

    init() {
        nodes = .allocate(capacity: nodeCapacity)
        bytes = .allocate(byteCount: byteCapacity, alignment: 1)
    }

    func release() {
        nodes.deallocate()
        bytes.deallocate()
    }

    /// Forgets the values of the last reply (keeping memory, unless a huge reply grew it).
    mutating func reset() {
        nodeCount = 0
        byteCount = 0
        if byteCapacity > 1 << 20 {
            bytes.deallocate()
            byteCapacity = 256
            bytes = .allocate(byteCount: byteCapacity, alignment: 1)
        }
        if nodeCapacity > 1 << 16 {
            nodes.deallocate()
            nodeCapacity = 16
            nodes = .allocate(capacity: nodeCapacity)
        }
    }

    /// Appends a value; returns the non-null token hiredis keeps as "the object" (never dereferenced).
    @inline(__always)
    mutating func append(type: Int32, value: Int64, string: UnsafeRawBufferPointer? = nil) -> UnsafeMutableRawPointer? {
        if nodeCount == nodeCapacity {
            let grown = UnsafeMutablePointer<Node>.allocate(capacity: nodeCapacity * 2)
            grown.moveInitialize(from: nodes, count: nodeCount)
            nodes.deallocate()
            nodes = grown
            nodeCapacity *= 2
        }
        var offset = 0
        if let string, let base = string.baseAddress, string.count > 0 {
            if byteCount + string.count > byteCapacity {
                var capacity = byteCapacity * 2
                while capacity < byteCount + string.count { capacity *= 2 }
                let grown = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 1)
                grown.copyMemory(from: bytes, byteCount: byteCount)
                bytes.deallocate()
                bytes = grown
                byteCapacity = capacity
            }
            offset = byteCount
            (bytes + byteCount).copyMemory(from: base, byteCount: string.count)
            byteCount += string.count
        }
        (nodes + nodeCount).initialize(to: Node(type: type, value: value, offset: offset))
        nodeCount += 1
        return UnsafeMutableRawPointer(bitPattern: nodeCount)
    }

    /// The reply whose first value is at `cursor`; moves `cursor` past it.
    func reply(at cursor: inout Int) -> RedisReply {
        let node = nodes[cursor]
        cursor += 1
        switch node.type {
        case REDIS_REPLY_INTEGER:
            return .integer(node.value)
        case REDIS_REPLY_STRING:
            return .bulkString(ByteBuffer(bytes: UnsafeRawBufferPointer(start: bytes + node.offset, count: Int(node.value))))
        case REDIS_REPLY_STATUS:
            return .status(text(node))
        case REDIS_REPLY_ERROR:
            return .error(text(node))
        case REDIS_REPLY_ARRAY:
            let count = Int(node.value)
            var elements: [RedisReply] = []
            elements.reserveCapacity(count)
            for _ in 0..<count {
                elements.append(reply(at: &cursor))
            }
            return .array(elements)
        default:
            // REDIS_REPLY_NIL: the null bulk string or the null array.
            return .null
        }
    }

    private func text(_ node: Node) -> String {
        String(decoding: UnsafeRawBufferPointer(start: bytes + node.offset, count: Int(node.value)), as: UTF8.self)
    }

    // MARK: hiredis object functions

    /// The object functions handed to `redisReaderCreateWithFunctions` (hiredis keeps the pointer).
    nonisolated(unsafe) static let functions: UnsafeMutablePointer<redisReplyObjectFunctions> = {
        let functions = UnsafeMutablePointer<redisReplyObjectFunctions>.allocate(capacity: 1)
        functions.initialize(
            to: redisReplyObjectFunctions(
                createString: { task, string, length in
                    guard let task else { return nil }
                    return tape(task).pointee.append(
                        type: task.pointee.type, value: Int64(length),
                        string: UnsafeRawBufferPointer(start: string, count: length))
                },
                createArray: { task, count in
                    guard let task else { return nil }
                    return tape(task).pointee.append(type: REDIS_REPLY_ARRAY, value: Int64(count))
                },
                createInteger: { task, value in
                    guard let task else { return nil }
                    return tape(task).pointee.append(type: REDIS_REPLY_INTEGER, value: Int64(value))
                },
                createNil: { task in
                    guard let task else { return nil }
                    return tape(task).pointee.append(type: REDIS_REPLY_NIL, value: 0)
                },
                freeObject: { _ in
                    // The values live in the tape, which the decoder resets and frees.
                }
            ))
        return functions
    }()

    /// The tape of the reader that runs `task` (its `privdata`, which hiredis copies into every task).
    @inline(__always)
    private static func tape(_ task: UnsafePointer<redisReadTask>) -> UnsafeMutablePointer<ReplyTape> {
        task.pointee.privdata.unsafelyUnwrapped.assumingMemoryBound(to: ReplyTape.self)
    }
}
