import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// Where admitted requests go: the message API (`HTTPForwarder`) or the built-in stand-in.
protocol Upstream: Sendable {
    func respond(to request: Request, context: SidecarRequestContext, settings: ForwardingSettings) async -> Response
}

/// The parts of the configuration a forward reads, as of the request (they change on reload).
struct ForwardingSettings: Sendable {
    var maxBodySize: Int
    var responseTimeout: Duration
    var readTimeout: Duration
    var forwardCredentials: Bool
}

/// Header fields that describe one connection, not the message (RFC 9110 §7.6.1), and must not be
/// forwarded, plus those that the sidecar sets itself.
enum HopByHop {
    /// Whether `name` (lowercase) is connection-specific, given the tokens of the message's `Connection`:
    /// always `Connection`, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
    static func isHopByHop(_ name: String, listedIn connection: Set<String>) -> Bool {
        switch name {
        case "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade": return true
        default: return name.hasPrefix("proxy-") || (!connection.isEmpty && connection.contains(name))
        }
    }

    /// Whether a `Connection` value has the `close` token (ASCII case-insensitive, without allocating).
    static func saysClose(_ value: String) -> Bool {
        let bytes = value.utf8
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }
        var start = bytes.startIndex
        while true {
            let end = bytes[start...].firstIndex(of: UInt8(ascii: ",")) ?? bytes.endIndex
            var token = bytes[start..<end].drop(while: isSpace)
            while let last = token.last, isSpace(last) { token = token.dropLast() }
            if token.count == 5, zip(token, "close".utf8).allSatisfy({ $0 | 0x20 == $1 }) { return true }
            guard end != bytes.endIndex else { return false }
            start = bytes.index(after: end)
        }
    }

    /// The field names listed in `Connection` headers, lowercased.
    static func connectionTokens(_ values: some Sequence<String>) -> Set<String> {
        var tokens = Set<String>()
        for value in values {
            for token in value.split(separator: ",") {
                var trimmed = token.drop { $0 == " " || $0 == "\t" }
                while let last = trimmed.last, last == " " || last == "\t" { trimmed = trimmed.dropLast() }
                if !trimmed.isEmpty { tokens.insert(trimmed.lowercased()) }
            }
        }
        return tokens
    }
}

/// A request body that fails once more than `limit` bytes have gone through: a chunked body has no
/// length to check up front.
struct CappedBody<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable where Base.Element == ByteBuffer {
    typealias Element = ByteBuffer
    let base: Base
    let limit: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        var seen = 0
        let limit: Int

        mutating func next() async throws -> ByteBuffer? {
            guard let buffer = try await base.next() else { return nil }
            seen += buffer.readableBytes
            if seen > limit { throw BodyTooLarge(limit: limit) }
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator(), limit: limit)
    }
}

/// A streamed request body passed `limit` bytes.
struct BodyTooLarge: Error {
    let limit: Int
}

/// A request body that is read at most once, by one iterator, and can be taken back.
///
/// The body of a request is the connection's inbound stream, which allows one reader at a time: whoever
/// the body is lent to (the forwarder's upload, which runs in a task of its own so that the upstream's
/// answer can stream back while the body still streams up) must be done with it before the server reads
/// on (to the next request). `close()` makes sure of that: it waits for a read in progress to return,
/// and every read after it fails with `BodyAlreadyStreamed`. A second iterator fails the same way at
/// once, so a body is never sent twice or sent cut short.
final class ExclusiveBody<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable where Base.Element == ByteBuffer {
    typealias Element = ByteBuffer

    private struct State {
        var iterated = false
        var reading = false
        var closed = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let base: Base
    private let state = Mutex(State())

    init(_ base: Base) {
        self.base = base
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let owner: ExclusiveBody
        /// `nil` for an iterator made after the first.
        var base: Base.AsyncIterator?

        mutating func next() async throws -> ByteBuffer? {
            guard base != nil, owner.beginRead() else { throw BodyAlreadyStreamed() }
            defer { owner.endRead() }
            return try await base!.next()
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        let first = state.withLock { state in
            defer { state.iterated = true }
            return !state.iterated
        }
        return AsyncIterator(owner: self, base: first ? base.makeAsyncIterator() : nil)
    }

    /// Whether a read may start (the body is not taken back); marks it started.
    private func beginRead() -> Bool {
        state.withLock { state in
            if state.closed || state.reading { return false }
            state.reading = true
            return true
        }
    }

    private func endRead() {
        let waiters = state.withLock { state in
            state.reading = false
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Takes the body back: no read starts after this, and one in progress has returned when it does.
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state in
                state.closed = true
                if state.reading {
                    state.waiters.append(continuation)
                    return false
                }
                return true
            }
            if ready { continuation.resume() }
        }
    }
}

/// A request body was to be read again (a retried request) or after it was taken back.
struct BodyAlreadyStreamed: Error {}
