import Testing

@testable import TollgateSidecar

/// Parses `text` in one go.
func parseRequest(_ text: String, limits: RequestHeadParser.Limits = .init()) -> RequestHeadParser.Outcome {
    var parser = RequestHeadParser(limits: limits)
    return Array(text.utf8).withUnsafeBytes { parser.parse($0) }
}

/// The text of `range` in `text`.
func slice(_ text: String, _ range: Range<Int>?) -> String? {
    guard let range else { return nil }
    return String(decoding: Array(text.utf8)[range], as: UTF8.self)
}

/// The request-head parser over valid heads, heads split across reads at every byte, and every rule of
/// RFC 9112 it enforces.
@Suite struct RequestHeadParserTests {
    static let sendRequest =
        "POST /api/v1/messages/send?x=1 HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer wz_test_abc\r\n"
        + "Content-Type: application/json\r\nContent-Length: 12\r\n\r\n"

    @Test func readsARequestHead() throws {
        let text = Self.sendRequest + "{\"to\":\"+1\"}X"
        guard case .head(let head) = parseRequest(text) else {
            Issue.record("not parsed: \(parseRequest(text))")
            return
        }
        #expect(head.method == .post)
        #expect(slice(text, head.methodRange) == "POST")
        #expect(slice(text, head.target) == "/api/v1/messages/send?x=1")
        #expect(head.version == .http11)
        #expect(head.start == 0)
        #expect(head.length == Self.sendRequest.utf8.count)
        #expect(head.body == .length(12))
        #expect(head.keepAlive)
        #expect(!head.expectsContinue && !head.upgrade)
        #expect(slice(text, head.authorization) == "Bearer wz_test_abc")
        #expect(head.apiKeyField == nil)
        #expect(
            slice(text, head.fields)
                == "Host: api.example\r\nAuthorization: Bearer wz_test_abc\r\nContent-Type: application/json\r\nContent-Length: 12\r\n")
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1Method.get, BodyFraming.none, true),
        ("HEAD /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", .head, .none, false),
        ("GET / HTTP/1.0\r\n\r\n", .get, .none, false),
        ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", .get, .none, true),
        ("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, CLOSE\r\n\r\n", .get, .none, false),
        ("PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", .put, .chunked, true),
        ("PATCH /x HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  Chunked \r\n\r\n", .patch, .chunked, true),
        ("DELETE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", .delete, .none, true),
        ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", .options, .none, true),
        ("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", .connect, .none, true),
        ("TRACE http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n", .trace, .none, true),
        ("PURGE / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", .other, .none, true),
        ("get / HTTP/1.1\r\nHost: a\r\n\r\n", .other, .none, true),
        ("GET / HTTP/1.9\r\nHost:\r\n\r\n", .get, .none, true),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0007\r\n\r\n", .post, .length(7), true),
        ("POST / HTTP/1.1\r\nHost: a\r\nX: \u{00e9}t\u{00e9}\r\nContent-Length: 1048576\r\n\r\n", .post, .length(1_048_576), true),
    ])
    func acceptsValidHeads(text: String, method: HTTP1Method, body: BodyFraming, keepAlive: Bool) {
        guard case .head(let head) = parseRequest(text) else {
            Issue.record("\(text.debugDescription): \(parseRequest(text))")
            return
        }
        #expect(head.method == method)
        #expect(head.body == body)
        #expect(head.keepAlive == keepAlive)
        #expect(head.length == text.utf8.count)
    }

    @Test func flagsExpectUpgradeAndKeys() {
        let text =
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nExpect: 100-Continue\r\n"
            + "WAZZAPI-API-KEY:wz_live_k \r\n\r\n"
        guard case .head(let head) = parseRequest(text) else {
            Issue.record("\(parseRequest(text))")
            return
        }
        #expect(head.upgrade)
        #expect(head.expectsContinue)
        #expect(slice(text, head.apiKeyField) == "wz_live_k")
        // An `Upgrade` field without the `Connection` token asks for nothing.
        guard case .head(let plain) = parseRequest("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n") else {
            Issue.record("not parsed")
            return
        }
        #expect(!plain.upgrade)
    }

    /// The fields of a parsed head, read again by offset (as the forwarding path does).
    @Test func fieldsAreReadAgainByOffset() {
        let text = "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-List: 1, 2 \r\n\r\n"
        guard case .head(let head) = parseRequest(text) else {
            Issue.record("\(parseRequest(text))")
            return
        }
        var fields: [String] = []
        Array(text.utf8).withUnsafeBytes { bytes in
            bytes.forEachField(in: head.fields) { name, value in
                fields.append(String(decoding: bytes[name], as: UTF8.self) + "=" + String(decoding: bytes[value], as: UTF8.self))
            }
        }
        #expect(fields == ["Host=a", "X-Empty=", "X-List=1, 2"])
        #expect(slice(text, head.host) == "a")
    }

    @Test func skipsEmptyLinesBeforeTheRequest() {
        let text = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
        guard case .head(let head) = parseRequest(text) else {
            Issue.record("\(parseRequest(text))")
            return
        }
        #expect(head.start == 4)
        #expect(slice(text, head.methodRange) == "GET")
        #expect(head.length == text.utf8.count)
    }

    /// Every split of a head into two reads parses to what the whole head parses to, and no prefix
    /// completes early.
    @Test(arguments: [
        sendRequest,
        "\r\nGET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Long: " + String(repeating: "v", count: 300) + "\r\n\r\n",
    ])
    func everySplitGivesTheSameHead(text: String) {
        let bytes = Array(text.utf8)
        let whole = parseRequest(text)
        guard case .head = whole else {
            Issue.record("\(whole)")
            return
        }
        for split in 0..<bytes.count {
            var parser = RequestHeadParser()
            let first = Array(bytes[..<split]).withUnsafeBytes { parser.parse($0) }
            #expect(first == .needMore, "split at \(split)")
            let second = bytes.withUnsafeBytes { parser.parse($0) }
            #expect(second == whole, "split at \(split)")
        }
        // Byte by byte, the way a slow client sends.
        var parser = RequestHeadParser()
        var outcome = RequestHeadParser.Outcome.needMore
        for count in 1...bytes.count {
            outcome = Array(bytes[..<count]).withUnsafeBytes { parser.parse($0) }
            if count < bytes.count { #expect(outcome == .needMore, "at \(count)") }
        }
        #expect(outcome == whole)
    }

    @Test(arguments: [
        // Content-Length: duplicated (even equal), a list, not a number, with Transfer-Encoding.
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", HTTP1Error.duplicateContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", .duplicateContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", .invalidContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", .invalidContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", .invalidContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", .invalidContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", .invalidContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", .invalidContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", .invalidContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", .contentLengthWithTransferEncoding),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", .contentLengthWithTransferEncoding),
        // Transfer codings other than one final chunked.
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", .chunkedNotFinal),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", .chunkedNotFinal),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", .chunkedNotFinal),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", .chunkedNotFinal),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", .chunkedNotFinal),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", .chunkedNotFinal),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n", .chunkedNotFinal),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", .unsupportedTransferCoding),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", .unsupportedTransferCoding),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .transferEncodingInHTTP10),
        // Field lines.
        ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", .obsoleteLineFolding),
        ("GET / HTTP/1.1\r\n Host: a\r\n\r\n", .obsoleteLineFolding),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", .whitespaceBeforeColon),
        ("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", .whitespaceBeforeColon),
        ("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", .whitespaceBeforeColon),
        ("GET / HTTP/1.1\r\nHost a\r\n\r\n", .whitespaceBeforeColon),
        ("GET / HTTP/1.1\r\nHost\r\n\r\n", .invalidFieldName),
        ("GET / HTTP/1.1\r\n: a\r\n\r\n", .invalidFieldName),
        ("GET / HTTP/1.1\r\nX(y): a\r\n\r\n", .invalidFieldName),
        ("GET / HTTP/1.1\r\nHost: a\u{0}b\r\n\r\n", .invalidFieldValue),
        ("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", .invalidFieldValue),
        ("GET / HTTP/1.1\r\nHost: a\u{7f}\r\n\r\n", .invalidFieldValue),
        ("GET / HTTP/1.1\r\nHost: a\n\r\n", .bareLineEnding),
        ("GET / HTTP/1.1\nHost: a\r\n\r\n", .bareLineEnding),
        ("GET / HTTP/1.1\r\nHost: a\r\n\n", .bareLineEnding),
        ("TRACE / HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\n\r\n", .traceWithBody),
        ("TRACE / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", .traceWithBody),
        // Host.
        ("GET / HTTP/1.1\r\nX: y\r\n\r\n", .missingHost),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", .duplicateHost),
        ("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", .duplicateHost),
        ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", .invalidHost),
        ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", .invalidHost),
        ("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", .invalidHost),
        // The request line.
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", .unsupportedVersion),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", .unsupportedVersion),
        ("GET / http/1.1\r\nHost: a\r\n\r\n", .invalidRequestLine),
        ("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", .invalidRequestLine),
        ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", .invalidRequestLine),
        ("GET /\tx HTTP/1.1\r\nHost: a\r\n\r\n", .invalidRequestLine),
        ("GET /\u{00e9} HTTP/1.1\r\nHost: a\r\n\r\n", .invalidRequestLine),
        ("GET / HTTP/1.10\r\nHost: a\r\n\r\n", .invalidRequestLine),
        ("GET /\r\nHost: a\r\n\r\n", .invalidRequestLine),
        ("G{T / HTTP/1.1\r\nHost: a\r\n\r\n", .invalidRequestLine),
        (" GET / HTTP/1.1\r\nHost: a\r\n\r\n", .invalidRequestLine),
        ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTarget),
        ("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTarget),
        ("GET x HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTarget),
        ("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTarget),
        ("CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTarget),
    ])
    func refusesWhatRFC9112Refuses(text: String, error: HTTP1Error) {
        #expect(parseRequest(text) == .failed(error), "\(text.debugDescription)")
    }

    @Test func refusesHeadsOverTheLimits() {
        let limits = RequestHeadParser.Limits(maxHeadSize: 1024, maxRequestLine: 256, maxBodySize: 100)
        let long = String(repeating: "a", count: 1100)
        #expect(parseRequest("GET / HTTP/1.1\r\nHost: a\r\nX: \(long)\r\n\r\n", limits: limits) == .failed(.headTooLarge))
        #expect(parseRequest("GET /\(long) HTTP/1.1\r\nHost: a\r\n\r\n", limits: limits) == .failed(.targetTooLong))
        #expect(parseRequest("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", limits: limits) == .failed(.bodyTooLarge))
        #expect(parseRequest("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n", limits: limits) != .failed(.bodyTooLarge))
        // A head exactly at the limit passes; one byte more does not.
        let prefix = "GET / HTTP/1.1\r\nHost: a\r\nX: "
        let fitting = prefix + String(repeating: "b", count: 1024 - prefix.utf8.count - 4) + "\r\n\r\n"
        #expect(fitting.utf8.count == 1024)
        #expect(parseRequest(fitting, limits: limits) != .failed(.headTooLarge))
        #expect(parseRequest(fitting.replacingOccurrences(of: "X: ", with: "X: b"), limits: limits) == .failed(.headTooLarge))
        // Empty lines sent for ever before a request count too.
        #expect(parseRequest(String(repeating: "\r\n", count: 600), limits: limits) == .failed(.headTooLarge))
    }

    /// A head that never ends is refused once it passes the limit, not read for ever.
    @Test func refusesAnEndlessHeadWhileItArrives() {
        let limits = RequestHeadParser.Limits(maxHeadSize: 2048, maxRequestLine: 512, maxBodySize: 100)
        var parser = RequestHeadParser(limits: limits)
        var bytes = Array("GET / HTTP/1.1\r\nHost: a\r\n".utf8)
        var outcome = RequestHeadParser.Outcome.needMore
        while outcome == .needMore, bytes.count < 10_000 {
            bytes += Array("X-Filler: 0123456789\r\n".utf8)
            outcome = bytes.withUnsafeBytes { parser.parse($0) }
        }
        #expect(outcome == .failed(.headTooLarge))
        #expect(bytes.count <= 2048 + 22)
        // An endless request line is refused at its own limit.
        var lineParser = RequestHeadParser(limits: limits)
        #expect(Array(("GET /" + String(repeating: "p", count: 600)).utf8).withUnsafeBytes { lineParser.parse($0) } == .failed(.targetTooLong))
    }

    @Test func aRefusalStaysAndResetStartsOver() {
        var parser = RequestHeadParser()
        let bad = Array("GET / HTTP/1.1\r\nHost : a\r\n\r\n".utf8)
        #expect(bad.withUnsafeBytes { parser.parse($0) } == .failed(.whitespaceBeforeColon))
        #expect(bad.withUnsafeBytes { parser.parse($0) } == .failed(.whitespaceBeforeColon))
        parser.reset()
        let good = Array("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next".utf8)
        guard case .head(let head) = good.withUnsafeBytes({ parser.parse($0) }) else {
            Issue.record("not parsed after reset")
            return
        }
        #expect(head.length == good.count - 9)
    }

    @Test func refusalsAnswerWithTheirStatus() {
        #expect(HTTP1Error.headTooLarge.status.code == 431)
        #expect(HTTP1Error.targetTooLong.status.code == 414)
        #expect(HTTP1Error.bodyTooLarge.status.code == 413)
        #expect(HTTP1Error.unsupportedTransferCoding.status.code == 501)
        #expect(HTTP1Error.unsupportedVersion.status.code == 505)
        #expect(HTTP1Error.duplicateContentLength.status.code == 400)
        let problem = HTTP1Error.obsoleteLineFolding.problem(maxHeadSize: 1, maxBodySize: 1)
        #expect(problem.status.code == 400)
        #expect(problem.json.contains("obs-fold"))
        #expect(HTTP1Error.bodyTooLarge.problem(maxHeadSize: 1, maxBodySize: 77).json.contains("77"))
    }
}
