import CHiredis
import NIOCore

/// Formats commands as RESP with hiredis' `redisFormatCommandArgv`.
enum RESPCommandEncoder {
    /// Appends the RESP encoding of `arguments` (the command name first) to `buffer`.
    static func encode(_ arguments: [RedisArgument], into buffer: inout ByteBuffer) throws(RedisClientError) {
        guard !arguments.isEmpty else {
            throw RedisClientError(.invalidCommand, message: "a Redis command needs at least its name")
        }
        guard arguments.count <= Int(Int32.max) else {
            throw RedisClientError(.invalidCommand, message: "a Redis command has too many arguments")
        }
        // hiredis wants one pointer and one length per argument; every argument is copied once into a
        // single contiguous array so that all pointers stay valid during the call.
        var lengths: [Int] = []
        lengths.reserveCapacity(arguments.count)
        var flat: [UInt8] = []
        flat.reserveCapacity(arguments.reduce(1) { $0 + $1.byteCount })
        for argument in arguments {
            let start = flat.count
            argument.append(to: &flat)
            lengths.append(flat.count - start)
        }
        if flat.isEmpty {
            // Only empty arguments: keep a valid base address for the (zero-length) pointers.
            flat.append(0)
        }

        var target: UnsafeMutablePointer<CChar>?
        let written: Int32 = flat.withUnsafeBufferPointer { flatBytes in
            flatBytes.withMemoryRebound(to: CChar.self) { characters in
                let base = characters.baseAddress!
                var argv: [UnsafePointer<CChar>?] = []
                argv.reserveCapacity(lengths.count)
                var offset = 0
                for length in lengths {
                    argv.append(base + offset)
                    offset += length
                }
                return argv.withUnsafeMutableBufferPointer { argvPointers in
                    lengths.withUnsafeBufferPointer { lengthPointers in
                        redisFormatCommandArgv(
                            &target,
                            Int32(arguments.count),
                            argvPointers.baseAddress,
                            lengthPointers.baseAddress
                        )
                    }
                }
            }
        }
        guard written >= 0, let target else {
            throw RedisClientError(.invalidCommand, message: "hiredis could not format the command (out of memory)")
        }
        defer { redisFreeCommand(target) }
        buffer.writeBytes(UnsafeRawBufferPointer(start: target, count: Int(written)))
    }

    /// The RESP encoding of `arguments` in a new buffer.
    static func encode(
        _ arguments: [RedisArgument],
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) throws(RedisClientError) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 16 + arguments.reduce(0) { $0 + $1.byteCount + 16 })
        try encode(arguments, into: &buffer)
        return buffer
    }
}
