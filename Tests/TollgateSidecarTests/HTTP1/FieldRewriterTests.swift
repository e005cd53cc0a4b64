import HTTPTypes
import NIOCore
import Testing

@testable import TollgateSidecar

/// The byte-level field rewriter against the rules stated over `HTTPFields` (`ReferenceFieldRules`):
/// the same fields, in the same order, for the same heads.
@Suite struct FieldRewriterTests {
    /// Field lines (each with its CRLF) as `(name, value)` pairs.
    static func lines(_ fields: [(String, String)]) -> String {
        fields.map { "\($0.0): \($0.1)\r\n" }.joined()
    }

    static func parse(_ text: String) -> [(String, String)] {
        text.split(separator: "\r\n", omittingEmptySubsequences: true).map { line in
            let colon = line.firstIndex(of: ":")!
            return (String(line[..<colon]), String(line[line.index(after: colon)...].dropFirst()))
        }
    }

    static func request(_ fields: [(String, String)], forwardCredentials: Bool, client: String?) -> [(String, String)] {
        let text = Array(lines(fields).utf8)
        var out = ByteBuffer()
        text.withUnsafeBytes { bytes in
            FieldRewriter.writeRequestFields(bytes, fields: 0..<bytes.count, forwardCredentials: forwardCredentials, client: client, into: &out)
        }
        return parse(String(buffer: out))
    }

    static func response(_ fields: [(String, String)], replacingRateLimit: Bool) -> [(String, String)] {
        let text = Array(lines(fields).utf8)
        var out = ByteBuffer()
        text.withUnsafeBytes { bytes in
            FieldRewriter.writeResponseFields(bytes, fields: 0..<bytes.count, replacingRateLimit: replacingRateLimit, into: &out)
        }
        return parse(String(buffer: out))
    }

    static func httpFields(_ fields: [(String, String)]) -> HTTPFields {
        var result = HTTPFields()
        for (name, value) in fields { result.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return result
    }

    static func pairs(_ fields: HTTPFields) -> [(String, String)] {
        fields.map { ($0.name.rawName, $0.value) }
    }

    static let requestCases: [[(String, String)]] = [
        [("Host", "api.example"), ("Content-Type", "application/json"), ("Authorization", "Bearer wz_test_abc"), ("Content-Length", "12")],
        [("host", "a"), ("X-Forwarded-For", "203.0.113.7"), ("Connection", "X-Client-Hop, keep-alive"), ("X-Client-Hop", "1"),
         ("keep-alive", "timeout=5"), ("X-Kept", "yes"), ("x-forwarded-for", "198.51.100.1")],
        [("Host", "a"), ("TE", "trailers"), ("Trailer", "X"), ("Upgrade", "websocket"), ("Proxy-Authorization", "x"),
         ("X-Tollgate-Organization", "forged"), ("x-tollgate-plan", "forged"), ("X-Forwarded-Proto", "https"), ("Expect", "100-continue"),
         ("wazzapi-api-key", "wz_live_k"), ("Accept", "*/*")],
        [("Host", "a"), ("Connection", "close"), ("Connection", "x-a"), ("X-A", "dropped"), ("X-B", "kept")],
        [],
    ]

    @Test(arguments: [true, false], [Optional("127.0.0.1"), nil])
    func requestFieldsAreThoseOfTheReference(forwardCredentials: Bool, client: String?) {
        for fields in Self.requestCases {
            let expected = Self.pairs(
                ReferenceFieldRules.upstreamHeaders(Self.httpFields(fields), client: client, forwardCredentials: forwardCredentials))
            let written = Self.request(fields, forwardCredentials: forwardCredentials, client: client)
            #expect(written.map(\.0) == expected.map(\.0), "fields \(fields)")
            #expect(written.map(\.1) == expected.map(\.1), "fields \(fields)")
        }
    }

    @Test func responseFieldsAreThoseOfTheReference() {
        let cases: [[(String, String)]] = [
            [("Server", "nginx"), ("Date", "Mon, 07 Dec 2026 18:00:00 GMT"), ("Content-Type", "application/json"), ("Content-Length", "2"),
             ("Connection", "keep-alive")],
            [("Transfer-Encoding", "chunked"), ("Connection", "X-Upstream-Hop"), ("X-Upstream-Hop", "1"), ("Keep-Alive", "timeout=5"),
             ("Proxy-Status", "x"), ("X-Kept", "yes")],
            [],
        ]
        for fields in cases {
            let expected = Self.pairs(ReferenceFieldRules.clientHeaders(Self.httpFields(fields)))
            let written = Self.response(fields, replacingRateLimit: false)
            #expect(written.map(\.0) == expected.map(\.0), "fields \(fields)")
            #expect(written.map(\.1) == expected.map(\.1), "fields \(fields)")
        }
    }

    @Test func hopByHopNames() {
        for name in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "proxy-authenticate"] {
            #expect(Self.request([(name, "1"), ("X-Kept", "yes")], forwardCredentials: true, client: nil).map(\.0) == ["X-Kept", "X-Forwarded-Proto"], "\(name)")
        }
        let listed = [("Connection", "x-up-hop"), ("X-Up-Hop", "1"), ("Content-Type", "text/plain"), ("Tea", "green")]
        #expect(Self.response(listed, replacingRateLimit: false).map(\.0) == ["Content-Type", "Tea"])
    }

    /// A protocol switch keeps its `Upgrade` fields (which the rules above drop) and says so in `Connection`.
    @Test func upgradeFieldsAreWrittenForAProtocolSwitch() {
        let text = Array(Self.lines([("Connection", "keep-alive, Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Key", "k")]).utf8)
        var out = ByteBuffer()
        text.withUnsafeBytes { bytes in FieldRewriter.writeUpgradeFields(bytes, fields: 0..<bytes.count, into: &out) }
        #expect(String(buffer: out) == "Upgrade: websocket\r\nConnection: upgrade\r\n")
    }

    @Test func theUpstreamsOwnRateLimitFieldsGiveWayToTheProxys() {
        let fields = [
            ("RateLimit-Policy", "\"u\";q=1;w=1"), ("ratelimit", "\"u\";r=0;t=1"), ("X-RateLimit-Limit", "1"),
            ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "1"), ("Retry-After", "1"), ("X-Kept", "yes"),
        ]
        #expect(Self.response(fields, replacingRateLimit: true).map(\.0) == ["Retry-After", "X-Kept"])
        #expect(Self.response(fields, replacingRateLimit: false).count == fields.count)
    }
}
