import Testing

@testable import TollgateSidecar

/// The body framer: a declared length or the chunked encoding followed byte for byte, never a byte past
/// the body's end, and the chunked encoding's rules.
@Suite struct BodyFramerTests {
    static func advance(_ framer: inout BodyFramer, _ text: String) -> BodyFramer.Progress {
        Array(text.utf8).withUnsafeBytes { framer.advance($0) }
    }

    /// Feeds `text` in pieces of `piece` bytes; the body's size in bytes when it ended, or the failure.
    static func feed(_ framing: BodyFraming, _ text: String, piece: Int, maxBodySize: Int = .max) -> BodyFramer.Progress {
        var framer = BodyFramer(framing, maxBodySize: maxBodySize, maxTrailerSize: 64)
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + piece)
            switch Array(bytes[offset..<end]).withUnsafeBytes({ framer.advance($0) }) {
            case .needMore:
                offset = end
            case .ended(let bodyBytes):
                #expect(framer.isComplete)
                return .ended(bodyBytes: offset + bodyBytes)
            case .failed(let error):
                return .failed(error)
            }
        }
        return .needMore
    }

    @Test func aDeclaredLengthEndsOnItsLastByte() {
        var framer = BodyFramer(.length(10))
        #expect(framer.knownRemaining == 10)
        #expect(Self.advance(&framer, "0123") == .needMore)
        #expect(framer.knownRemaining == 6)
        #expect(Self.advance(&framer, "456789GET / HTTP/1.1") == .ended(bodyBytes: 6))
        #expect(framer.isComplete)
        #expect(Self.advance(&framer, "more") == .ended(bodyBytes: 0))
        var empty = BodyFramer(.length(0))
        #expect(empty.isComplete)
        #expect(Self.advance(&empty, "x") == .ended(bodyBytes: 0))
        var none = BodyFramer(.none)
        #expect(Self.advance(&none, "x") == .ended(bodyBytes: 0))
    }

    @Test func closingEndsOnlyABodyReadUntilClose() {
        var untilClose = BodyFramer(.untilClose)
        #expect(Self.advance(&untilClose, String(repeating: "x", count: 5000)) == .needMore)
        #expect(untilClose.closed() == .ended(bodyBytes: 0))
        var length = BodyFramer(.length(3))
        #expect(Self.advance(&length, "ab") == .needMore)
        #expect(length.closed() == .failed(.truncated))
        var chunked = BodyFramer(.chunked)
        #expect(Self.advance(&chunked, "3\r\nab") == .needMore)
        #expect(chunked.closed() == .failed(.truncated))
    }

    /// Valid chunked bodies end exactly after their last CRLF, whatever follows and however they are cut.
    @Test(arguments: [
        "0\r\n\r\n",
        "5\r\nhello\r\n0\r\n\r\n",
        "5;name=value\r\nhello\r\n000\r\n\r\n",
        "5 ;a=\"b c\"\r\nhello\r\n0\r\n\r\n",
        "a\r\n0123456789\r\nA\r\n0123456789\r\n0\r\n\r\n",
        "00000001\r\nx\r\n0\r\nChecksum: abc\r\nX-T: 1\r\n\r\n",
        "1\r\n\r\r\n0\r\n\r\n",
    ])
    func validChunkedBodiesEndExactly(body: String) {
        for piece in [1, 2, 3, 7, 1000] {
            #expect(Self.feed(.chunked, body + "GET / HTTP/1.1\r\n", piece: piece) == .ended(bodyBytes: body.utf8.count), "piece \(piece)")
            #expect(Self.feed(.chunked, String(body.dropLast()), piece: piece) == .needMore, "piece \(piece)")
        }
    }

    @Test(arguments: [
        ("\r\n", HTTP1Error.invalidChunkSize),
        ("x\r\n", .invalidChunkSize),
        ("-5\r\nhello\r\n", .invalidChunkSize),
        ("0x5\r\nhello\r\n", .invalidChunkSize),
        ("5 \r\nhello\r\n", .invalidChunkSize),
        (" 5\r\nhello\r\n", .invalidChunkSize),
        ("5\t\r\nhello\r\n", .invalidChunkSize),
        ("FFFFFFFFFFFFFFFFF\r\n", .invalidChunkSize),
        ("5\nhello\r\n", .invalidChunkSize),
        ("5\rhello\r\n", .bareLineEnding),
        ("5;a\u{1}b\r\nhello\r\n", .invalidChunkExtension),
        ("3\r\nhelloo\r\n", .invalidChunkEnd),
        ("5\r\nhello\n0\r\n\r\n", .invalidChunkEnd),
        ("5\r\nhello\r0\r\n\r\n", .invalidChunkEnd),
        ("0\r\n X: 1\r\n\r\n", .invalidTrailer),
        ("0\r\nX: \u{0}\r\n\r\n", .invalidTrailer),
        ("0\r\nX: 1\n\r\n", .invalidTrailer),
        ("0\r\n\r\r\n", .bareLineEnding),
        ("0\r\nX: " + String(repeating: "t", count: 100) + "\r\n\r\n", .trailerTooLarge),
    ])
    func invalidChunkedBodiesAreRefused(body: String, error: HTTP1Error) {
        for piece in [1, 4, 1000] {
            #expect(Self.feed(.chunked, body, piece: piece) == .failed(error), "\(body.debugDescription), piece \(piece)")
        }
    }

    /// The chunk data counts against the body limit, refused at the size line that would pass it.
    @Test func chunkedBodiesKeepToTheLimit() {
        #expect(Self.feed(.chunked, "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", piece: 3, maxBodySize: 10) == .ended(bodyBytes: 25))
        #expect(Self.feed(.chunked, "5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n", piece: 3, maxBodySize: 10) == .failed(.bodyTooLarge))
        #expect(Self.feed(.chunked, "B\r\n", piece: 1, maxBodySize: 10) == .failed(.bodyTooLarge))
        var framer = BodyFramer(.chunked, maxBodySize: 10)
        #expect(Self.advance(&framer, "FFFFFFFFFFFFFFF") == .failed(.bodyTooLarge))
        #expect(Self.advance(&framer, "0\r\n\r\n") == .failed(.bodyTooLarge))
    }

    /// The content of a chunked body, without its framing, however the bytes are cut.
    @Test func theContentIsFoundWithoutTheFraming() {
        let body = Array("5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\nNEXT".utf8)
        for piece in [1, 3, 100] {
            var framer = BodyFramer(.chunked)
            var content: [UInt8] = []
            var offset = 0
            while offset < body.count {
                let part = Array(body[offset..<min(body.count, offset + piece)])
                let progress = part.withUnsafeBytes { bytes in framer.advance(bytes) { content += part[$0] } }
                if case .ended = progress { break }
                offset += piece
            }
            #expect(String(decoding: content, as: UTF8.self) == "hello world", "piece \(piece)")
        }
        var length = BodyFramer(.length(3))
        var content: [UInt8] = []
        let bytes = Array("abcdef".utf8)
        #expect(bytes.withUnsafeBytes { length.advance($0) { content += bytes[$0] } } == .ended(bodyBytes: 3))
        #expect(content == Array("abc".utf8))
    }

    @Test func chunkDataIsSkippedWhole() {
        var framer = BodyFramer(.chunked)
        #expect(Self.advance(&framer, "400\r\n") == .needMore)
        #expect(framer.knownRemaining == 1024)
        // Bytes that look like framing inside the data are data.
        #expect(Self.advance(&framer, String(repeating: "0\r\n\r\n", count: 100)) == .needMore)
        #expect(framer.knownRemaining == 524)
    }
}
