import Crypto
import TollgateHTTP

/// The SHA-256 of an API key: what the registry stores and looks keys up by, so that neither the key
/// file nor Redis nor a log ever holds a key.
public struct KeyDigest: Sendable, Hashable, CustomStringConvertible {
    /// The 32 bytes of the digest.
    public let bytes: [UInt8]

    public init(of key: APIKey) {
        bytes = Array(SHA256.hash(data: key.bytes))
    }

    /// The digest of a key given as text (tools and tests: the sidecar itself only hashes `APIKey`s).
    public init(ofKeyText text: String) {
        bytes = Array(SHA256.hash(data: Array(text.utf8)))
    }

    /// A digest written as 64 hex digits (either case); nil for anything else.
    public init?(hex: String) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 64 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        var index = 0
        while index < 64 {
            guard let high = Self.nibble(utf8[index]), let low = Self.nibble(utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        self.bytes = bytes
    }

    /// 64 lowercase hex digits: the registry's spelling (`tg:key:<hex>`, `sha256:` in key files).
    public var hex: String { hex(bytes: 32) }

    /// 16 hex digits: the key's identity for its counters (`Partition.apiKey`).
    public var keyID: String { hex(bytes: 8) }
    /// 8 hex digits: the key's tag in logs.
    public var fingerprint: String { hex(bytes: 4) }

    /// The first `count` bytes in lowercase hex.
    private func hex(bytes count: Int) -> String {
        String(unsafeUninitializedCapacity: count * 2) { out in
            for (index, byte) in bytes.prefix(count).enumerated() {
                out[2 * index] = Self.digits[Int(byte >> 4)]
                out[2 * index + 1] = Self.digits[Int(byte & 0x0f)]
            }
            return count * 2
        }
    }

    /// The fingerprint only: a digest never prints whole.
    public var description: String { "sha256:\(fingerprint)…" }

    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    private static func nibble(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
