/// An upstream response head, as offsets into the bytes it was read from: its status and how its body
/// is delimited, so that it can be relayed as bytes with fields inserted before its empty line.
struct ResponseHead: Equatable, Sendable {
    var status: Int
    var version: HTTP1Version
    /// The status line and the field lines, each with its CRLF: where fields can be appended.
    var fields: Range<Int>
    /// The head's size in bytes, up to and including the empty line: the body starts here.
    var length: Int
    var body: BodyFraming
    /// The upstream connection may carry another request after this response.
    var keepAlive: Bool
    /// The response carries a `Date` field (the proxy adds one otherwise).
    var hasDate: Bool

    /// A 1xx answer other than 101: another head follows it for the same request.
    var isInterim: Bool { status >= 100 && status < 200 && status != 101 }
    /// 101 Switching Protocols, or a 2xx answer to CONNECT: from here the connection is a tunnel.
    var opensTunnel = false
}

/// Scans an upstream's response head (RFC 9112 §4, §6.3) as its bytes arrive: the status, and where the
/// body ends given the request it answers — nothing for HEAD, 1xx, 204 and 304; `Content-Length`;
/// chunked; else until the upstream closes. Ambiguous framing (`Content-Length` twice or with
/// `Transfer-Encoding`, an invalid length) is refused: the proxy answers 502 rather than relay a
/// response its client could split differently.
struct ResponseHeadScanner: Sendable {
    enum Outcome: Equatable, Sendable {
        case needMore
        case head(ResponseHead)
        case failed(HTTP1Error)
    }

    let requestMethod: HTTP1Method
    private var reader: HeadReader
    private var status = 0
    private var version = HTTP1Version.http11
    private var framing = FramingFields()
    private var hasDate = false
    private var outcome: Outcome?

    init(requestMethod: HTTP1Method, maxHeadSize: Int = 64 * 1024) {
        self.requestMethod = requestMethod
        reader = HeadReader(maxHeadSize: maxHeadSize, maxStartLine: maxHeadSize, startLineTooLong: .headTooLarge)
    }

    /// Reads on in `bytes`, which start with the head's first byte and hold at least every byte given
    /// before.
    mutating func scan(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        if let outcome { return outcome }
        while true {
            switch reader.next(in: bytes) {
            case .needMore:
                return .needMore
            case .failed(let error):
                return settle(.failed(error))
            case .startLine(let line):
                if let error = readStatusLine(line, in: bytes) { return settle(.failed(error)) }
            case .field(let name, let value):
                if let error = framing.take(name: name, value: value, in: bytes) { return settle(.failed(error)) }
                if name.count == 4, bytes.equalsIgnoringCase(name, "date") { hasDate = true }
            case .end(let length, let fields):
                return settle(finish(length: length, fields: fields))
            }
        }
    }

    private mutating func settle(_ outcome: Outcome) -> Outcome {
        self.outcome = outcome
        return outcome
    }

    private mutating func readStatusLine(_ line: Range<Int>, in bytes: UnsafeRawBufferPointer) -> HTTP1Error? {
        // `HTTP/1.1 200 OK`; the reason may be empty, and its space missing (RFC 9112 §4 lets a recipient accept it).
        guard line.count >= 12, let read = HTTP1Version.read(bytes, at: line.lowerBound) else { return .invalidStatusLine }
        switch read {
        case .failure(let error): return error
        case .success(let version): self.version = version
        }
        let code = line.lowerBound + 9
        guard bytes[line.lowerBound + 8] == HTTP1Byte.space, let status = bytes.decimal(code..<(code + 3)), status >= 100,
            line.count == 12 || bytes[code + 3] == HTTP1Byte.space
        else { return .invalidStatusLine }
        for index in (code + 3)..<line.upperBound where !HTTP1Byte.isFieldValueByte(bytes[index]) {
            return .invalidStatusLine
        }
        self.status = status
        return nil
    }

    private func finish(length: Int, fields: Range<Int>) -> Outcome {
        var head = ResponseHead(
            status: status, version: version, fields: 0..<fields.upperBound, length: length, body: .none,
            keepAlive: framing.keepsAlive(version), hasDate: hasDate)
        if status == 101 || (requestMethod == .connect && status >= 200 && status < 300) {
            head.body = .untilClose
            head.keepAlive = false
            head.opensTunnel = true
            return .head(head)
        }
        if requestMethod == .head || status < 200 || status == 204 || status == 304 { return .head(head) }
        if framing.transferEncodingFields > 0 {
            if framing.contentLengthFields > 0 { return .failed(.contentLengthWithTransferEncoding) }
            switch framing.transferCodingFraming(untilCloseAllowed: true) {
            case .failure(let error): return .failed(error)
            case .success(let body): head.body = body
            }
        } else if let length = framing.contentLength {
            head.body = length == 0 ? .none : .length(length)
        } else {
            head.body = .untilClose
        }
        if head.body == .untilClose { head.keepAlive = false }
        return .head(head)
    }
}
