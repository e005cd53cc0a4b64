import NIOCore

/// One argument of a Redis command: text or raw bytes.
///
/// String literals and integer literals convert implicitly, so `["SET", "key", "1"]` is a command.
public struct RedisArgument: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    enum Storage: Sendable, Hashable {
        case string(String)
        case bytes(ByteBuffer)
    }

    let storage: Storage

    /// A text argument, sent as its UTF-8 bytes.
    public init(_ string: some StringProtocol) {
        self.storage = .string(String(string))
    }

    /// A binary argument, sent as the buffer's readable bytes.
    public init(_ bytes: ByteBuffer) {
        self.storage = .bytes(bytes)
    }

    /// An integer argument, sent in decimal.
    public init(_ integer: some BinaryInteger) {
        self.storage = .string(String(integer))
    }

    public init(stringLiteral value: String) {
        self.storage = .string(value)
    }

    public init(integerLiteral value: Int) {
        self.storage = .string(String(value))
    }

    /// The number of bytes this argument takes on the wire (without framing).
    var byteCount: Int {
        switch storage {
        case .string(let string): string.utf8.count
        case .bytes(let bytes): bytes.readableBytes
        }
    }

    func append(to bytes: inout [UInt8]) {
        switch storage {
        case .string(let string): bytes.append(contentsOf: string.utf8)
        case .bytes(let buffer): bytes.append(contentsOf: buffer.readableBytesView)
        }
    }
}
