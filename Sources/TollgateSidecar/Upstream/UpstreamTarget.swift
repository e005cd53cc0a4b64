import Foundation
import NIOCore

/// Host, port and TLS of the upstream, and the path prefix requests go under.
struct UpstreamTarget: Sendable {
    var host: String
    var port: Int
    var tls: Bool
    /// Prepended to every request's path; empty or starting with `/`, never ending with one.
    var pathPrefix: String

    init(host: String, port: Int, tls: Bool, pathPrefix: String) {
        self.host = host
        self.port = port
        self.tls = tls
        self.pathPrefix = pathPrefix
    }

    /// Parses a validated `upstream.url` (`http[s]://host[:port][/prefix]`).
    init?(url: String) {
        guard let parsed = URL(string: url), let host = parsed.host, !host.isEmpty else { return nil }
        self.host = host
        tls = parsed.scheme?.lowercased() == "https"
        port = parsed.port ?? (tls ? 443 : 80)
        let path = parsed.path
        pathPrefix = path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    /// `host:port` for a `Host` field when the client sent none.
    var authority: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    var isIPAddress: Bool {
        (try? SocketAddress(ipAddress: host, port: port)) != nil
    }
}
