import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Where admitted requests go: the message API (`HTTPForwarder`) or the built-in stand-in.
protocol Upstream: Sendable {
    func respond(to request: Request, context: SidecarRequestContext, settings: ForwardingSettings) async -> Response
}

/// The parts of the configuration a forward reads, as of the request (they change on reload).
struct ForwardingSettings: Sendable {
    var maxBodySize: Int
    var responseTimeout: Duration
    var forwardCredentials: Bool
}

/// Header fields that describe one connection, not the message (RFC 9110 §7.6.1), and must not be
/// forwarded, plus those that the sidecar sets itself.
enum HopByHop {
    /// Always dropped, both ways.
    static let names: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    ]

    /// Whether `name` (lowercase) is connection-specific, given the tokens of the message's `Connection`.
    static func isHopByHop(_ name: String, listedIn connection: Set<String>) -> Bool {
        names.contains(name) || name.hasPrefix("proxy-") || connection.contains(name)
    }

    /// The field names listed in `Connection` headers, lowercased.
    static func connectionTokens(_ values: some Sequence<String>) -> Set<String> {
        var tokens = Set<String>()
        for value in values {
            for token in value.split(separator: ",") {
                let trimmed = token.trimmingCharacters(in: .whitespaces).lowercased()
                if !trimmed.isEmpty { tokens.insert(trimmed) }
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
