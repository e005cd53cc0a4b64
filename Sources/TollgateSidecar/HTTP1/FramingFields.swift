/// How a message's body is delimited (RFC 9112 §6.3).
enum BodyFraming: Equatable, Sendable {
    /// No body at all.
    case none
    /// Exactly this many bytes.
    case length(Int)
    case chunked
    /// Everything until the sender closes the connection (responses only).
    case untilClose
}

/// The HTTP version of a message: 1.0 or 1.1 (a higher 1.x minor version is served as 1.1).
enum HTTP1Version: Equatable, Sendable {
    case http10
    case http11

    /// Reads `HTTP/1.x` at `start`; nil when the bytes are no HTTP version, `.failure` for a major
    /// version other than 1.
    static func read(_ bytes: UnsafeRawBufferPointer, at start: Int) -> Result<HTTP1Version, HTTP1Error>? {
        guard start + 8 <= bytes.count, bytes[start] == UInt8(ascii: "H"), bytes[start + 1] == UInt8(ascii: "T"),
            bytes[start + 2] == UInt8(ascii: "T"), bytes[start + 3] == UInt8(ascii: "P"), bytes[start + 4] == UInt8(ascii: "/"),
            bytes[start + 6] == UInt8(ascii: ".")
        else { return nil }
        let major = bytes[start + 5] &- UInt8(ascii: "0")
        let minor = bytes[start + 7] &- UInt8(ascii: "0")
        guard major < 10, minor < 10 else { return nil }
        guard major == 1 else { return .failure(.unsupportedVersion) }
        return .success(minor == 0 ? .http10 : .http11)
    }
}

/// What a head's fields say about its message's framing and its connection, gathered one field at a
/// time by the request parser and the response scanner alike.
struct FramingFields: Equatable, Sendable {
    var contentLength: Int?
    var contentLengthFields = 0
    var transferEncodingFields = 0
    /// Transfer codings listed, over every `Transfer-Encoding` field.
    var codings = 0
    var chunkedCodings = 0
    var lastCodingIsChunked = false
    /// `Connection` tokens.
    var close = false
    var keepAlive = false
    var upgradeToken = false
    /// An `Upgrade` field is present.
    var upgradeField = false

    /// Takes in one field: nil when it is none of the framing fields or its value is acceptable, else
    /// the rule it breaks.
    mutating func take(name: Range<Int>, value: Range<Int>, in bytes: UnsafeRawBufferPointer) -> HTTP1Error? {
        switch name.count {
        case 14 where bytes.equalsIgnoringCase(name, "content-length"):
            contentLengthFields += 1
            guard contentLengthFields == 1 else { return .duplicateContentLength }
            guard let length = bytes.decimal(value) else { return .invalidContentLength }
            contentLength = length
        case 17 where bytes.equalsIgnoringCase(name, "transfer-encoding"):
            transferEncodingFields += 1
            var valid = !value.isEmpty
            bytes.forEachListElement(value) { coding in
                codings += 1
                // A coding with parameters is never the bare `chunked`.
                if bytes.equalsIgnoringCase(coding, "chunked") {
                    chunkedCodings += 1
                    lastCodingIsChunked = true
                } else {
                    lastCodingIsChunked = false
                    // Other codings are refused later; only their shape matters here.
                    if !HTTP1Byte.isTokenChar(bytes[coding.lowerBound]) { valid = false }
                }
            }
            if !valid || codings == 0 { return .chunkedNotFinal }
        case 10 where bytes.equalsIgnoringCase(name, "connection"):
            bytes.forEachListElement(value) { token in
                if bytes.equalsIgnoringCase(token, "close") {
                    close = true
                } else if bytes.equalsIgnoringCase(token, "keep-alive") {
                    keepAlive = true
                } else if bytes.equalsIgnoringCase(token, "upgrade") {
                    upgradeToken = true
                }
            }
        case 7 where bytes.equalsIgnoringCase(name, "upgrade"):
            upgradeField = true
        default:
            break
        }
        return nil
    }

    /// Whether the connection stays open after this message, by its version and `Connection` tokens.
    func keepsAlive(_ version: HTTP1Version) -> Bool {
        if close { return false }
        return version == .http11 || keepAlive
    }

    /// The framing the transfer codings give, once every field is in: chunked, or the rule broken.
    /// `untilCloseAllowed` (responses) turns a last coding other than chunked into a body read until close.
    func transferCodingFraming(untilCloseAllowed: Bool) -> Result<BodyFraming, HTTP1Error> {
        if chunkedCodings == 1, lastCodingIsChunked {
            return codings == 1 ? .success(.chunked) : .failure(.unsupportedTransferCoding)
        }
        if chunkedCodings == 0, untilCloseAllowed { return .success(.untilClose) }
        return .failure(.chunkedNotFinal)
    }
}

/// Reads one field line (RFC 9112 §5): a token, a colon, a value of field bytes; strict about what
/// request smuggling uses (whitespace before the colon, a line folded onto the previous one).
enum FieldLine {
    /// The name and the trimmed value of the field on `line`, or the rule it breaks.
    static func read(_ line: Range<Int>, in bytes: UnsafeRawBufferPointer) -> Result<(name: Range<Int>, value: Range<Int>), HTTP1Error> {
        let first = bytes[line.lowerBound]
        if HTTP1Byte.isWhitespace(first) { return .failure(.obsoleteLineFolding) }
        var index = line.lowerBound
        while index < line.upperBound, HTTP1Byte.isTokenChar(bytes[index]) { index += 1 }
        guard index < line.upperBound, index > line.lowerBound else { return .failure(.invalidFieldName) }
        let byte = bytes[index]
        if byte != HTTP1Byte.colon {
            return .failure(HTTP1Byte.isWhitespace(byte) ? .whitespaceBeforeColon : .invalidFieldName)
        }
        let name = line.lowerBound..<index
        let rawValue = (index + 1)..<line.upperBound
        for valueIndex in rawValue where !HTTP1Byte.isFieldValueByte(bytes[valueIndex]) {
            return .failure(.invalidFieldValue)
        }
        return .success((name, bytes.trimmingWhitespace(rawValue)))
    }
}
