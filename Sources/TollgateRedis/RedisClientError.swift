/// The one error type of `TollgateRedis`: a code to switch on, a message for people and, where there is
/// one, the error underneath.
///
/// Messages never contain command arguments (they may hold API key hashes); a server error message is
/// the server's own text, with any echo of arguments cut off.
public struct RedisClientError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, extensible without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case timeout
            case connectionClosed
            case overloaded
            case protocolError
            case serverError
            case notConnected
            case connectFailed
            case invalidConfiguration
            case invalidCommand
            case shutdown
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        public var description: String { base.rawValue }

        /// No reply came within the command timeout. The command may have run; it is never replayed.
        public static var timeout: Self { Self(.timeout) }
        /// The connection closed (or was closed) while the command waited. The command may have run;
        /// it is never replayed.
        public static var connectionClosed: Self { Self(.connectionClosed) }
        /// Too many commands are waiting on the connection; this one was not sent.
        public static var overloaded: Self { Self(.overloaded) }
        /// The bytes from the server are not valid RESP, or a reply came with no command waiting.
        public static var protocolError: Self { Self(.protocolError) }
        /// The server answered with an error reply (`ERR`, `NOSCRIPT`, `WRONGTYPE`, `NOAUTH`, …).
        public static var serverError: Self { Self(.serverError) }
        /// No connection is up (the client is reconnecting, or not running); the command was not sent.
        public static var notConnected: Self { Self(.notConnected) }
        /// Connecting, the TLS handshake, authenticating or selecting the database failed.
        public static var connectFailed: Self { Self(.connectFailed) }
        /// A `RedisConfiguration` field is out of range.
        public static var invalidConfiguration: Self { Self(.invalidConfiguration) }
        /// The command cannot be encoded (for example, it has no arguments).
        public static var invalidCommand: Self { Self(.invalidCommand) }
        /// The client has been shut down.
        public static var shutdown: Self { Self(.shutdown) }
    }

    /// What went wrong.
    public var code: Code
    /// What happened and, where it helps, what to do about it.
    public var message: String
    /// The error underneath, when there is one (a socket error, the server's error reply, …).
    public var underlying: (any Error)?
    /// For `.invalidConfiguration`: the `RedisConfiguration` field at fault, such as `connections` or
    /// `tls.caFile`, so that a caller that reads its own configuration format can name its own field.
    public var field: String?

    public init(_ code: Code, message: String, underlying: (any Error)? = nil, field: String? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
        self.field = field
    }

    public var description: String {
        if let underlying {
            return "Redis \(code): \(message) (\(underlying))"
        }
        return "Redis \(code): \(message)"
    }

    /// For a `.serverError`, the server's error prefix: the first word of its message, such as `ERR`,
    /// `NOSCRIPT`, `WRONGTYPE` or `NOAUTH`.
    public var serverErrorPrefix: Substring? {
        guard code == .serverError else { return nil }
        return message.split(separator: " ", maxSplits: 1).first
    }

    /// Whether a command that failed this way is known not to have run, so that sending it again is safe.
    /// Only errors raised before anything was written qualify.
    public var commandWasNotSent: Bool {
        code == .overloaded || code == .notConnected || code == .invalidCommand || code == .shutdown
            || code == .invalidConfiguration
    }
}

extension RedisClientError {
    /// The error for a `RedisConfiguration` field out of range: which field, what was expected, what was found.
    static func invalidField(_ field: String, of type: String = "RedisConfiguration", expected: String, found: String) -> RedisClientError {
        RedisClientError(.invalidConfiguration, message: "\(type).\(field) must be \(expected), found \(found)", field: field)
    }

    /// The error for a server error reply. Some servers echo the arguments of an unknown command
    /// (`ERR unknown command 'X', with args beginning with: …`); that part is dropped so that arguments
    /// never reach an error message or a log line.
    static func server(_ message: String) -> RedisClientError {
        RedisClientError(.serverError, message: sanitizedServerMessage(message))
    }

    static func sanitizedServerMessage(_ message: String) -> String {
        let marker = ", with args beginning with:"
        var index = message.startIndex
        while index < message.endIndex {
            if message[index...].hasPrefix(marker) {
                return String(message[..<index])
            }
            index = message.index(after: index)
        }
        return message
    }
}
