import Foundation
import Yams

/// Reads the sidecar's sections (`server`, `upstream`, `store`, `keys`, `routes`, `unmatched`) into
/// `SidecarSettings`; the keys and their defaults are listed there.
extension ConfigReader {
    static let serverFields = [
        "host", "port", "admin_host", "admin_port", "admin_token", "watch_files", "watch_interval", "max_header_size", "max_body_size", "idle_timeout",
        "legacy_headers", "access_log", "access_log_sample", "shutdown_timeout", "threads",
    ]
    static let upstreamFields = [
        "url", "pool_size", "connect_timeout", "response_timeout", "read_timeout", "forward_credentials", "ca_file",
    ]
    static let memoryStoreFields = ["backend", "max_entries"]
    static let redisStoreFields = [
        "backend", "url", "cluster", "sentinel", "failure_policy", "timeout", "connections", "unavailable_retry_after", "coalesce",
        "max_batch", "tls",
    ]
    static let storeTLSFields = ["ca_file", "cert_file", "key_file", "server_name"]
    static let commonKeyFields = ["source", "cache_ttl", "negative_cache_ttl", "cache_size", "stale_if_error"]
    static let routeFields = ["method", "path", "scope", "cost", "limits"]

    // MARK: server

    func server(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> ServerSettings {
        let fields = try fields(of: node, at: path, expected: "a mapping of server settings")
        try rejectUnknown(fields, allowed: Self.serverFields, in: "server")
        var server = ServerSettings()
        for entry in fields.entries {
            let at = path.appending(entry.name)
            let value = entry.value
            switch entry.name {
            case "host": server.host = try host(value, at: at)
            case "port": server.port = try port(value, at: at)
            case "admin_host": server.adminHost = try host(value, at: at)
            case "admin_port": server.adminPort = try port(value, at: at)
            case "admin_token":
                let token = try string(value, at: at, expected: "the admin API's bearer token")
                guard token.utf8.count >= 16, token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
                    throw error(at: value, at, "expected at least 16 visible ASCII characters, without spaces")
                }
                server.adminToken = token
            case "watch_files": server.watchFiles = try bool(value, at: at)
            case "watch_interval": server.watchInterval = try timeAmount(value, at: at)
            case "max_header_size": server.maxHeaderSize = try byteSize(value, at: at, minimum: 1024)
            case "max_body_size": server.maxBodySize = try byteSize(value, at: at)
            case "idle_timeout": server.idleTimeout = try timeAmount(value, at: at)
            case "legacy_headers": server.legacyHeaders = try bool(value, at: at)
            case "access_log":
                server.accessLog = try choice(
                    value, at: at, from: ServerSettings.AccessLogLevel.allCases.map { ($0.rawValue, $0) })
            case "access_log_sample": server.accessLogSample = try count(value, at: at)
            case "shutdown_timeout": server.shutdownTimeout = try timeAmount(value, at: at)
            case "threads":
                let threads = try count(value, at: at)
                guard threads <= 1024 else { throw error(at: value, at, "expected 1 to 1024 event-loop threads") }
                server.threads = threads
            default: break
            }
        }
        if server.port != 0, server.port == server.adminPort, server.host == server.adminHost {
            throw error(
                at: fields["admin_port"] ?? fields["port"] ?? node, path.appending("admin_port"),
                "expected a port other than server.port (\(server.port)): the admin listener needs its own")
        }
        return server
    }

    // MARK: upstream

