/// Follows a message body's framing as its bytes pass by, without copying or changing them: how many
/// of the bytes at hand still belong to the body, so that a relay never forwards a byte past the
/// body's end (a length, or the chunked encoding's last chunk and trailer) as part of it.
///
/// Chunked bodies are checked strictly (RFC 9112 §7.1): hexadecimal sizes that fit, chunk extensions
/// without control characters, CRLF after each chunk's data, trailer fields within a size limit, and
/// the data within `maxBodySize`.
struct BodyFramer: Equatable, Sendable {
    enum Progress: Equatable, Sendable {
        /// Every byte given belongs to the body, which goes on.
        case needMore
        /// The body ends after this many of the bytes given; the rest belongs to the next message.
        case ended(bodyBytes: Int)
        case failed(HTTP1Error)
    }

    private enum Chunked: Equatable {
        /// In a chunk size: its value so far, and whether a digit was read.
        case size(Int, digits: Bool)
        /// Whitespace after the size, which only an extension may follow.
        case sizeWhitespace(Int)
        case extensionText(Int)
        /// The CR ending the size line was read.
        case sizeLineFeed(Int)
        case data(remaining: Int)
        case dataCarriageReturn
        case dataLineFeed
        /// At the start of a trailer line, or of the empty line ending the body.
        case trailerLineStart
        case trailerLine
        case trailerLineFeed
        case finalLineFeed
    }

    private enum State: Equatable {
        case length(remaining: Int)
        case chunked(Chunked)
        case untilClose
        case ended
        case failed(HTTP1Error)
    }

    private var state: State
    private let maxBodySize: Int
    private let maxTrailerSize: Int
    /// Chunk data received so far.
    private var received = 0
    private var trailerBytes = 0

    init(_ framing: BodyFraming, maxBodySize: Int = .max, maxTrailerSize: Int = 16 * 1024) {
        switch framing {
        case .none: state = .ended
        case .length(let length): state = length == 0 ? .ended : .length(remaining: length)
        case .chunked: state = .chunked(.size(0, digits: false))
        case .untilClose: state = .untilClose
        }
        self.maxBodySize = maxBodySize
        self.maxTrailerSize = maxTrailerSize
    }

    /// The body has been read to its end.
    var isComplete: Bool { state == .ended }

    /// The bytes still due at the least: a declared length's rest, the rest of a chunk's data (0 where
    /// the framing is between chunks or until close).
    var knownRemaining: Int {
        switch state {
        case .length(let remaining): remaining
        case .chunked(.data(let remaining)): remaining
        default: 0
        }
    }

    /// Goes over the next bytes of the body; `data` is called with the ranges of `bytes` that are the
    /// body's content (all of them but a chunked body's framing), for a relay that must re-frame it.
    mutating func advance(_ bytes: UnsafeRawBufferPointer, data: (Range<Int>) -> Void = { _ in }) -> Progress {
        switch state {
        case .ended:
            return .ended(bodyBytes: 0)
        case .failed(let error):
            return .failed(error)
        case .untilClose:
            if !bytes.isEmpty { data(0..<bytes.count) }
            return .needMore
        case .length(let remaining):
            if bytes.count < remaining {
                state = .length(remaining: remaining - bytes.count)
                if !bytes.isEmpty { data(0..<bytes.count) }
                return .needMore
            }
            state = .ended
            data(0..<remaining)
            return .ended(bodyBytes: remaining)
        case .chunked(let chunked):
            return advanceChunked(chunked, bytes, data: data)
        }
    }

    /// The connection closed: whether that ends the body properly (only a body read until close), else
    /// the message was cut short.
    mutating func closed() -> Progress {
        switch state {
        case .untilClose, .ended:
            state = .ended
            return .ended(bodyBytes: 0)
        case .failed(let error):
            return .failed(error)
        case .length, .chunked:
            state = .failed(.truncated)
            return .failed(.truncated)
        }
    }

    private mutating func fail(_ error: HTTP1Error) -> Progress {
        state = .failed(error)
        return .failed(error)
    }

    private mutating func advanceChunked(_ start: Chunked, _ bytes: UnsafeRawBufferPointer, data: (Range<Int>) -> Void) -> Progress {
        var chunked = start
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            switch chunked {
            case .size(let size, let digits):
                if let digit = HTTP1Byte.hexValue(byte) {
                    // Refuse before the size overflows, or goes over the limit.
                    guard size <= (Int.max - 15) / 16 else { return fail(.invalidChunkSize) }
                    let grown = size * 16 + digit
                    if grown > maxBodySize - received { return fail(.bodyTooLarge) }
                    chunked = .size(grown, digits: true)
                } else if !digits {
                    return fail(.invalidChunkSize)
                } else if byte == HTTP1Byte.cr {
                    chunked = .sizeLineFeed(size)
                } else if byte == HTTP1Byte.semicolon {
                    chunked = .extensionText(size)
                } else if HTTP1Byte.isWhitespace(byte) {
                    chunked = .sizeWhitespace(size)
                } else {
                    return fail(.invalidChunkSize)
                }
            case .sizeWhitespace(let size):
                if byte == HTTP1Byte.semicolon {
                    chunked = .extensionText(size)
                } else if !HTTP1Byte.isWhitespace(byte) {
                    return fail(.invalidChunkSize)
                }
            case .extensionText(let size):
                if byte == HTTP1Byte.cr {
                    chunked = .sizeLineFeed(size)
                } else if !HTTP1Byte.isFieldValueByte(byte) {
                    return fail(.invalidChunkExtension)
                }
            case .sizeLineFeed(let size):
                guard byte == HTTP1Byte.lf else { return fail(.bareLineEnding) }
                chunked = size == 0 ? .trailerLineStart : .data(remaining: size)
            case .data(let remaining):
                // The data is skipped whole, never looked at.
                let taken = min(remaining, bytes.count - index)
                if taken > 0 { data(index..<(index + taken)) }
                received += taken
                index += taken
                chunked = taken == remaining ? .dataCarriageReturn : .data(remaining: remaining - taken)
                continue
            case .dataCarriageReturn:
                guard byte == HTTP1Byte.cr else { return fail(.invalidChunkEnd) }
                chunked = .dataLineFeed
            case .dataLineFeed:
                guard byte == HTTP1Byte.lf else { return fail(.invalidChunkEnd) }
                chunked = .size(0, digits: false)
            case .trailerLineStart:
                if byte == HTTP1Byte.cr {
                    chunked = .finalLineFeed
                } else if HTTP1Byte.isTokenChar(byte) {
                    chunked = .trailerLine
                    trailerBytes += 1
                } else {
                    // A trailer line starts with a field name: whitespace here would be obs-fold.
                    return fail(.invalidTrailer)
                }
            case .trailerLine:
                trailerBytes += 1
                if trailerBytes > maxTrailerSize { return fail(.trailerTooLarge) }
                if byte == HTTP1Byte.cr {
                    chunked = .trailerLineFeed
                } else if !HTTP1Byte.isFieldValueByte(byte) {
                    return fail(.invalidTrailer)
                }
            case .trailerLineFeed:
                guard byte == HTTP1Byte.lf else { return fail(.bareLineEnding) }
                chunked = .trailerLineStart
            case .finalLineFeed:
                guard byte == HTTP1Byte.lf else { return fail(.bareLineEnding) }
                state = .ended
                return .ended(bodyBytes: index + 1)
            }
            index += 1
        }
        state = .chunked(chunked)
        return .needMore
    }
}
