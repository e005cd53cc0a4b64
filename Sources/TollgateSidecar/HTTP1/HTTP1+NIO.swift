import HTTPTypes
import NIOCore
import TollgateHTTP

// The parsers over a connection's `ByteBuffer`, and their refusals as answers: kept apart from the
// parsers so that those build alone (for the fuzz targets).

extension RequestHeadParser {
    /// Reads on in `buffer`'s readable bytes, which start with the head's first byte.
    mutating func parse(_ buffer: ByteBuffer) -> Outcome {
        buffer.withUnsafeReadableBytes { parse($0) }
    }
}

extension ResponseHeadScanner {
    /// Reads on in `buffer`'s readable bytes, which start with the head's first byte.
    mutating func scan(_ buffer: ByteBuffer) -> Outcome {
        buffer.withUnsafeReadableBytes { scan($0) }
    }
}

extension BodyFramer {
    /// Goes over `buffer`'s readable bytes.
    mutating func advance(_ buffer: ByteBuffer) -> Progress {
        buffer.withUnsafeReadableBytes { advance($0) }
    }
}

extension HTTP1Error {
    /// The status a client is answered with when its request broke this rule.
    var status: HTTPResponse.Status {
        switch statusCode {
        case 413: .contentTooLarge
        case 414: .uriTooLong
        case 431: .requestHeaderFieldsTooLarge
        case 501: .notImplemented
        case 505: .httpVersionNotSupported
        default: .badRequest
        }
    }

    /// The problem+json answer to a request refused for this reason.
    func problem(maxHeadSize: Int, maxBodySize: Int) -> Problem {
        switch self {
        case .headTooLarge: .headersTooLarge(limit: maxHeadSize)
        case .bodyTooLarge: .contentTooLarge(limit: maxBodySize)
        default: Problem(status: status, detail: "the request is not valid HTTP/1.1: " + detail)
        }
    }
}
