// libFuzzer target for the request-head parser and the request body's framing (see Fuzz/run.sh).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequestHead(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let limits = RequestHeadParser.Limits(maxHeadSize: 4096, maxRequestLine: 1024, maxBodySize: 65536)
    var whole = RequestHeadParser(limits: limits)
    let outcome = whole.parse(bytes)

    // Any split into two reads gives the same outcome, and a prefix never completes a head the whole
    // input does not.
    let split = size == 0 ? 0 : Int(data[0]) % (size + 1)
    var parts = RequestHeadParser(limits: limits)
    let first = parts.parse(UnsafeRawBufferPointer(rebasing: bytes[..<split]))
    let second = parts.parse(bytes)
    require(second == outcome, "a split read gives the whole read's outcome")
    if case .head(let head) = first { require(outcome == .head(head), "a head found in a prefix is the head") }

    switch outcome {
    case .needMore:
        require(size <= limits.maxHeadSize, "a head past the limit is refused, not read on")
    case .failed(let error):
        // A refused head stays refused, whatever follows: none of its bytes is ever handed on.
        var more = whole
        let again = (Array(bytes) + Array("\r\n\r\n".utf8)).withUnsafeBytes { more.parse($0) }
        require(again == .failed(error), "a refusal stays")
        require([400, 413, 414, 431, 501, 505].contains(error.statusCode), "a refusal answers 4xx or 5xx")
    case .head(let head):
        require(head.length <= size && head.length <= limits.maxHeadSize, "the head lies within the bytes and the limit")
        require(head.fields.upperBound + 2 == head.length, "the fields end at the empty line")
        require(bytes[head.length - 2] == 13 && bytes[head.length - 1] == 10, "the head ends with CRLF")
        for range in [head.methodRange, head.target, head.fields] + [head.authorization, head.apiKeyField].compactMap({ $0 }) {
            require(range.lowerBound >= head.start && range.upperBound <= head.length, "every range lies within the head")
        }
        require(head.target.allSatisfy { bytes[$0] > 0x20 && bytes[$0] < 0x7F }, "the target is visible ASCII")
        let body = UnsafeRawBufferPointer(rebasing: bytes[head.length...])
        if case .length(let length) = head.body {
            require(length <= limits.maxBodySize, "a declared length keeps to the limit")
            let taken = followBody(head.body, body, maxBodySize: limits.maxBodySize)
            require(taken == (body.count >= length ? length : nil), "a declared length is read exactly, never past")
        } else {
            if let taken = followBody(head.body, body, maxBodySize: limits.maxBodySize) {
                require(taken <= body.count, "a body ends within the bytes given")
            }
        }
    }
    return 0
}
