/// How `RedisClient` and `RedisConnection` reach Redis and how patient they are.
///
/// Every field, with its default:
///
/// | field | type | default | meaning |
/// | --- | --- | --- | --- |
/// | `host` | `String` | `"127.0.0.1"` | server host name or address (TCP) |
/// | `port` | `Int` | `6379` | server TCP port |
/// | `unixSocketPath` | `String?` | `nil` | when set, connect to this unix socket instead of `host`:`port` |
/// | `username` | `String?` | `nil` | ACL user; with `password`, sends `AUTH username password` |
/// | `password` | `String?` | `nil` | sends `AUTH password` (or `AUTH username password`) on connect |
/// | `database` | `Int` | `0` | sends `SELECT database` on connect when not 0 |
/// | `connections` | `Int` | `4` | connections a `RedisClient` keeps open and spreads commands over |
/// | `connectTimeout` | `Duration` | 2 s | limit for TCP connect plus `AUTH` and `SELECT` |
/// | `commandTimeout` | `Duration` | 1 s | limit for one command's reply; a timeout closes the connection |
/// | `maximumPendingCommands` | `Int` | `1024` | commands waiting on one connection before callers get `.overloaded` |
/// | `reconnectBackoffMinimum` | `Duration` | 50 ms | first wait before reconnecting after a failure |
/// | `reconnectBackoffMaximum` | `Duration` | 5 s | longest wait between reconnection attempts |
/// | `tls` | `RedisTLSConfiguration?` | `nil` | when set, TLS over TCP: trust, server name, client certificate |
///
/// The wait between reconnection attempts doubles from the minimum up to the maximum, each wait drawn
/// at random between half and all of its nominal value so that replicas do not reconnect in step.
public struct RedisConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var unixSocketPath: String?
    public var username: String?
    public var password: String?
    public var database: Int
    public var connections: Int
    public var connectTimeout: Duration
    public var commandTimeout: Duration
    public var maximumPendingCommands: Int
    public var reconnectBackoffMinimum: Duration
    public var reconnectBackoffMaximum: Duration
    public var tls: RedisTLSConfiguration?

    public init(
        host: String = "127.0.0.1",
        port: Int = 6379,
        unixSocketPath: String? = nil,
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        connections: Int = 4,
        connectTimeout: Duration = .seconds(2),
        commandTimeout: Duration = .seconds(1),
        maximumPendingCommands: Int = 1024,
        reconnectBackoffMinimum: Duration = .milliseconds(50),
        reconnectBackoffMaximum: Duration = .seconds(5),
        tls: RedisTLSConfiguration? = nil
    ) {
        self.host = host
        self.port = port
        self.unixSocketPath = unixSocketPath
        self.username = username
        self.password = password
        self.database = database
        self.connections = connections
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.maximumPendingCommands = maximumPendingCommands
        self.reconnectBackoffMinimum = reconnectBackoffMinimum
        self.reconnectBackoffMaximum = reconnectBackoffMaximum
        self.tls = tls
    }

    /// Where the server is, for logs and error messages (never includes credentials).
    public var endpointDescription: String {
        if let unixSocketPath { return "unix:\(unixSocketPath)" }
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Checks every field; the error names the field, what was expected and what was found.
    public func validate() throws(RedisClientError) {
        func fail(_ field: String, _ expected: String, _ found: String) -> RedisClientError {
            RedisClientError.invalidField(field, expected: expected, found: found)
        }
        if unixSocketPath == nil {
            guard !host.isEmpty else { throw fail("host", "a host name or address", "an empty string") }
            guard (1...65535).contains(port) else { throw fail("port", "between 1 and 65535", "\(port)") }
        } else if unixSocketPath?.isEmpty == true {
            throw fail("unixSocketPath", "a socket path or nil", "an empty string")
        }
        guard username == nil || password != nil else {
            throw fail("password", "set when username is set", "nil")
        }
        guard database >= 0 else { throw fail("database", "0 or more", "\(database)") }
        guard connections >= 1 else { throw fail("connections", "at least 1", "\(connections)") }
        guard connectTimeout > .zero else { throw fail("connectTimeout", "positive", "\(connectTimeout)") }
        guard commandTimeout > .zero else { throw fail("commandTimeout", "positive", "\(commandTimeout)") }
        guard maximumPendingCommands >= 1 else {
            throw fail("maximumPendingCommands", "at least 1", "\(maximumPendingCommands)")
        }
        guard reconnectBackoffMinimum > .zero else {
            throw fail("reconnectBackoffMinimum", "positive", "\(reconnectBackoffMinimum)")
        }
        guard reconnectBackoffMaximum >= reconnectBackoffMinimum else {
            throw fail("reconnectBackoffMaximum", "at least reconnectBackoffMinimum (\(reconnectBackoffMinimum))", "\(reconnectBackoffMaximum)")
        }
        if let tls {
            // Redis serves TLS on TCP ports only (tls-port).
            guard unixSocketPath == nil else { throw fail("tls", "nil when unixSocketPath is set", "TLS settings") }
            try tls.validate()
        }
    }
}

