/// Why a request or response head, or a body's framing, was refused: one case per rule of RFC 9112 the
/// data path enforces, each with the status a client is answered with and a sentence saying what was wrong.
///
/// The sentences name the rule, never the bytes that broke it: a head can carry an API key. (This file,
/// like the parsers, imports nothing, so that the fuzz targets build from the sources alone.)
enum HTTP1Error: Error, Equatable, Sendable {
    case invalidRequestLine
    case invalidTarget
    case invalidStatusLine
    /// An `HTTP/` version other than 1.x.
    case unsupportedVersion
    /// A line ended by LF alone, or a CR not followed by LF.
    case bareLineEnding
    case invalidFieldName
    /// Whitespace between a field's name and its colon (RFC 9112 §5.1).
    case whitespaceBeforeColon
    case invalidFieldValue
    /// A field line that starts with whitespace: the obsolete line folding (RFC 9112 §5.2).
    case obsoleteLineFolding
    case invalidContentLength
    /// More than one `Content-Length`, even with equal values: a proxy that forwards ambiguous framing
    /// is how request smuggling starts.
    case duplicateContentLength
    case contentLengthWithTransferEncoding
    /// `Transfer-Encoding` whose last coding is not `chunked`, or `chunked` applied twice.
    case chunkedNotFinal
    /// A transfer coding other than `chunked` (the proxy decodes none).
    case unsupportedTransferCoding
    /// `Transfer-Encoding` on an HTTP/1.0 request (RFC 9112 §6.1).
    case transferEncodingInHTTP10
    /// A TRACE with content, which RFC 9110 §9.3.8 forbids: what it echoes could be a smuggled request.
    case traceWithBody
    case missingHost
    case duplicateHost
    case invalidHost
    case headTooLarge
    case targetTooLong
    case bodyTooLarge
    case invalidChunkSize
    case invalidChunkExtension
    /// A chunk's data not followed by CRLF.
    case invalidChunkEnd
    case invalidTrailer
    case trailerTooLarge
    /// The connection closed before the message's declared end.
    case truncated

    /// The status code a client is answered with when its request broke this rule.
    var statusCode: Int {
        switch self {
        case .headTooLarge, .trailerTooLarge: 431
        case .targetTooLong: 414
        case .bodyTooLarge: 413
        case .unsupportedTransferCoding: 501
        case .unsupportedVersion: 505
        default: 400
        }
    }

    /// What was wrong, for the `detail` of a problem+json answer and for logs.
    var detail: String {
        switch self {
        case .invalidRequestLine: "the request line is not `method SP target SP HTTP/1.x`"
        case .invalidTarget: "the request target is not valid"
        case .invalidStatusLine: "the status line is not `HTTP/1.x SP status SP reason`"
        case .unsupportedVersion: "only HTTP/1.0 and HTTP/1.1 are served"
        case .bareLineEnding: "a line of the head does not end with CRLF"
        case .invalidFieldName: "a header field's name is not a token followed by a colon"
        case .whitespaceBeforeColon: "a header field has whitespace between its name and the colon"
        case .invalidFieldValue: "a header field's value holds a control character"
        case .obsoleteLineFolding: "a header field is folded over several lines (obs-fold)"
        case .invalidContentLength: "Content-Length is not a single decimal number"
        case .duplicateContentLength: "Content-Length appears more than once"
        case .contentLengthWithTransferEncoding: "Content-Length appears together with Transfer-Encoding"
        case .chunkedNotFinal: "Transfer-Encoding does not end with a single chunked coding"
        case .unsupportedTransferCoding: "a transfer coding other than chunked is not supported"
        case .transferEncodingInHTTP10: "Transfer-Encoding is not allowed on an HTTP/1.0 request"
        case .traceWithBody: "a TRACE request has no body"
        case .missingHost: "an HTTP/1.1 request needs a Host field"
        case .duplicateHost: "Host appears more than once"
        case .invalidHost: "the Host field is not a host and optional port"
        case .headTooLarge: "the request line and header fields are too large"
        case .targetTooLong: "the request target is too long"
        case .bodyTooLarge: "the body is larger than allowed"
        case .invalidChunkSize: "a chunk size is not a hexadecimal number"
        case .invalidChunkExtension: "a chunk extension holds a control character"
        case .invalidChunkEnd: "a chunk's data is not followed by CRLF"
        case .invalidTrailer: "a trailer field line is not valid"
        case .trailerTooLarge: "the trailer fields are too large"
        case .truncated: "the connection closed before the message's end"
        }
    }
}
