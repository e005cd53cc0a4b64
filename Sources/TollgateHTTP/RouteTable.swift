import HTTPTypes
import Tollgate

/// Finds the route rule of a request: method + path pattern, first match in configuration order.
///
/// Paths are matched the way the upstream will read them, so that spelling a path differently cannot
/// dodge a rule: segments are percent-decoded before comparison, a single trailing `/` is ignored, and a
/// path with an empty segment (`//`), a `.` or `..` segment, an encoded `/` (`%2F`) or broken
/// percent-encoding is refused (400) rather than guessed at. The query is not part of matching.
public struct RouteTable: Sendable {
    public let routes: [RouteSettings]
    public let unmatched: UnmatchedRoutes

    public init(routes: [RouteSettings], unmatched: UnmatchedRoutes = .pass) {
        self.routes = routes
        self.unmatched = unmatched
    }

    /// The result of matching one request.
    public enum Match: Sendable, Equatable {
        /// The route at `index` matched; `organization` is the decoded `{org}` segment when the pattern has one.
        case route(index: Int, organization: String?)
        /// No route matched.
        case unmatched
        /// The path cannot be matched safely; the string says why (for a 400).
        case invalidPath(String)
    }

    public func match(method: HTTPRequest.Method, path: String) -> Match {
        let segments: [Substring]
        switch Self.segments(of: path) {
        case .success(let decoded): segments = decoded
        case .failure(let why): return .invalidPath(why.message)
        }
        for (index, route) in routes.enumerated() {
            if let wanted = route.method, wanted != method.rawValue { continue }
            if let organization = Self.match(route.segments, segments) {
                return .route(index: index, organization: organization)
            }
        }
        return .unmatched
    }

    /// Nil when `pattern` does not match; otherwise the `{org}` value (or nil inside the optional when none).
    static func match(_ pattern: [RouteSettings.Segment], _ segments: [Substring]) -> String?? {
        var organization: Substring?
        var index = 0
        for part in pattern {
            switch part {
            case .rest:
                return .some(organization.map(String.init))
            case .literal(let text):
                guard index < segments.count, segments[index] == text else { return nil }
            case .parameter(let name):
                guard index < segments.count, !segments[index].isEmpty else { return nil }
                if name == RouteSettings.organizationParameter { organization = segments[index] }
            }
            index += 1
        }
        return index == segments.count ? .some(organization.map(String.init)) : nil
    }

    struct PathError: Error {
        let message: String
    }

    /// The decoded segments of the path part of a request target (slices of it where nothing was encoded).
    static func segments(of target: String) -> Result<[Substring], PathError> {
        let end = target.utf8.firstIndex(of: UInt8(ascii: "?")) ?? target.endIndex
        let path = target[..<end]
        guard path.utf8.first == UInt8(ascii: "/") else { return .failure(PathError(message: "the request target must be a path starting with /")) }
        // A request target is ASCII (RFC 3986); with nothing else, bytes and characters line up.
        guard path.utf8.allSatisfy({ $0 < 0x80 }) else { return .failure(PathError(message: "the path has non-ASCII characters")) }
        var segments: [Substring] = []
        segments.reserveCapacity(8)
        var start = path.index(after: path.startIndex)
        while start < path.endIndex {
            let stop = path.utf8[start...].firstIndex(of: UInt8(ascii: "/")) ?? path.endIndex
            let part = path[start..<stop]
            // A trailing / ends the path without an empty last segment.
            if part.isEmpty { return .failure(PathError(message: "the path has an empty segment (//)")) }
            guard let decoded = percentDecoded(part) else {
                return .failure(PathError(message: "the path has broken percent-encoding"))
            }
            if decoded == "." || decoded == ".." { return .failure(PathError(message: "the path has a . or .. segment")) }
            if decoded.utf8.contains(UInt8(ascii: "/")) { return .failure(PathError(message: "the path has an encoded / (%2F) in a segment")) }
            segments.append(decoded)
            start = stop == path.endIndex ? stop : path.index(after: stop)
        }
        return .success(segments)
    }

    static func percentDecoded(_ text: Substring) -> Substring? {
        guard text.utf8.contains(UInt8(ascii: "%")) else { return text }
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self).map { Substring($0) }
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
