import Crypto
import Foundation
import Tollgate
import Yams

/// The configuration file as it was put in force: its text and the SHA-256 of its bytes (replicas that
/// show the same hash run the same file).
public struct ConfigurationSnapshot: Sendable, Equatable {
    public let file: String
    public let text: String
    public let sha256: String

    /// Reads and validates `path` from one read of its bytes, so that the hash is that of the file parsed.
    static func read(_ path: String) throws(ConfigurationError) -> (TollgateConfiguration, ConfigurationSnapshot) {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            // The same checks with their precise errors (missing, a directory, unreadable, not UTF-8).
            _ = try TollgateConfiguration.load(contentsOfFile: path)
            throw ConfigurationError(file: path, line: nil, path: "", message: "cannot read the file")
        }
        let configuration = try TollgateConfiguration.parse(yaml: text, file: path)
        let hash = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        return (configuration, ConfigurationSnapshot(file: path, text: text, sha256: hash))
    }

    /// The configuration as JSON-ready values with every secret replaced by `"<redacted>"`: fields
    /// named `token`, `password` or `secret`, or ending in `_token`, `_password` or `_secret` (not
    /// `tokens`, a refill's count), and the password of any URL (`redis://user:pw@host`).
    public var redacted: Any {
        let loaded = (try? Yams.load(yaml: text)) ?? nil
        return Self.redact(loaded as Any, field: "")
    }

    static let secretFields = ["token", "password", "secret"]

    static func redact(_ value: Any, field: String) -> Any {
        let name = field.lowercased()
        if secretFields.contains(where: { name == $0 || name.hasSuffix("_" + $0) }) { return "<redacted>" }
        switch value {
        case let mapping as [AnyHashable: Any]:
            var out: [String: Any] = [:]
            for (key, item) in mapping {
                let name = "\(key.base)"
                out[name] = redact(item, field: name)
            }
            return out
        case let list as [Any]:
            return list.map { redact($0, field: field) }
        case let text as String:
            return redactURL(text)
        case let flag as Bool:
            return flag
        case let number as Int:
            return number
        case let number as Double:
            return number.isFinite ? number : "\(number)"
        case is NSNull:
            return NSNull()
        default:
            return "\(value)"
        }
    }

    /// `scheme://user:password@host…` → `scheme://user:<redacted>@host…`; anything else unchanged.
    static func redactURL(_ text: String) -> String {
        guard let scheme = text.range(of: "://"), let at = text[scheme.upperBound...].firstIndex(of: "@") else { return text }
        let credentials = text[scheme.upperBound..<at]
        guard !credentials.contains("/") else { return text }
        let user = credentials.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return String(text[..<scheme.upperBound]) + user + ":<redacted>" + String(text[at...])
    }
}
