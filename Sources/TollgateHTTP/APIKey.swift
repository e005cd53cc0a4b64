import HTTPTypes

/// An API key as a client sent it: the secret itself. It never prints (`description` is redacted), so it
/// cannot end up in a log line or an error message by accident; resolvers hash it (`bytes`) and look the
/// hash up.
public struct APIKey: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The longest key accepted, in bytes; longer ones are refused without a lookup.
    public static let maximumLength = 256

    /// The key's bytes: 1 to `maximumLength` characters of the RFC 6750 `b64token` alphabet.
    public let bytes: [UInt8]

    /// A key from text a caller already holds (tests, tools); nil when it is not a well-formed key.
    public init?(_ text: String) {
        guard case .valid = Self.validate(text.utf8) else { return nil }
        bytes = Array(text.utf8)
    }

    init(validatedBytes: [UInt8]) {
        bytes = validatedBytes
    }

    public var description: String { "APIKey(<redacted>)" }
    public var debugDescription: String { description }

    /// Compares the key with `other` in time that depends only on the lengths, never on where the two
    /// first differ, so that response times cannot be used to guess a key byte by byte.
    public func constantTimeEquals(_ other: String) -> Bool {
        ConstantTime.equals(bytes, Array(other.utf8))
    }

    enum Validity: Equatable {
        case valid
        case tooLong
        case invalidCharacters
        case empty
    }

    /// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`, at most
    /// `maximumLength` bytes. Anything else — spaces, quotes, control or non-ASCII bytes — is malformed.
    static func validate(_ bytes: some Collection<UInt8>) -> Validity {
        if bytes.isEmpty { return .empty }
        if bytes.count > maximumLength { return .tooLong }
        var seenPadding = false
        var body = 0
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "="):
                seenPadding = true
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"), UInt8(ascii: "+"), UInt8(ascii: "/"):
                if seenPadding { return .invalidCharacters }
                body += 1
            default:
                return .invalidCharacters
            }
        }
        return body > 0 ? .valid : .invalidCharacters
    }
}

/// Comparison of secrets in time independent of their contents.
public enum ConstantTime {
    /// True when `a` and `b` hold the same bytes. Runs over every byte of the longer input whatever they
    /// hold; only the lengths (which are not secret here: keys and digests have public sizes) show.
    public static func equals(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
        var difference: UInt8 = a.count == b.count ? 0 : 1
        var left = a.makeIterator()
        var right = b.makeIterator()
        for _ in 0..<max(a.count, b.count) {
            let x = left.next() ?? 0
            let y = right.next() ?? 0
            difference |= x ^ y
        }
        return difference == 0
    }
}

/// What a request carries by way of credentials.
public enum APIKeyExtraction: Sendable {
    /// Neither `Authorization` nor `wazzapi-api-key` is present.
    case missing
    /// Something is present but is not a usable key; nothing was looked up.
    case malformed(APIKeyMalformation)
    /// A well-formed key, still to be looked up.
    case present(APIKey)
}

/// Why credentials were refused without a lookup (shown to the client in `error_description`).
public enum APIKeyMalformation: String, Error, Sendable, Equatable {
    case notBearer = "the Authorization header must use the Bearer scheme"
    case empty = "the key is empty"
    case tooLong = "the key is longer than 256 bytes"
    case invalidCharacters = "the key holds characters that no key has"
    case repeated = "the key header appears more than once"
    case conflicting = "Authorization and wazzapi-api-key carry different keys"
}

/// Finds the API key of a request: `Authorization: Bearer <key>` (REST clients) or `wazzapi-api-key: <key>`
/// (MCP clients).
///
/// Choices a mature gateway makes, written down: a header repeated is refused (two keys are ambiguous);
/// both headers may be sent only with the same key; an `Authorization` header of another scheme (Basic…)
/// is ignored when `wazzapi-api-key` is present and refused otherwise; the Bearer scheme name is
/// case-insensitive and may be followed by several spaces; keys are never trimmed of anything else.
public enum APIKeyExtractor {
    /// The header MCP clients send their key in.
    public static let keyHeader = HTTPField.Name("wazzapi-api-key")!

    public static func extract(from fields: HTTPFields) -> APIKeyExtraction {
        let authorizations = fields[values: .authorization]
        let keyHeaders = fields[values: keyHeader]
        if authorizations.count > 1 || keyHeaders.count > 1 { return .malformed(.repeated) }

        var bearer: Result<[UInt8], APIKeyMalformation>?
        if let authorization = authorizations.first {
            bearer = bearerToken(authorization)
        }
        var custom: Result<[UInt8], APIKeyMalformation>?
        if let value = keyHeaders.first {
            custom = checked(Array(value.utf8))
        }
        switch (bearer, custom) {
        case (nil, nil):
            return .missing
        case (.some(.failure(.notBearer)), .some(let result)), (nil, .some(let result)), (.some(let result), nil):
            switch result {
            case .success(let bytes): return .present(APIKey(validatedBytes: bytes))
            case .failure(let why): return .malformed(why)
            }
        case (.some(.failure(let why)), .some):
            return .malformed(why)
        case (.some(.success), .some(.failure(let why))):
            return .malformed(why)
        case (.some(.success(let a)), .some(.success(let b))):
            return ConstantTime.equals(a, b) ? .present(APIKey(validatedBytes: a)) : .malformed(.conflicting)
        }
    }

    static func bearerToken(_ value: String) -> Result<[UInt8], APIKeyMalformation> {
        let bytes = Array(value.utf8)
        let scheme = Array("bearer".utf8)
        guard bytes.count > scheme.count,
            zip(bytes.prefix(scheme.count), scheme).allSatisfy({ $0 | 0x20 == $1 }),
            bytes[scheme.count] == UInt8(ascii: " ")
        else {
            if bytes.count == scheme.count, zip(bytes, scheme).allSatisfy({ $0 | 0x20 == $1 }) { return .failure(.empty) }
            return .failure(.notBearer)
        }
        let token = bytes[scheme.count...].drop { $0 == UInt8(ascii: " ") }
        return checked(Array(token))
    }

    static func checked(_ bytes: [UInt8]) -> Result<[UInt8], APIKeyMalformation> {
        switch APIKey.validate(bytes) {
        case .valid: .success(bytes)
        case .empty: .failure(.empty)
        case .tooLong: .failure(.tooLong)
        case .invalidCharacters: .failure(.invalidCharacters)
        }
    }
}
