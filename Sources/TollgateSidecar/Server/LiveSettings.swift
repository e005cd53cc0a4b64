import Synchronization
import Tollgate

/// The settings a reload can change without a restart, read by each request as it starts.
final class LiveSettings: Sendable {
    struct Values: Sendable {
        var maxBodySize: Int
        var accessLog: ServerSettings.AccessLogLevel
        var accessLogSample: Int
        var forwarding: ForwardingSettings
    }

    private let values: Mutex<Values>

    init(_ settings: SidecarSettings) {
        values = Mutex(Self.values(settings))
    }

    static func values(_ settings: SidecarSettings) -> Values {
        Values(
            maxBodySize: settings.server.maxBodySize, accessLog: settings.server.accessLog,
            accessLogSample: settings.server.accessLogSample,
            forwarding: ForwardingSettings(
                maxBodySize: settings.server.maxBodySize, responseTimeout: settings.upstream.responseTimeout,
                readTimeout: settings.upstream.readTimeout, forwardCredentials: settings.upstream.forwardCredentials))
    }

    var current: Values { values.withLock { $0 } }

    func update(_ settings: SidecarSettings) {
        values.withLock { $0 = Self.values(settings) }
    }
}

/// The parts of the configuration a forward reads, as of the request (they change on reload).
struct ForwardingSettings: Sendable {
    var maxBodySize: Int
    var responseTimeout: Duration
    var readTimeout: Duration
    var forwardCredentials: Bool
}
