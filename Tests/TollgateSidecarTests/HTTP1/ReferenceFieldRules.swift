import HTTPTypes
import TollgateHTTP

/// The forwarding rules over `HTTPFields`, as the sidecar first stated them: the reference the
/// byte-level `FieldRewriter` is compared with, field by field.
enum ReferenceFieldRules {
    /// Whether `name` (lowercase) is connection-specific, given the tokens of the message's `Connection`:
    /// always `Connection`, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
    static func isHopByHop(_ name: String, listedIn connection: Set<String>) -> Bool {
        switch name {
        case "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade": return true
        default: return name.hasPrefix("proxy-") || (!connection.isEmpty && connection.contains(name))
        }
    }

    /// The field names listed in `Connection` fields, lowercased.
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

    /// The client's fields as the upstream gets them (without framing).
    static func upstreamHeaders(_ headers: HTTPFields, client: String?, forwardCredentials: Bool) -> HTTPFields {
        let connection = connectionTokens(headers[values: .connection])
        var fields = HTTPFields()
        var forwardedFor: [String] = []
        for field in headers {
            let name = field.name.canonicalName
            if isHopByHop(name, listedIn: connection) { continue }
            switch name {
            case "host", "content-length", "expect", "x-forwarded-proto":
                continue
            case "x-forwarded-for":
                forwardedFor.append(field.value)
                continue
            case "authorization", APIKeyExtractor.keyHeader.canonicalName:
                if !forwardCredentials { continue }
            default:
                if name.hasPrefix("x-tollgate-") { continue }
            }
            fields.append(field)
        }
        if let client { forwardedFor.append(client) }
        if !forwardedFor.isEmpty { fields.append(HTTPField(name: HTTPField.Name("X-Forwarded-For")!, value: forwardedFor.joined(separator: ", "))) }
        fields.append(HTTPField(name: HTTPField.Name("X-Forwarded-Proto")!, value: "http"))
        return fields
    }

    /// The upstream's fields as the client gets them.
    static func clientHeaders(_ headers: HTTPFields) -> HTTPFields {
        let connection = connectionTokens(headers[values: .connection])
        var fields = HTTPFields()
        for field in headers where !isHopByHop(field.name.canonicalName, listedIn: connection) {
            fields.append(field)
        }
        return fields
    }
}
