/// The request methods the data path treats apart; every other token is `.other`.
enum HTTP1Method: Equatable, Sendable {
    case get, head, post, put, delete, options, patch, trace, connect, other

    static func read(_ range: Range<Int>, in bytes: UnsafeRawBufferPointer) -> HTTP1Method {
        // Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET.
        func equals(_ name: StaticString) -> Bool {
            guard range.count == name.utf8CodeUnitCount else { return false }
            return zip(range, 0..<range.count).allSatisfy { bytes[$0] == name.utf8Start[$1] }
        }
        switch range.count {
        case 3: return equals("GET") ? .get : equals("PUT") ? .put : .other
        case 4: return equals("POST") ? .post : equals("HEAD") ? .head : .other
        case 5: return equals("PATCH") ? .patch : equals("TRACE") ? .trace : .other
        case 6: return equals("DELETE") ? .delete : .other
        case 7: return equals("OPTIONS") ? .options : equals("CONNECT") ? .connect : .other
        default: return .other
        }
    }
}

/// A request head that parsed, as offsets into the bytes it was read from (the head's first byte is
/// offset 0): what the data path needs to decide and forward it, with no copy of its text.
struct RequestHead: Equatable, Sendable {
    var method: HTTP1Method
    var methodRange: Range<Int>
    var target: Range<Int>
    var version: HTTP1Version
    /// Where the request line starts (after the empty lines a client may send between requests).
    var start: Int
    /// The field lines, each with its CRLF, without the empty line that ends the head.
    var fields: Range<Int>
    /// The head's size in bytes, up to and including the empty line: the body starts here.
    var length: Int
    var body: BodyFraming
    /// The connection stays open after this request's answer.
    var keepAlive: Bool
    /// `Expect: 100-continue`.
    var expectsContinue: Bool
    /// `Connection: upgrade` with an `Upgrade` field: a protocol switch (WebSocket) is asked for.
    var upgrade: Bool
    /// The `Host` field's value, when present.
    var host: Range<Int>?
    /// The values of the fields that carry an API key, when present (the last one of a repeated field).
    var authorization: Range<Int>?
    var apiKeyField: Range<Int>?
    /// One of the fields that carry an API key appears more than once.
    var credentialsRepeated = false
}

/// An incremental, strict parser of HTTP/1.1 request heads (RFC 9112) over the bytes of a connection.
///
/// It is given the connection's unread bytes again as more arrive, from the same first byte, and goes
/// on where it stopped: complete lines are read once. It refuses what request smuggling and response
/// splitting use — duplicate or conflicting `Content-Length`, `Content-Length` with
/// `Transfer-Encoding`, a transfer coding other than one final `chunked`, obs-fold, whitespace before a
/// colon, bare LF or CR, a missing or repeated `Host` — and heads or bodies over the limits, with the
/// status the client is to be answered with (400, 413, 414, 431, 501, 505). A refused head is never
/// forwarded, and nothing of it is kept but its offsets.
struct RequestHeadParser: Sendable {
    /// The sizes a request may have.
    struct Limits: Equatable, Sendable {
        /// The request line and the fields, with every CRLF (`server.max_header_size`).
        var maxHeadSize: Int
        /// The request line alone; a longer one is answered 414.
        var maxRequestLine: Int
        /// A declared `Content-Length` above this is answered 413 (`server.max_body_size`).
        var maxBodySize: Int

        init(maxHeadSize: Int = 32 * 1024, maxRequestLine: Int = 8 * 1024, maxBodySize: Int = 1024 * 1024) {
            self.maxHeadSize = maxHeadSize
            self.maxRequestLine = maxRequestLine
            self.maxBodySize = maxBodySize
        }
    }

    enum Outcome: Equatable, Sendable {
        case needMore
        case head(RequestHead)
        case failed(HTTP1Error)
    }

    private enum Phase: Equatable {
        case reading
        /// The head has been read; it is given again until `reset()`.
        case complete
        case failed(HTTP1Error)
    }

    let limits: Limits
    private var phase = Phase.reading
    private var reader: HeadReader
    private var head: RequestHead
    private var framing = FramingFields()
    private var hosts = 0
    private var hostIsValid = true

    init(limits: Limits = Limits()) {
        self.limits = limits
        reader = HeadReader(maxHeadSize: limits.maxHeadSize, maxStartLine: limits.maxRequestLine, startLineTooLong: .targetTooLong)
        head = Self.emptyHead
    }

    private static let emptyHead = RequestHead(
        method: .other, methodRange: 0..<0, target: 0..<0, version: .http11, start: 0, fields: 0..<0, length: 0, body: .none,
        keepAlive: true, expectsContinue: false, upgrade: false)

    /// Gets ready for the next request on the connection, whose first byte will be offset 0.
    mutating func reset() {
        self = RequestHeadParser(limits: limits)
    }

