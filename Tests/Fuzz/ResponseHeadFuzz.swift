// libFuzzer target for the response-head scanner and the response body's framing (see Fuzz/run.sh).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResponseHead(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    // The first byte picks the request the response answers; the rest is the response.
    let methods: [HTTP1Method] = [.get, .head, .post, .connect]
    let method = methods[Int(data[0]) % methods.count]
    let bytes = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    var whole = ResponseHeadScanner(requestMethod: method, maxHeadSize: 4096)
    let outcome = whole.scan(bytes)

    let split = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
    var parts = ResponseHeadScanner(requestMethod: method, maxHeadSize: 4096)
    _ = parts.scan(UnsafeRawBufferPointer(rebasing: bytes[..<split]))
    require(parts.scan(bytes) == outcome, "a split read gives the whole read's outcome")

    switch outcome {
    case .needMore:
        require(bytes.count <= 4096, "a head past the limit is refused, not read on")
    case .failed:
        break
    case .head(let head):
        require(head.length <= bytes.count && head.length <= 4096, "the head lies within the bytes and the limit")
        require(head.fields.upperBound + 2 == head.length, "the fields end at the empty line")
        require((100...999).contains(head.status), "the status has three digits")
        if !head.opensTunnel, method == .head || head.status == 204 || head.status == 304 || head.isInterim {
            require(head.body == .none, "HEAD, 1xx, 204 and 304 answers have no body (a tunnel is no body)")
        }
        if head.body == .untilClose { require(!head.keepAlive, "a body read until close ends the connection") }
        let body = UnsafeRawBufferPointer(rebasing: bytes[head.length...])
        let taken = followBody(head.body, body, maxBodySize: .max)
        if case .length(let length) = head.body {
            require(taken == (body.count >= length ? length : nil), "a declared length is read exactly, never past")
        }
    }
    return 0
}