extension RedisConfiguration {
    /// A configuration from a URL: `redis://[[username]:password@]host[:port][/database]`, the same with
    /// `rediss://` for TLS (trusting the system's roots: set `tls` for more), or
    /// `unix://[[username]:password@]/path/to/socket[?db=N]`. Percent-escapes in the user and password are
    /// decoded. Fields the URL does not mention keep their defaults.
    public init(url: String) throws(RedisClientError) {
        self.init()
        func invalid(_ why: String) -> RedisClientError {
            // The URL may hold a password: it is never repeated in the message.
            RedisClientError(.invalidConfiguration, message: "the Redis URL is not valid: \(why)")
        }
        let rest: Substring
        let isUnix: Bool
        if url.hasPrefix("redis://") {
            rest = url.dropFirst("redis://".count)
            isUnix = false
        } else if url.hasPrefix("rediss://") {
            rest = url.dropFirst("rediss://".count)
            isUnix = false
            tls = RedisTLSConfiguration()
        } else if url.hasPrefix("unix://") {
            rest = url.dropFirst("unix://".count)
            isUnix = true
        } else {
            throw invalid("expected it to start with redis://, rediss:// or unix://")
        }
        var location = rest
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            location = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                let user = try Self.percentDecoded(userInfo[..<colon], invalid)
                username = user.isEmpty ? nil : user
                password = try Self.percentDecoded(userInfo[userInfo.index(after: colon)...], invalid)
            } else {
                password = try Self.percentDecoded(userInfo, invalid)
            }
        }
        if isUnix {
            var path = location
            if let question = location.firstIndex(of: "?") {
                path = location[..<question]
                for pair in location[location.index(after: question)...].split(separator: "&") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    if parts.count == 2, parts[0] == "db" {
                        guard let db = Int(parts[1]) else { throw invalid("db must be an integer") }
                        database = db
                    }
                }
            }
            guard path.hasPrefix("/") else { throw invalid("expected an absolute socket path after unix://") }
            unixSocketPath = String(path)
        } else {
            var hostPort = location
            if let slash = location.firstIndex(of: "/") {
                hostPort = location[..<slash]
                let db = location[location.index(after: slash)...]
                if !db.isEmpty {
                    guard let number = Int(db) else { throw invalid("the database after / must be an integer") }
                    database = number
                }
            }
            if hostPort.hasPrefix("["), let close = hostPort.firstIndex(of: "]") {
                host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
                let after = hostPort[hostPort.index(after: close)...]
                if after.hasPrefix(":") {
                    guard let number = Int(after.dropFirst()) else { throw invalid("the port must be an integer") }
                    port = number
                }
            } else if let colon = hostPort.lastIndex(of: ":") {
                host = String(hostPort[..<colon])
                guard let number = Int(hostPort[hostPort.index(after: colon)...]) else {
                    throw invalid("the port must be an integer")
                }
                port = number
            } else if !hostPort.isEmpty {
                host = String(hostPort)
            }
        }
        try validate()
    }

    private static func percentDecoded(
        _ text: Substring,
        _ invalid: (String) -> RedisClientError
    ) throws(RedisClientError) -> String {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                    let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                else { throw invalid("a percent-escape in the user or password is incomplete") }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension RedisConfiguration: CustomStringConvertible {
    /// All fields but the password, which shows as `<redacted>` when set.
    public var description: String {
        "RedisConfiguration(endpoint: \(endpointDescription), username: \(username ?? "nil"), "
            + "password: \(password == nil ? "nil" : "<redacted>"), database: \(database), "
            + "connections: \(connections), connectTimeout: \(connectTimeout), commandTimeout: \(commandTimeout), "
            + "maximumPendingCommands: \(maximumPendingCommands), "
            + "reconnectBackoff: \(reconnectBackoffMinimum)...\(reconnectBackoffMaximum), tls: \(tls.map { "\($0)" } ?? "off"))"
    }
}
