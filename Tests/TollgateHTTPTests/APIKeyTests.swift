import HTTPTypes
import Testing

@testable import TollgateHTTP

@Suite struct APIKeyTests {
    static let key = "wz_live_4f7b2c9e1d3a"

    func extract(_ fields: HTTPFields) -> String {
        switch APIKeyExtractor.extract(from: fields) {
        case .missing: "missing"
        case .malformed(let why): "malformed: \(why)"
        case .present(let key): "key: " + String(decoding: key.bytes, as: UTF8.self)
        }
    }

    @Test func bearerAndCustomHeader() {
        #expect(extract([.authorization: "Bearer \(Self.key)"]) == "key: \(Self.key)")
        #expect(extract([.authorization: "bearer   \(Self.key)"]) == "key: \(Self.key)")
        #expect(extract([APIKeyExtractor.keyHeader: Self.key]) == "key: \(Self.key)")
        #expect(extract([.authorization: "Bearer \(Self.key)", APIKeyExtractor.keyHeader: Self.key]) == "key: \(Self.key)")
        #expect(extract([:]) == "missing")
        // Padding is allowed only at the end (b64token).
        #expect(extract([.authorization: "Bearer abc=="]) == "key: abc==")
    }

    @Test func malformedKeysAreRefusedWithoutLookup() {
        #expect(extract([.authorization: "Basic dXNlcjpwYXNz"]) == "malformed: notBearer")
        #expect(extract([.authorization: "Bearer"]) == "malformed: empty")
        #expect(extract([.authorization: "Bearer " + String(repeating: "a", count: 257)]) == "malformed: tooLong")
        #expect(extract([.authorization: "Bearer " + String(repeating: "a", count: 10_240)]) == "malformed: tooLong")
        #expect(extract([.authorization: "Bearer " + String(repeating: "a", count: 256)]).hasPrefix("key: "))
        #expect(extract([.authorization: "Bearer wz_tést"]) == "malformed: invalidCharacters")
        #expect(extract([.authorization: "Bearer wz\"x"]) == "malformed: invalidCharacters")
        #expect(extract([.authorization: "Bearer a=b"]) == "malformed: invalidCharacters")
        #expect(extract([APIKeyExtractor.keyHeader: "two words"]) == "malformed: invalidCharacters")
        #expect(extract([.authorization: "Bearer a", APIKeyExtractor.keyHeader: "b"]) == "malformed: conflicting")
        var twice = HTTPFields()
        twice.append(HTTPField(name: .authorization, value: "Bearer a"))
        twice.append(HTTPField(name: .authorization, value: "Bearer a"))
        #expect(extract(twice) == "malformed: repeated")
        // Another scheme is ignored when the MCP header carries the key.
        #expect(extract([.authorization: "Basic dXNlcjpwYXNz", APIKeyExtractor.keyHeader: Self.key]) == "key: \(Self.key)")
    }

    @Test func keysNeverPrint() throws {
        let key = try #require(APIKey(Self.key))
        #expect("\(key)" == "APIKey(<redacted>)")
        #expect(String(reflecting: key) == "APIKey(<redacted>)")
        #expect(!"\([key])".contains("4f7b"))
    }

    @Test func constantTimeComparison() throws {
        let key = try #require(APIKey(Self.key))
        #expect(key.constantTimeEquals(Self.key))
        #expect(!key.constantTimeEquals(Self.key + "x"))
        #expect(!key.constantTimeEquals(String(Self.key.dropLast())))
        #expect(!key.constantTimeEquals("wz_live_4f7b2c9e1d3b"))
        #expect(ConstantTime.equals([UInt8](), [UInt8]()))
        #expect(!ConstantTime.equals([0], [UInt8]()))
    }
}
