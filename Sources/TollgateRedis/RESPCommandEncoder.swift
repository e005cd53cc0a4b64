import NIOCore

/// Formats commands as RESP: `*<count>\r\n` then `$<length>\r\n<bytes>\r\n` per argument.
///
/// Written straight into a `ByteBuffer` in Swift: the bytes are exactly those of hiredis'
/// `redisFormatCommandArgv` (a test compares the two on a sample of commands), without its `sprintf`
/// per argument and the copies into and out of C memory. The length of a command is computed first, so
/// that it is written with one capacity check and plain stores (`RESPWriter`). hiredis' reader still
/// parses every reply (`RESPReplyDecoder`).
enum RESPCommandEncoder {
    /// Appends the RESP encoding of `arguments` (the command name first) to `buffer`.
    static func encode(_ arguments: [RedisArgument], into buffer: inout ByteBuffer) throws(RedisClientError) {
        try validate(arguments)
        write(arguments, into: &buffer)
    }

    /// The RESP encoding of `arguments` in a new buffer.
    static func encode(
        _ arguments: [RedisArgument],
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) throws(RedisClientError) -> ByteBuffer {
        try validate(arguments)
        var buffer = allocator.buffer(capacity: encodedCount(arguments))
        write(arguments, into: &buffer)
        return buffer
    }

    /// Refuses what hiredis refuses: a command without a name, or more arguments than an `Int32` counts.
    static func validate(_ arguments: [RedisArgument]) throws(RedisClientError) {
        guard !arguments.isEmpty else {
            throw RedisClientError(.invalidCommand, message: "a Redis command needs at least its name")
        }
        guard arguments.count <= Int(Int32.max) else {
            throw RedisClientError(.invalidCommand, message: "a Redis command has too many arguments")
        }
    }

    /// The number of bytes `arguments` take on the wire.
    static func encodedCount(_ arguments: [RedisArgument]) -> Int {
        var total = RESPWriter.arrayHeaderCount(arguments.count)
        for argument in arguments {
            total += RESPWriter.bulkCount(argument.byteCount)
        }
        return total
    }

    /// Writes a validated command (never fails: the arguments were checked before).
    static func write(_ arguments: [RedisArgument], into buffer: inout ByteBuffer) {
        let count = encodedCount(arguments)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            var writer = RESPWriter(raw)
            writer.arrayHeader(arguments.count)
            for argument in arguments {
                switch argument.storage {
                case .string(let string):
                    writer.bulkString(string)
                case .bytes(let bytes):
                    writer.bulkHeader(bytes.readableBytes)
                    bytes.withUnsafeReadableBytes { writer.bytes($0) }
                    writer.crlf()
                }
            }
            return writer.finish(raw, expected: count)
        }
    }
}

/// Plain stores of RESP pieces into memory the caller has sized exactly (`…Count` give the sizes).
///
/// Bounds are asserted in debug builds; a release build checks the total once (`finish`).
struct RESPWriter {
    private var cursor: UnsafeMutableRawPointer
    private let end: UnsafeMutableRawPointer

    @inline(__always)
    init(_ buffer: UnsafeMutableRawBufferPointer) {
        cursor = buffer.baseAddress!
        end = cursor + buffer.count
    }

    /// The number of bytes written into `buffer`, which must be `expected` (the computed size).
    @inline(__always)
    func finish(_ buffer: UnsafeMutableRawBufferPointer, expected: Int) -> Int {
        let written = cursor - buffer.baseAddress!
        precondition(written == expected && cursor <= end, "RESP size computed as \(expected) bytes, \(written) written")
        return written
    }

    @inline(__always)
    private func reserve(_ count: Int) {
        assert(cursor + count <= end, "RESP write past the reserved bytes")
    }

    // MARK: Sizes

    @inline(__always)
    static func arrayHeaderCount(_ count: Int) -> Int { 3 + decimalCount(count) }

    @inline(__always)
    static func bulkCount(_ length: Int) -> Int { 5 + decimalCount(length) + length }

    @inline(__always)
    static func bulkIntegerCount(_ value: Int64) -> Int { bulkCount(decimalCount(value)) }

    @inline(__always)
    static func decimalCount(_ value: Int) -> Int { decimalCount(Int64(value)) }

    @inline(__always)
    static func decimalCount(_ value: Int64) -> Int {
        digits(value.magnitude) + (value < 0 ? 1 : 0)
    }

    @inline(__always)
    static func digits(_ value: UInt64) -> Int {
        var digits = 1
        var threshold: UInt64 = 10
        while value >= threshold {
            digits &+= 1
            if digits == 20 { break }
            threshold &*= 10
        }
        return digits
    }

    // MARK: Pieces

    /// `*<count>\r\n`
    @inline(__always)
    mutating func arrayHeader(_ count: Int) {
        byte(UInt8(ascii: "*"))
        decimal(Int64(count))
        crlf()
    }

    /// `$<length>\r\n`
    @inline(__always)
    mutating func bulkHeader(_ length: Int) {
        byte(UInt8(ascii: "$"))
        decimal(Int64(length))
        crlf()
    }

    /// `$<length>\r\n<utf-8>\r\n`
    @inline(__always)
    mutating func bulkString(_ string: String) {
        bulkHeader(string.utf8.count)
        utf8(string)
        crlf()
    }

    /// An integer as a bulk string of its decimal digits, as `String(value)` would give them.
    @inline(__always)
    mutating func bulkInteger(_ value: Int64) {
        bulkHeader(Self.decimalCount(value))
        decimal(value)
        crlf()
    }

    @inline(__always)
    mutating func crlf() {
        reserve(2)
        cursor.storeBytes(of: (0x0D0A as UInt16).bigEndian, as: UInt16.self)  // "\r\n"
        cursor += 2
    }

    @inline(__always)
    mutating func byte(_ value: UInt8) {
        reserve(1)
        cursor.storeBytes(of: value, as: UInt8.self)
        cursor += 1
    }

    @inline(__always)
    mutating func bytes(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        reserve(bytes.count)
        cursor.copyMemory(from: base, byteCount: bytes.count)
        cursor += bytes.count
    }

    @inline(__always)
    mutating func bytes(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { self.bytes($0) }
    }

    /// The UTF-8 bytes of `string`.
    @inline(__always)
    mutating func utf8(_ string: String) {
        let copied: Void? = string.utf8.withContiguousStorageIfAvailable { self.bytes(UnsafeRawBufferPointer($0)) }
        if copied == nil {
            for byte in string.utf8 { self.byte(byte) }
        }
    }

    /// The decimal digits of `value`, with a `-` when negative.
    @inline(__always)
    mutating func decimal(_ value: Int64) {
        if value < 0 { byte(UInt8(ascii: "-")) }
        var rest = value.magnitude
        let count = Self.digits(rest)
        reserve(count)
        var index = count
        while index > 0 {
            index &-= 1
            let (quotient, digit) = rest.quotientAndRemainder(dividingBy: 10)
            (cursor + index).storeBytes(of: UInt8(truncatingIfNeeded: digit) &+ UInt8(ascii: "0"), as: UInt8.self)
            rest = quotient
        }
        cursor += count
    }
}
