import HTTPTypes
import TollgateHTTP

/// What makes two requests of one connection alike for the limiter: the method, the request target and
/// the fields that carry the key, as bytes, with what was made of them (the method, the path and the
/// key fields as the limiter reads them). A client sends request after request of one kind on a
/// connection; the next one alike reuses these instead of making them again, and may reuse the
/// limiter's admission (`RateLimiter.Admission`).
///
/// Only a request that can be compared byte for byte has a kind: origin-form target, a method the
/// limiter knows, no key field repeated, a connection kept alive.
final class RequestKind {
    /// The limiter's admission of the last request of this kind, while it may be reused.
    var admission: RateLimiter.Admission?
    let method: HTTPRequest.Method
    let path: String
    let credentials: HTTPFields
    private let methodBytes: [UInt8]
    private let target: [UInt8]
    private let authorization: [UInt8]?
    private let apiKey: [UInt8]?

    init?(_ head: RequestHead, method: HTTPRequest.Method, path: String, credentials: HTTPFields, in bytes: UnsafeRawBufferPointer) {
        guard head.keepAlive, !head.credentialsRepeated, bytes[head.target.lowerBound] == UInt8(ascii: "/") else { return nil }
        self.method = method
        self.path = path
        self.credentials = credentials
        methodBytes = Array(bytes[head.methodRange])
        target = Array(bytes[head.target])
        authorization = head.authorization.map { Array(bytes[$0]) }
        apiKey = head.apiKeyField.map { Array(bytes[$0]) }
    }

    /// Whether `head` (in `bytes`) is a request of this kind. Its key fields are compared in time that
    /// does not depend on where they differ.
    func matches(_ head: RequestHead, in bytes: UnsafeRawBufferPointer) -> Bool {
        guard !head.credentialsRepeated, Self.equal(target, head.target, in: bytes), Self.equal(methodBytes, head.methodRange, in: bytes)
        else { return false }
        return Self.equalSecret(authorization, head.authorization, in: bytes) && Self.equalSecret(apiKey, head.apiKeyField, in: bytes)
    }

    private static func equal(_ kept: [UInt8], _ range: Range<Int>, in bytes: UnsafeRawBufferPointer) -> Bool {
        kept.count == range.count && kept.withUnsafeBytes { $0.elementsEqual(bytes[range]) }
    }

    private static func equalSecret(_ kept: [UInt8]?, _ range: Range<Int>?, in bytes: UnsafeRawBufferPointer) -> Bool {
        switch (kept, range) {
        case (nil, nil): true
        case (let kept?, let range?): kept.count == range.count && kept.withUnsafeBytes { differences($0, bytes, from: range.lowerBound) == 0 }
        default: false
        }
    }

    /// The bits that differ between `kept` and the as many bytes of `bytes` from `start`, or-ed
    /// together over every byte (no early exit); concrete types, so that it compiles to a plain loop.
    private static func differences(_ kept: UnsafeRawBufferPointer, _ bytes: UnsafeRawBufferPointer, from start: Int) -> UInt8 {
        var difference: UInt8 = 0
        for index in 0..<kept.count { difference |= kept[index] ^ bytes[start + index] }
        return difference
    }
}