    /// Reads on in `bytes`, which start with the head's first byte and hold at least every byte given
    /// before.
    mutating func parse(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        switch phase {
        case .failed(let error): return .failed(error)
        case .complete: return .head(head)
        case .reading: break
        }
        while true {
            switch reader.next(in: bytes) {
            case .needMore:
                return .needMore
            case .failed(let error):
                return fail(error)
            case .startLine(let line):
                if let error = readRequestLine(line, in: bytes) { return fail(error) }
            case .field(let name, let value):
                if let error = readField(name: name, value: value, in: bytes) { return fail(error) }
            case .end(let length, let fields):
                head.length = length
                head.fields = fields
                return finish()
            }
        }
    }

    private mutating func fail(_ error: HTTP1Error) -> Outcome {
        phase = .failed(error)
        return .failed(error)
    }

    private mutating func readRequestLine(_ line: Range<Int>, in bytes: UnsafeRawBufferPointer) -> HTTP1Error? {
        var index = line.lowerBound
        while index < line.upperBound, HTTP1Byte.isTokenChar(bytes[index]) { index += 1 }
        guard index > line.lowerBound, index < line.upperBound, bytes[index] == HTTP1Byte.space else { return .invalidRequestLine }
        let method = line.lowerBound..<index
        index += 1
        let targetStart = index
        // Visible ASCII only: no whitespace, no control character, no obs-text (RFC 3986 has none).
        while index < line.upperBound, bytes[index] > 0x20, bytes[index] < 0x7F { index += 1 }
        guard index > targetStart, index < line.upperBound, bytes[index] == HTTP1Byte.space else { return .invalidRequestLine }
        let target = targetStart..<index
        index += 1
        guard index + 8 == line.upperBound, let version = HTTP1Version.read(bytes, at: index) else { return .invalidRequestLine }
        switch version {
        case .failure(let error): return error
        case .success(let version): head.version = version
        }
        head.start = line.lowerBound
        head.methodRange = method
        head.method = HTTP1Method.read(method, in: bytes)
        head.target = target
        return Self.targetFits(head.method, target, in: bytes) ? nil : .invalidTarget
    }

    /// The request-target's form (RFC 9112 §3.2): origin-form, absolute-form, `*` for OPTIONS only, and
    /// authority-form for CONNECT only.
    private static func targetFits(_ method: HTTP1Method, _ target: Range<Int>, in bytes: UnsafeRawBufferPointer) -> Bool {
        let first = bytes[target.lowerBound]
        if method == .connect { return first != UInt8(ascii: "/") && first != UInt8(ascii: "*") }
        if first == UInt8(ascii: "/") { return true }
        if first == UInt8(ascii: "*") { return method == .options && target.count == 1 }
        let scheme = target.lowerBound..<min(target.upperBound, target.lowerBound + 8)
        return bytes.equalsIgnoringCase(scheme, "https://")
            || bytes.equalsIgnoringCase(scheme.lowerBound..<min(scheme.upperBound, scheme.lowerBound + 7), "http://")
    }

    private mutating func readField(name: Range<Int>, value: Range<Int>, in bytes: UnsafeRawBufferPointer) -> HTTP1Error? {
        if let error = framing.take(name: name, value: value, in: bytes) { return error }
        switch name.count {
        case 4 where bytes.equalsIgnoringCase(name, "host"):
            hosts += 1
            head.host = value
            hostIsValid = value.allSatisfy { Self.isHostByte(bytes[$0]) }
        case 6 where bytes.equalsIgnoringCase(name, "expect"):
            head.expectsContinue = bytes.equalsIgnoringCase(value, "100-continue")
        case 13 where bytes.equalsIgnoringCase(name, "authorization"):
            if head.authorization != nil { head.credentialsRepeated = true }
            head.authorization = value
        case 15 where bytes.equalsIgnoringCase(name, "wazzapi-api-key"):
            if head.apiKeyField != nil { head.credentialsRepeated = true }
            head.apiKeyField = value
        default:
            break
        }
        return nil
    }

    /// `uri-host [ ":" port ]` (RFC 3986): reg-name, IP literal and port characters.
    private static func isHostByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "!"), UInt8(ascii: "$"),
            UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"), UInt8(ascii: "+"),
            UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: ":"), UInt8(ascii: "["), UInt8(ascii: "]"),
            UInt8(ascii: "%"):
            true
        default:
            false
        }
    }

    private mutating func finish() -> Outcome {
        if hosts > 1 { return fail(.duplicateHost) }
        if hosts == 0, head.version == .http11 { return fail(.missingHost) }
        if !hostIsValid { return fail(.invalidHost) }
        if framing.transferEncodingFields > 0 {
            if framing.contentLengthFields > 0 { return fail(.contentLengthWithTransferEncoding) }
            if head.version == .http10 { return fail(.transferEncodingInHTTP10) }
            switch framing.transferCodingFraming(untilCloseAllowed: false) {
            case .failure(let error): return fail(error)
            case .success(let framing): head.body = framing
            }
        } else if let length = framing.contentLength {
            if length > limits.maxBodySize { return fail(.bodyTooLarge) }
            head.body = length == 0 ? .none : .length(length)
        } else {
            head.body = .none
        }
        if head.method == .trace, head.body != .none { return fail(.traceWithBody) }
        head.keepAlive = framing.keepsAlive(head.version)
        head.upgrade = framing.upgradeToken && framing.upgradeField
        phase = .complete
        return .head(head)
    }
}
