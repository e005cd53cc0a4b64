import Foundation
import Yams

/// The `tracing` section: spans of the sidecar's data path, exported as OTLP/HTTP JSON. Off unless
/// `enabled` is true; read at start (a reload that changes it says so in the log).
///
/// - `enabled` (bool, default false): trace requests. Off, the data path makes no span and adds no
///   field: a client's `traceparent` and `tracestate` go upstream unchanged.
/// - `endpoint` (string, required when enabled): the OTLP/HTTP collector's base URL, such as
///   `http://127.0.0.1:4318`; spans are posted to its `/v1/traces` (a URL already ending in
///   `/v1/traces` is used as it is).
/// - `sample_ratio` (number from 0 to 1, default 1): the share of new traces recorded, for requests that
///   arrive without a `traceparent`; a request with one follows its caller's sampled flag.
/// - `service_name` (string, default `tollgate`): the `service.name` the spans are exported under.
public struct TracingSettings: Sendable, Equatable {
    public var enabled = false
    public var endpoint: String?
    public var sampleRatio = 1.0
    public var serviceName = "tollgate"

    public init() {}
}

extension ConfigReader {
    static let tracingFields = ["enabled", "endpoint", "sample_ratio", "service_name"]

    func tracing(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> TracingSettings {
        let fields = try fields(of: node, at: path, expected: "a mapping of tracing settings")
        try rejectUnknown(fields, allowed: Self.tracingFields, in: "tracing")
        var tracing = TracingSettings()
        for entry in fields.entries {
            let at = path.appending(entry.name)
            let value = entry.value
            switch entry.name {
            case "enabled": tracing.enabled = try bool(value, at: at)
            case "endpoint": tracing.endpoint = try collectorURL(value, at: at)
            case "sample_ratio": tracing.sampleRatio = try ratio(value, at: at)
            case "service_name":
                let name = try string(value, at: at, expected: "a service name of 1 to 255 characters")
                guard !name.isEmpty, name.utf8.count <= 255 else {
                    throw error(at: value, at, "expected a service name of 1 to 255 characters, found \(describe(value))")
                }
                tracing.serviceName = name
            default: break
            }
        }
        if tracing.enabled, tracing.endpoint == nil {
            throw error(
                at: fields["enabled"] ?? node, path.appending("endpoint"),
                "expected the OTLP/HTTP collector's URL (such as http://127.0.0.1:4318) when tracing is enabled")
        }
        return tracing
    }

    /// An `http://` or `https://` URL with a host, no query, no fragment, no credentials.
    func collectorURL(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> String {
        let expected = "an OTLP/HTTP collector URL such as http://127.0.0.1:4318"
        let text = try string(node, at: path, expected: expected)
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty, url.query == nil, url.fragment == nil, url.user == nil
        else {
            throw error(at: node, path, "expected \(expected) (http or https, a host, an optional port and path, no query), found \(describe(node))")
        }
        return text
    }

    /// A number from 0 to 1, unquoted (`0`, `0.05`, `1`).
    func ratio(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> Double {
        guard case .scalar(let scalar) = node, scalar.style == .plain || scalar.style == .any,
            let value = Double(scalar.string.replacingOccurrences(of: "_", with: "")), value.isFinite, value >= 0, value <= 1
        else {
            throw error(at: node, path, "expected a number from 0 to 1 (the share of new traces recorded), found \(describe(node))")
        }
        return value
    }
}