    func upstream(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> UpstreamSettings {
        let fields = try fields(of: node, at: path, expected: "a mapping of upstream settings")
        try rejectUnknown(fields, allowed: Self.upstreamFields, in: "upstream")
        var upstream = UpstreamSettings()
        for entry in fields.entries {
            let at = path.appending(entry.name)
            let value = entry.value
            switch entry.name {
            case "url": upstream.url = try upstreamURL(value, at: at)
            case "pool_size": upstream.poolSize = try count(value, at: at)
            case "connect_timeout": upstream.connectTimeout = try timeAmount(value, at: at)
            case "response_timeout": upstream.responseTimeout = try timeAmount(value, at: at)
            case "read_timeout": upstream.readTimeout = try timeAmount(value, at: at)
            case "forward_credentials": upstream.forwardCredentials = try bool(value, at: at)
            case "ca_file": upstream.caFile = try string(value, at: at, expected: "the path of a PEM file of CA certificates")
            default: break
            }
        }
        if let node = fields["ca_file"], upstream.url?.lowercased().hasPrefix("https://") != true {
            throw error(
                at: node, path.appending("ca_file"),
                "expected no ca_file: it applies to an https:// upstream.url, and the upstream is \(upstream.url ?? "the built-in stand-in")")
        }
        return upstream
    }

    func upstreamURL(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> String {
        let expected = "an http:// URL such as http://127.0.0.1:3000"
        let text = try string(node, at: path, expected: expected)
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty, url.query == nil, url.fragment == nil, url.user == nil
        else {
            throw error(
                at: node, path,
                "expected \(expected) (http or https, a host, an optional port and path prefix, no query), "
                    + "found \(describe(node))")
        }
        return text.hasSuffix("/") ? String(text.dropLast()) : text
    }

    // MARK: store

    func store(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> StoreSettings {
        let fields = try fields(of: node, at: path, expected: "a mapping of store settings")
        var store = StoreSettings()
        if let backend = fields["backend"] {
            store.backend = try choice(
                backend, at: path.appending("backend"), from: StoreSettings.Backend.allCases.map { ($0.rawValue, $0) })
        }
        let allowed = store.backend == .memory ? Self.memoryStoreFields : Self.redisStoreFields
        for entry in fields.entries where !allowed.contains(entry.name) {
            if entry.name == "packed_state" {
                throw error(
                    at: entry.key, path.appending(entry.name),
                    "no longer a setting: counters are kept in one binary value per scope of a plan, and state "
                        + "written by earlier versions is read and converted; remove the line")
            }
            let other = store.backend == .memory ? Self.redisStoreFields : Self.memoryStoreFields
            if other.contains(entry.name) {
                throw error(
                    at: entry.key, path.appending(entry.name),
                    "\"\(entry.name)\" does not apply to the \(store.backend.rawValue) backend, which takes "
                        + list(allowed))
            }
            throw unknownField(entry, in: fields, allowed: allowed, what: "a \(store.backend.rawValue) store")
        }
        for entry in fields.entries {
            let at = path.appending(entry.name)
            let value = entry.value
            switch entry.name {
            case "max_entries": store.maxEntries = try count(value, at: at)
            case "url": store.url = try redisURL(value, at: at)
            case "cluster": store.cluster = try clusterURLs(value, at: at, what: "a Redis Cluster's seed nodes")
            case "sentinel": store.sentinel = try storeSentinel(value, at: at)
            case "failure_policy":
                store.failurePolicy = try choice(
                    value, at: at, from: StoreSettings.FailurePolicy.allCases.map { ($0.rawValue, $0) })
            case "timeout": store.timeout = try timeAmount(value, at: at)
            case "connections": store.connections = try count(value, at: at)
            case "unavailable_retry_after": store.unavailableRetryAfter = try timeAmount(value, at: at)
            case "coalesce": store.coalesce = try bool(value, at: at)
            case "max_batch": store.maxBatch = try count(value, at: at)
            case "tls": store.tls = try storeTLS(value, at: at)
            default: break
            }
        }
        let targets = fields.entries.filter { ["url", "cluster", "sentinel"].contains($0.name) }
        if targets.count > 1 {
            throw error(
                at: targets[1].key, path.appending(targets[1].name),
                "store.url (one server), store.cluster (a Redis Cluster's seed nodes) and store.sentinel (the primary "
                    + "Sentinel names) exclude each other; keep one")
        }
        if store.backend == .redis, targets.isEmpty {
            throw error(
                at: node, path.appending("url"),
                "missing required field for the redis backend; expected a URL such as redis://127.0.0.1:6379 "
                    + "(or store.cluster, a list of a Redis Cluster's seed nodes, or store.sentinel)")
        }
        if let tlsKey = fields.entries.first(where: { $0.name == "tls" })?.key,
            let urls = store.cluster ?? store.sentinel?.nodes, !urls.allSatisfy({ $0.hasPrefix("rediss://") })
        {
            throw error(
                at: tlsKey, path.appending("tls"),
                "expected rediss:// URLs in store.\(store.cluster != nil ? "cluster" : "sentinel.nodes") with tls "
                    + "(TLS settings apply to TLS connections), found a redis:// URL")
        }
        if let tlsKey = fields.entries.first(where: { $0.name == "tls" })?.key, let url = store.url, !url.hasPrefix("rediss://") {
            // Only the scheme is named: the URL may hold a password.
            throw error(
                at: tlsKey, path.appending("tls"),
                "expected a rediss:// store.url with tls (TLS settings apply to TLS connections), found a "
                    + "\(url.hasPrefix("unix://") ? "unix://" : "redis://") URL")
        }
        return store
    }

    /// `store.tls`: the files are checked when the sidecar starts (they are read then), their shape here.
    func storeTLS(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> StoreTLSSettings {
        let fields = try fields(of: node, at: path, expected: "a mapping of TLS settings (\(list(Self.storeTLSFields)))")
        try rejectUnknown(fields, allowed: Self.storeTLSFields, in: "store.tls")
        func file(_ name: String, _ what: String) throws(ConfigurationError) -> String? {
            guard let node = fields[name] else { return nil }
            return try string(node, at: path.appending(name), expected: "the path of a PEM file of \(what)")
        }
        var tls = StoreTLSSettings(
            caFile: try file("ca_file", "CA certificates"), certFile: try file("cert_file", "the client certificate"),
            keyFile: try file("key_file", "the client's private key"))
        if let node = fields["server_name"] {
            tls.serverName = try tlsServerName(node, at: path.appending("server_name"))
        }
        if let certificate = fields["cert_file"], tls.keyFile == nil {
            throw error(at: certificate, path.appending("key_file"), "missing; cert_file needs the certificate's private key in key_file")
        }
        if let key = fields["key_file"], tls.certFile == nil {
            throw error(at: key, path.appending("cert_file"), "missing; key_file needs the client certificate in cert_file")
        }
        return tls
    }

    /// A DNS name for SNI and certificate verification. SNI carries no address: an address host is
    /// verified against the address itself, with no `server_name`.
    func tlsServerName(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> String {
        let expected = "a DNS name such as redis.example.com"
        let text = try string(node, at: path, expected: expected)
        let isName = text.utf8.count <= 253 && text.utf8.allSatisfy { byte in
            byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
                || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
        }
        guard isName else { throw error(at: node, path, "expected \(expected) (letters, digits, '-', '.'), found \(describe(node))") }
        guard !text.utf8.allSatisfy({ $0 == UInt8(ascii: ".") || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) }) else {
            throw error(
                at: node, path,
                "expected \(expected), not an address: leave server_name out and the address is verified, found \(describe(node))")
        }
        return text
    }

    /// A Redis URL, checked for its scheme only (the sidecar parses the rest). Never echoed: it may hold
    /// a password.
    func redisURL(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> String {
        let expected = "a URL such as redis://127.0.0.1:6379, rediss://redis.example.com:6380 or unix:///run/redis.sock"
        guard case .scalar(let scalar) = node, !Self.isNull(scalar), !scalar.string.isEmpty else {
            throw error(at: node, path, "expected \(expected), found \(describe(node))")
        }
        let text = scalar.string
        guard text.hasPrefix("redis://") || text.hasPrefix("rediss://") || text.hasPrefix("unix://") else {
            throw error(at: node, path, "expected \(expected), found a value that starts with none of redis://, rediss:// or unix://")
        }
        return text
    }

    /// `store.sentinel`: the primary's name, the sentinels' URLs, the primary's credentials.
    func storeSentinel(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> StoreSentinelSettings {
        let allowed = ["master", "nodes", "username", "password"]
        let fields = try fields(of: node, at: path, expected: "a mapping of Sentinel settings (\(list(allowed)))")
        try rejectUnknown(fields, allowed: allowed, in: "store.sentinel")
        let masterNode = try required("master", in: fields, expected: "the name the sentinels monitor the primary under")
        let master = try string(masterNode, at: path.appending("master"), expected: "the name the sentinels monitor the primary under")
        guard !master.isEmpty, !master.contains(where: \.isWhitespace) else {
            throw error(at: masterNode, path.appending("master"), "expected a name without spaces, found \"\(master)\"")
        }
        let nodesNode = try required("nodes", in: fields, expected: "a list of sentinel URLs")
        let nodes = try clusterURLs(nodesNode, at: path.appending("nodes"), what: "sentinels")
        var settings = StoreSentinelSettings(master: master, nodes: nodes)
        if let username = fields["username"] {
            settings.username = try string(username, at: path.appending("username"), expected: "the primary's ACL user")
        }
        if let password = fields["password"] {
            // Never echoed in an error: it is a password.
            guard case .scalar(let scalar) = password, !Self.isNull(scalar) else {
                throw error(at: password, path.appending("password"), "expected the primary's password as a string")
            }
            settings.password = scalar.string
        }
        if settings.username != nil, settings.password == nil {
            throw error(at: node, path.appending("password"), "missing; a username needs a password")
        }
        return settings
    }

    /// A non-empty list of `redis://` URLs, or of `rediss://` URLs (not mixed, no unix sockets): the
    /// seeds of `store.cluster`, the sentinels of `store.sentinel.nodes`. Never echoed: they may hold a password.
    func clusterURLs(_ node: Node, at path: FieldPath, what: String) throws(ConfigurationError) -> [String] {
        let expected = "a list of \(what) such as [redis://10.0.0.1:6379, redis://10.0.0.2:6379]"
        guard case .sequence(let items) = node, !items.isEmpty else {
            throw error(at: node, path, "expected \(expected), found \(describe(node))")
        }
        var urls: [String] = []
        for (index, item) in items.enumerated() {
            let url = try redisURL(item, at: path.appending(index: index))
            guard !url.hasPrefix("unix://") else {
                throw error(at: item, path.appending(index: index), "expected a redis:// or rediss:// URL (cluster nodes are reached over TCP), found a unix:// URL")
            }
            if let first = urls.first, first.hasPrefix("rediss://") != url.hasPrefix("rediss://") {
                throw error(at: item, path.appending(index: index), "expected every seed URL to use the same scheme as the first (all redis:// or all rediss://)")
            }
            urls.append(url)
        }
        return urls
    }

    // MARK: keys

    func keys(_ node: Node, at path: FieldPath, store: StoreSettings) throws(ConfigurationError) -> KeySourceSettings {
        let fields = try fields(of: node, at: path, expected: "a mapping of key registry settings")
        var keys = KeySourceSettings()
        if let source = fields["source"] {
            keys.source = try choice(
                source, at: path.appending("source"), from: KeySourceSettings.Source.allCases.map { ($0.rawValue, $0) })
        }
        let own = keys.source == .file ? "file" : "url"
        let allowed = Self.commonKeyFields + [own]
        for entry in fields.entries where !allowed.contains(entry.name) {
            if entry.name == "file" || entry.name == "url" {
                throw error(
                    at: entry.key, path.appending(entry.name),
                    "\"\(entry.name)\" does not apply to keys from \(keys.source.rawValue == "file" ? "a file" : "redis"), "
                        + "which take \(list(allowed))")
            }
            throw unknownField(entry, in: fields, allowed: allowed, what: "keys")
        }
        for entry in fields.entries {
            let at = path.appending(entry.name)
            let value = entry.value
            switch entry.name {
            case "file": keys.file = try string(value, at: at, expected: "the path of a key file")
            case "url": keys.url = try redisURL(value, at: at)
            case "cache_ttl": keys.cacheTTL = try timeAmount(value, at: at)
            case "negative_cache_ttl": keys.negativeCacheTTL = try timeAmount(value, at: at)
            case "cache_size": keys.cacheSize = try count(value, at: at)
            case "stale_if_error": keys.staleIfError = try timeAmount(value, at: at)
            default: break
            }
        }
        if keys.source == .redis, keys.url == nil {
            // Shared with the store: its server (store.url), or its cluster or Sentinel primary (left as nil here).
            guard store.backend == .redis, store.url != nil || store.cluster != nil || store.sentinel != nil else {
                throw error(
                    at: node, path.appending("url"),
                    "missing; keys from redis need a URL here, or a redis store (store.url, store.cluster or store.sentinel) they share")
            }
            keys.url = store.url
        }
        return keys
    }

    // MARK: routes

    func routes(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> [RouteSettings] {
        guard case .sequence(let items) = node else {
            throw error(at: node, path, "expected a list of routes (items starting with '-'), found \(describe(node))")
        }
        var routes: [RouteSettings] = []
        var seen: [String: Int?] = [:]
        for (index, item) in items.enumerated() {
            let itemPath = path.appending(index: index)
            let route = try route(item, at: itemPath)
            let identity = "\(route.method ?? "*") \(route.segments)"
            if let first = seen[identity] {
                throw error(
                    at: item, itemPath,
                    "duplicate route \(route.method ?? "*") \(route.path)\(first.map { " (first at line \($0))" } ?? ""); "
                        + "the first one always matches, so this one never would")
            }
            seen[identity] = item.mark?.line
            routes.append(route)
        }
        return routes
    }

    func route(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> RouteSettings {
        let fields = try fields(of: node, at: path, expected: "a route (a mapping with path, method, scope, cost, limits)")
        try rejectUnknown(fields, allowed: Self.routeFields, in: "a route")
        let pathNode = try required("path", in: fields, expected: "a path pattern such as /api/v1/messages/send")
        let pattern = try string(pathNode, at: path.appending("path"), expected: "a path pattern such as /api/v1/messages/send")
        let segments = try pathPattern(pattern, node: pathNode, at: path.appending("path"))

        var method: String?
        if let methodNode = fields["method"] {
            let text = try string(methodNode, at: path.appending("method"), expected: "an HTTP method such as POST, or *")
            if text != "*" {
                guard text.utf8.allSatisfy({ $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }), text.utf8.count <= 32 else {
                    throw error(
                        at: methodNode, path.appending("method"),
                        "expected an HTTP method in capitals such as GET or POST, or *, found \(describe(methodNode))")
                }
                method = text
            }
        }
        var scope: String?
        if let scopeNode = fields["scope"] {
            let text = try string(scopeNode, at: path.appending("scope"), expected: "a scope such as messages:send")
            guard Self.isScope(text) else {
                throw error(
                    at: scopeNode, path.appending("scope"),
                    "expected a scope of 1-128 visible ASCII characters without spaces, such as messages:send, "
                        + "found \(describe(scopeNode))")
            }
            scope = text
        }
        var cost = RouteSettings.Cost.fixed(1)
        if let costNode = fields["cost"] {
            cost = try routeCost(costNode, at: path.appending("cost"))
        }
        var limits = RouteSettings.LimitSelection.all
        if let limitsNode = fields["limits"] {
            limits = try choice(
                limitsNode, at: path.appending("limits"),
                from: RouteSettings.LimitSelection.allCases.map { ($0.rawValue, $0) })
        }
        return RouteSettings(method: method, path: pattern, segments: segments, scope: scope, cost: cost, limits: limits)
    }

    /// Scopes travel in `WWW-Authenticate` and in the registry's space-separated lists.
    static func isScope(_ text: String) -> Bool {
        (1...128).contains(text.utf8.count)
            && text.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }
    }

    func pathPattern(_ pattern: String, node: Node, at path: FieldPath) throws(ConfigurationError) -> [RouteSettings.Segment] {
        func fail(_ why: String) -> ConfigurationError {
            error(at: node, path, "\(why), in \"\(pattern)\"; expected a pattern such as /api/v1/orgs/{org}/messages/{id}")
        }
        guard pattern.hasPrefix("/") else { throw fail("a path pattern starts with /") }
        if pattern == "/" { return [] }
        let parts = pattern.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        var segments: [RouteSettings.Segment] = []
        var names = Set<String>()
        for (index, part) in parts.enumerated() {
            if part.isEmpty {
                throw fail(index == parts.count - 1 ? "remove the trailing /" : "empty segment (//)")
            }
            if part == "*" {
                guard index == parts.count - 1 else { throw fail("* is only allowed as the last segment") }
                segments.append(.rest)
            } else if part.hasPrefix("{") {
                let name = part.dropFirst().dropLast()
                guard part.hasSuffix("}"), !name.isEmpty,
                    name.utf8.allSatisfy({ byte in
                        byte == UInt8(ascii: "_") || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                            || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    })
                else { throw fail("a parameter is {name} with letters, digits or _ in the name, found \"\(part)\"") }
                guard names.insert(String(name)).inserted else { throw fail("parameter {\(name)} appears twice") }
                segments.append(.parameter(String(name)))
            } else {
                guard !part.contains("{"), !part.contains("}"), !part.contains("*"), !part.contains("%"),
                    part != ".", part != "..",
                    part.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F && $0 != "?" && $0 != "#" })
                else {
                    throw fail("a literal segment is visible ASCII without {, }, *, %, ? or # and not . or .., found \"\(part)\"")
                }
                segments.append(.literal(String(part)))
            }
        }
        return segments
    }

    func routeCost(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> RouteSettings.Cost {
        let expected = "a cost: an integer of 0 or more, or { per_item: FIELD, max_body_size: SIZE }"
        switch node {
        case .scalar:
            return .fixed(try nonNegativeInteger(node, at: path, expected: expected))
        case .mapping:
            let fields = try fields(of: node, at: path, expected: expected)
            try rejectUnknown(fields, allowed: ["per_item", "max_body_size"], in: "cost")
            let itemNode = try required("per_item", in: fields, expected: "the JSON field holding an array, such as recipients")
            let field = try string(itemNode, at: path.appending("per_item"), expected: "the JSON field holding an array, such as recipients")
            let parts = field.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard !parts.contains(where: \.isEmpty) else {
                throw error(
                    at: itemNode, path.appending("per_item"),
                    "expected a field name, or names joined by dots for nested objects (message.recipients), found \(describe(itemNode))")
            }
            var maxBodySize = 1024 * 1024
            if let sizeNode = fields["max_body_size"] {
                maxBodySize = try byteSize(sizeNode, at: path.appending("max_body_size"))
            }
            return .perItem(field: parts, maxBodySize: maxBodySize)
        default:
            throw error(at: node, path, "expected \(expected), found \(describe(node))")
        }
    }

    // MARK: unmatched

    func unmatched(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> UnmatchedRoutes {
        try choice(node, at: path, from: UnmatchedRoutes.allCases.map { ($0.rawValue, $0) })
    }

    // MARK: Value types

    /// A host name or address to listen on.
    func host(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> String {
        let text = try string(node, at: path, expected: "a host name or address such as 127.0.0.1")
        guard text.utf8.count <= 253, !text.contains(" "), !text.contains("/") else {
            throw error(at: node, path, "expected a host name or address such as 127.0.0.1 or ::1, found \(describe(node))")
        }
        return text
    }

    /// A TCP port, 0 (any free port) to 65535.
    func port(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> Int {
        let value = try nonNegativeInteger(node, at: path, expected: "a port from 0 to 65535")
        guard value <= 65_535 else { throw error(at: node, path, "expected a port from 0 to 65535, found \(value)") }
        return value
    }

    /// A positive integer that fits an `Int` comfortably (counts, sizes of pools and caches).
    func count(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> Int {
        let value = try positiveInteger(node, at: path)
        guard value <= Int64(Int32.max) else {
            throw error(at: node, path, "expected a positive integer no larger than \(Int32.max), found \(value)")
        }
        return Int(value)
    }

    /// An integer of 0 or more, unquoted.
    func nonNegativeInteger(_ node: Node, at path: FieldPath, expected: String) throws(ConfigurationError) -> Int {
        guard case .scalar(let scalar) = node, scalar.style == .plain || scalar.style == .any,
            case .some(.some(let value)) = Self.integerValue(scalar.string), value >= 0, value <= Int64(Int32.max)
        else {
            throw error(at: node, path, "expected \(expected), found \(describe(node))")
        }
        return Int(value)
    }

    /// A duration as a `Duration`.
    func timeAmount(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> Duration {
        .microseconds(try duration(node, at: path))
    }

    static let byteUnits: [(suffix: String, bytes: Int64)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]

    /// A size in bytes: `65536`, `64KiB`, `16MiB`, `1GiB`; at most 64GiB.
    func byteSize(_ node: Node, at path: FieldPath, minimum: Int = 1) throws(ConfigurationError) -> Int {
        let expected = "a size such as 65536, 64KiB, 16MiB or 1GiB (bytes, or an integer followed by KiB, MiB or GiB)"
        guard case .scalar(let scalar) = node, !Self.isNull(scalar) else {
            throw error(at: node, path, "expected \(expected), found \(describe(node))")
        }
        let text = scalar.string
        let digits = text.prefix { $0.isASCII && ($0.isNumber || $0 == "_") }
        let suffix = text[digits.endIndex...]
        let unit: Int64
        if suffix.isEmpty {
            unit = 1
        } else if let match = Self.byteUnits.first(where: { $0.suffix == suffix }) {
            unit = match.bytes
        } else {
            throw error(at: node, path, "expected \(expected), found \(describe(node))")
        }
        guard case .some(.some(let count)) = Self.integerValue(String(digits)), count > 0 else {
            throw error(at: node, path, "expected \(expected), found \(describe(node))")
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: unit)
        guard !overflow, bytes <= 64 << 30 else {
            throw error(at: node, path, "expected a size of at most 64GiB, found \(text)")
        }
        guard bytes >= minimum else {
            throw error(at: node, path, "expected a size of at least \(minimum) bytes, found \(text)")
        }
        return Int(bytes)
    }
}
