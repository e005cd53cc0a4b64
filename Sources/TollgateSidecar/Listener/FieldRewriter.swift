import NIOCore

/// The field lines of a head as the other side of the proxy gets them, copied byte for byte from the
/// head that was parsed (no `HTTPFields`, no `String` per field): the connection's own fields are left
/// out both ways (`Connection` and every field it names, `Keep-Alive`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade`, `Proxy-*`; RFC 9110 §7.6.1), and so is what the proxy sets itself.
enum FieldRewriter {
    /// Writes the request's fields as the upstream gets them, without framing and without the empty
    /// line: `Host`, `Content-Length`, `Expect`, `X-Forwarded-Proto` and every `X-Tollgate-*` are
    /// dropped, the credentials too unless `forwardCredentials`; `X-Forwarded-For` gets `client`
    /// appended and `X-Forwarded-Proto: http` is added. With `dropTraceContext` (tracing on), the
    /// client's `traceparent` and `tracestate` are dropped too: the forward span's take their place.
    static func writeRequestFields(
        _ bytes: UnsafeRawBufferPointer, fields: Range<Int>, forwardCredentials: Bool, client: String?,
        dropTraceContext: Bool = false, into out: inout ByteBuffer
    ) {
        let connection = connectionFields(bytes, fields)
        var forwardedFor = 0
        bytes.forEachField(in: fields) { name, value in
            if isHopByHop(name, in: bytes, connection: connection, fields: fields) { return }
            switch name.count {
            case 4 where bytes.equalsIgnoringCase(name, "host"): return
            case 6 where bytes.equalsIgnoringCase(name, "expect"): return
            case 10 where dropTraceContext && bytes.equalsIgnoringCase(name, "tracestate"): return
            case 11 where dropTraceContext && bytes.equalsIgnoringCase(name, "traceparent"): return
            case 13 where bytes.equalsIgnoringCase(name, "authorization"): if !forwardCredentials { return }
            case 14 where bytes.equalsIgnoringCase(name, "content-length"): return
            case 15 where bytes.equalsIgnoringCase(name, "wazzapi-api-key"): if !forwardCredentials { return }
            case 15 where bytes.equalsIgnoringCase(name, "x-forwarded-for"):
                forwardedFor += 1
                return
            case 17 where bytes.equalsIgnoringCase(name, "x-forwarded-proto"): return
            default:
                if name.count >= 11, bytes.equalsIgnoringCase(name.lowerBound..<(name.lowerBound + 11), "x-tollgate-") { return }
            }
            writeLine(bytes, name, value, into: &out)
        }
        if forwardedFor > 0 || client != nil {
            out.writeStaticString("X-Forwarded-For: ")
            var first = true
            if forwardedFor > 0 {
                bytes.forEachField(in: fields) { name, value in
                    guard name.count == 15, bytes.equalsIgnoringCase(name, "x-forwarded-for") else { return }
                    if !first { out.writeStaticString(", ") }
                    out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[value]))
                    first = false
                }
            }
            if let client {
                if !first { out.writeStaticString(", ") }
                out.writeString(client)
            }
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("X-Forwarded-Proto: http\r\n")
    }

    /// Writes the response's fields as the client gets them, without the empty line; with
    /// `replacingRateLimit`, the upstream's own `RateLimit-Policy`, `RateLimit` and `X-RateLimit-*`
    /// fields are dropped too (the proxy's take their place).
    static func writeResponseFields(
        _ bytes: UnsafeRawBufferPointer, fields: Range<Int>, replacingRateLimit: Bool, into out: inout ByteBuffer
    ) {
        let connection = connectionFields(bytes, fields)
        bytes.forEachField(in: fields) { name, value in
            if isHopByHop(name, in: bytes, connection: connection, fields: fields) { return }
            if replacingRateLimit, isRateLimitField(name, in: bytes) { return }
            writeLine(bytes, name, value, into: &out)
        }
    }

    /// Writes the fields of a protocol switch, which the rules above leave out as hop-by-hop: the head's
    /// `Upgrade` fields as they are, and `Connection: upgrade`. For a request that asks for a switch
    /// (the upstream must see it) and for the upstream's `101` (the client must).
    static func writeUpgradeFields(_ bytes: UnsafeRawBufferPointer, fields: Range<Int>, into out: inout ByteBuffer) {
        bytes.forEachField(in: fields) { name, value in
            if name.count == 7, bytes.equalsIgnoringCase(name, "upgrade") { writeLine(bytes, name, value, into: &out) }
        }
        out.writeStaticString("Connection: upgrade\r\n")
    }

    /// Whether `name` is a field the proxy's `RateLimit` fields replace.
    static func isRateLimitField(_ name: Range<Int>, in bytes: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case 9: bytes.equalsIgnoringCase(name, "ratelimit")
        case 16: bytes.equalsIgnoringCase(name, "ratelimit-policy")
        case 17: bytes.equalsIgnoringCase(name, "x-ratelimit-limit") || bytes.equalsIgnoringCase(name, "x-ratelimit-reset")
        case 21: bytes.equalsIgnoringCase(name, "x-ratelimit-remaining")
        default: false
        }
    }

    /// How many `Connection` fields name a field other than `Keep-Alive` (which goes in any case): most
    /// heads have none, so their fields are not compared with the tokens one by one.
    private static func connectionFields(_ bytes: UnsafeRawBufferPointer, _ fields: Range<Int>) -> Int {
        var count = 0
        bytes.forEachField(in: fields) { name, value in
            guard name.count == 10, bytes.equalsIgnoringCase(name, "connection") else { return }
            var namesOthers = false
            bytes.forEachListElement(value) { token in
                if !bytes.equalsIgnoringCase(token, "keep-alive") { namesOthers = true }
            }
            if namesOthers { count += 1 }
        }
        return count
    }

    /// Whether `name` is connection-specific: always `Connection`, `Keep-Alive`, `Proxy-*`, `TE`,
    /// `Trailer`, `Transfer-Encoding`, `Upgrade`, and those the head's `Connection` fields list.
    static func isHopByHop(
        _ name: Range<Int>, in bytes: UnsafeRawBufferPointer, connection: Int, fields: Range<Int>
    ) -> Bool {
        switch name.count {
        case 2 where bytes.equalsIgnoringCase(name, "te"): return true
        case 7 where bytes.equalsIgnoringCase(name, "trailer") || bytes.equalsIgnoringCase(name, "upgrade"): return true
        case 10 where bytes.equalsIgnoringCase(name, "connection") || bytes.equalsIgnoringCase(name, "keep-alive"): return true
        case 17 where bytes.equalsIgnoringCase(name, "transfer-encoding"): return true
        default: break
        }
        if name.count >= 6, bytes.equalsIgnoringCase(name.lowerBound..<(name.lowerBound + 6), "proxy-") { return true }
        guard connection > 0 else { return false }
        var listed = false
        bytes.forEachField(in: fields) { other, value in
            guard !listed, other.count == 10, bytes.equalsIgnoringCase(other, "connection") else { return }
            bytes.forEachListElement(value) { token in
                if !listed, bytes.equalIgnoringCase(token, name) { listed = true }
            }
        }
        return listed
    }

    private static func writeLine(_ bytes: UnsafeRawBufferPointer, _ name: Range<Int>, _ value: Range<Int>, into out: inout ByteBuffer) {
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[name]))
        out.writeStaticString(": ")
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[value]))
        out.writeStaticString("\r\n")
    }
}

extension ByteBuffer {
    /// Writes `name: value` and its CRLF.
    mutating func writeFieldLine(_ name: StaticString, _ value: String) {
        writeStaticString(name)
        writeStaticString(": ")
        writeString(value)
        writeStaticString("\r\n")
    }
}

extension UnsafeRawBufferPointer {
    /// Whether the bytes of two ranges are equal ignoring ASCII case.
    func equalIgnoringCase(_ one: Range<Int>, _ other: Range<Int>) -> Bool {
        guard one.count == other.count else { return false }
        for offset in 0..<one.count where HTTP1Byte.lowercased(self[one.lowerBound + offset]) != HTTP1Byte.lowercased(self[other.lowerBound + offset]) {
            return false
        }
        return true
    }
}
