import NIOCore

/// One reply from Redis (RESP2), decoded by hiredis' reader.
///
/// An error reply to a command fails that command with a `RedisClientError` of code `.serverError`;
/// `.error` appears only nested inside an array (for example in the result of `EXEC`).
public enum RedisReply: Sendable, Hashable {
    /// A bulk string, as raw bytes.
    case bulkString(ByteBuffer)
    /// A simple status string, such as `OK` or `PONG`.
    case status(String)
    /// An integer.
    case integer(Int64)
    /// An array of replies, possibly nested.
    case array([RedisReply])
    /// The null bulk string or the null array.
    case null
    /// An error reply nested in an array.
    case error(String)
}

extension RedisReply {
    /// The text of a bulk string (decoded as UTF-8) or of a status; `nil` for anything else.
    public var string: String? {
        switch self {
        case .bulkString(let bytes): String(buffer: bytes)
        case .status(let text): text
        default: nil
        }
    }

    /// The bytes of a bulk string; `nil` for anything else.
    public var bytes: ByteBuffer? {
        if case .bulkString(let bytes) = self { return bytes }
        return nil
    }

    /// The value of an integer reply, or of a bulk string that holds a decimal integer (as `GET` returns
    /// for a counter); `nil` for anything else.
    public var int64: Int64? {
        switch self {
        case .integer(let value): value
        case .bulkString(let bytes): Int64(String(buffer: bytes))
        default: nil
        }
    }

    /// The elements of an array; `nil` for anything else.
    public var array: [RedisReply]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// Whether this is the null reply.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

extension RedisReply: CustomStringConvertible {
    /// A short rendering for diagnostics: bulk strings show their length only, never their content.
    public var description: String {
        switch self {
        case .bulkString(let bytes): "bulkString(\(bytes.readableBytes) bytes)"
        case .status(let text): "status(\(text))"
        case .integer(let value): "integer(\(value))"
        case .array(let elements): "array(\(elements.map(\.description).joined(separator: ", ")))"
        case .null: "null"
        case .error(let message): "error(\(RedisClientError.sanitizedServerMessage(message)))"
        }
    }
}
