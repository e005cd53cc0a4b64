/// Redis Cluster's hash slots: CRC16 (XMODEM) of a key's hash tag, modulo 16384.
///
/// A key with a non-empty `{…}` hashes only what is between the first `{` and the next `}`; any other key
/// hashes whole. Tollgate's counters carry the organization as their tag (`tg:{org_123}:…`), so every key
/// of one check lands in one slot, and the slot of an organization is the slot of its tag.
public enum HashSlot {
    /// The number of slots of a Redis Cluster.
    public static let count = 16_384

    /// The slot of a key, as Redis Cluster computes it.
    public static func of(key: some StringProtocol) -> Int {
        var utf8 = Array(key.utf8)
        if let open = utf8.firstIndex(of: UInt8(ascii: "{")),
            let close = utf8[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            utf8 = Array(utf8[(open + 1)..<close])
        }
        return Int(crc16(utf8) & 0x3FFF)
    }

    /// The slot of every key tagged `{tag}`.
    public static func of(hashTag tag: some StringProtocol) -> Int {
        Int(crc16(tag.utf8) & 0x3FFF)
    }

    /// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection — Redis' `crc16`.
    static func crc16(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 {
            crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
        }
        return crc
    }
}
