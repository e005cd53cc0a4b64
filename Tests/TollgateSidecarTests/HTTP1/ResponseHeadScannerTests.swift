import Testing

@testable import TollgateSidecar

/// The response-head scanner: where each kind of response's body ends (RFC 9112 §6.3), whether the
/// upstream connection can be reused, and the framing it refuses to relay.
@Suite struct ResponseHeadScannerTests {
    static func scan(_ text: String, for method: HTTP1Method = .get, maxHeadSize: Int = 64 * 1024) -> ResponseHeadScanner.Outcome {
        var scanner = ResponseHeadScanner(requestMethod: method, maxHeadSize: maxHeadSize)
        return Array(text.utf8).withUnsafeBytes { scanner.scan($0) }
    }

    @Test(arguments: [
        (HTTP1Method.get, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200, BodyFraming.length(5), true),
        (.post, "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n", 201, .chunked, true),
        (.get, "HTTP/1.1 200 OK\r\n\r\n", 200, .untilClose, false),
        (.get, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 200, .untilClose, false),
        (.get, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, .none, true),
        (.get, "HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", 204, .none, true),
        (.get, "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", 304, .none, true),
        (.head, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 200, .none, true),
        (.head, "HTTP/1.1 200 OK\r\n\r\n", 200, .none, true),
        (.post, "HTTP/1.1 100 Continue\r\n\r\n", 100, .none, true),
        (.get, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", 200, .length(2), false),
        (.get, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n", 200, .length(2), true),
        (.get, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", 503, .length(2), false),
        (.get, "HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", 200, .length(1), true),
        (.get, "HTTP/1.1 299 \r\nContent-Length: 1\r\n\r\n", 299, .length(1), true),
        (.get, "HTTP/1.1 404 Nicht gefunden \u{00e4}\r\nContent-Length: 1\r\n\r\n", 404, .length(1), true),
        (.get, "\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", 200, .length(1), true),
    ])
    func findsTheBody(method: HTTP1Method, text: String, status: Int, body: BodyFraming, keepAlive: Bool) {
        guard case .head(let head) = Self.scan(text, for: method) else {
            Issue.record("\(text.debugDescription): \(Self.scan(text, for: method))")
            return
        }
        #expect(head.status == status)
        #expect(head.body == body)
        #expect(head.keepAlive == keepAlive)
        #expect(head.length == text.utf8.count)
        #expect(!head.opensTunnel)
    }

    @Test func interimAndTunnels() {
        guard case .head(let interim) = Self.scan("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n") else {
            Issue.record("not scanned")
            return
        }
        #expect(interim.isInterim && !interim.opensTunnel)
        guard case .head(let upgrade) = Self.scan("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        else {
            Issue.record("not scanned")
            return
        }
        #expect(upgrade.opensTunnel && !upgrade.isInterim && !upgrade.keepAlive)
        guard case .head(let connect) = Self.scan("HTTP/1.1 200 Connection Established\r\n\r\n", for: .connect) else {
            Issue.record("not scanned")
            return
        }
        #expect(connect.opensTunnel)
        #expect(connect.body == .untilClose)
    }

    /// The fields end where the empty line starts: fields inserted there keep the head well formed.
    @Test func fieldsCanBeInsertedBeforeTheEmptyLine() {
        let text = "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\nok"
        guard case .head(let head) = Self.scan(text) else {
            Issue.record("not scanned")
            return
        }
        #expect(head.hasDate)
        let bytes = Array(text.utf8)
        let rewritten = String(decoding: bytes[head.fields], as: UTF8.self) + "RateLimit: \"burst\";r=1;t=1\r\n\r\n"
            + String(decoding: bytes[head.length...], as: UTF8.self)
        #expect(
            rewritten
                == "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\nRateLimit: \"burst\";r=1;t=1\r\n\r\nok")
        guard case .head(let dateless) = Self.scan("HTTP/1.1 200 OK\r\nX-Date: 1\r\n\r\n") else {
            Issue.record("not scanned")
            return
        }
        #expect(!dateless.hasDate)
    }

    @Test(arguments: [
        ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1Error.contentLengthWithTransferEncoding),
        ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", .duplicateContentLength),
        ("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", .invalidContentLength),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", .chunkedNotFinal),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", .unsupportedTransferCoding),
        ("HTTP/1.1 20 OK\r\n\r\n", .invalidStatusLine),
        ("HTTP/1.1 2000 OK\r\n\r\n", .invalidStatusLine),
        ("HTTP/1.1 099 Low\r\n\r\n", .invalidStatusLine),
        ("HTTP/1.1  200 OK\r\n\r\n", .invalidStatusLine),
        ("HTTP/1.1 200 O\u{0}K\r\n\r\n", .invalidStatusLine),
        ("ICY 200 OK\r\n\r\n", .invalidStatusLine),
        ("HTTP/2.0 200 OK\r\n\r\n", .unsupportedVersion),
        ("HTTP/1.1 200 OK\r\nX : y\r\n\r\n", .whitespaceBeforeColon),
        ("HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n", .obsoleteLineFolding),
        ("HTTP/1.1 200 OK\nX: y\r\n\r\n", .bareLineEnding),
    ])
    func refusesAmbiguousResponses(text: String, error: HTTP1Error) {
        #expect(Self.scan(text) == .failed(error), "\(text.debugDescription)")
    }

    @Test func refusesHeadsOverTheLimitAndReadsOnAcrossReads() {
        #expect(Self.scan("HTTP/1.1 200 OK\r\nX: " + String(repeating: "y", count: 2000) + "\r\n\r\n", maxHeadSize: 1024) == .failed(.headTooLarge))
        let bytes = Array("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc".utf8)
        let whole = Self.scan(String(decoding: bytes, as: UTF8.self))
        for split in 0..<(bytes.count - 3) {
            var scanner = ResponseHeadScanner(requestMethod: .get)
            #expect(Array(bytes[..<split]).withUnsafeBytes { scanner.scan($0) } == .needMore, "split at \(split)")
            #expect(bytes.withUnsafeBytes { scanner.scan($0) } == whole, "split at \(split)")
        }
    }
}
