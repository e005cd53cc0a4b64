import Synchronization
import Tracing

/// A span's place in a trace as W3C Trace Context (https://www.w3.org/TR/trace-context/) carries it:
/// the trace's 128-bit id, the span's 64-bit id, whether the trace is sampled, and the vendors'
/// `tracestate`, passed on unchanged.
struct TraceContext: Sendable, Hashable {
    var traceID: TraceID
    var spanID: UInt64
    var sampled: Bool
    var traceState: String?

    /// A trace's id: 16 bytes, never all zero.
    struct TraceID: Sendable, Hashable {
        var high: UInt64
        var low: UInt64

        /// 32 lowercase hex digits.
        var hex: String { TraceContext.hex(high) + TraceContext.hex(low) }
    }

    /// The `traceparent` value: version 00, the ids in lowercase hex, the sampled flag.
    var traceparent: String {
        "00-" + traceID.hex + "-" + Self.hex(spanID) + (sampled ? "-01" : "-00")
    }

    /// The context a `traceparent` (and `tracestate`) value gives, or nil when it is not valid (a trace
    /// then starts anew, as the specification says). A version above 00 is read by its first four
    /// fields; version ff, ids of zeros and uppercase hex are refused.
    init?(traceparent: String, tracestate: String?) {
        let bytes = Array(traceparent.utf8)
        guard bytes.count >= 55, bytes[2] == UInt8(ascii: "-"), bytes[35] == UInt8(ascii: "-"), bytes[52] == UInt8(ascii: "-"),
            let version = Self.value(bytes[0..<2]), version != 0xff,
            let high = Self.value(bytes[3..<19]), let low = Self.value(bytes[19..<35]), high | low != 0,
            let span = Self.value(bytes[36..<52]), span != 0, let flags = Self.value(bytes[53..<55])
        else { return nil }
        // Version 00 has exactly these fields; a later version may add more after a dash.
        guard bytes.count == 55 ? true : (version > 0 && bytes[55] == UInt8(ascii: "-")) else { return nil }
        traceID = TraceID(high: high, low: low)
        spanID = span
        sampled = flags & 1 == 1
        // The list is passed on as it came, within the size the specification says to propagate.
        traceState = tracestate.flatMap { $0.isEmpty || $0.utf8.count > 512 ? nil : $0 }
    }

    init(traceID: TraceID, spanID: UInt64, sampled: Bool, traceState: String?) {
        self.traceID = traceID
        self.spanID = spanID
        self.sampled = sampled
        self.traceState = traceState
    }

    /// The value of lowercase hex digits (at most 16), nil for any other byte.
    private static func value(_ digits: ArraySlice<UInt8>) -> UInt64? {
        var value: UInt64 = 0
        for digit in digits {
            let nibble: UInt8
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = digit - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = digit - UInt8(ascii: "a") + 10
            default: return nil
            }
            value = value << 4 | UInt64(nibble)
        }
        return value
    }

    /// 16 lowercase hex digits.
    static func hex(_ value: UInt64) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(unsafeUninitializedCapacity: 16) { buffer in
            for index in 0..<16 { buffer[index] = digits[Int(value >> UInt64(60 - 4 * index) & 0xf)] }
            return 16
        }
    }
}

/// Where a `ServiceContext` keeps the trace context of the span it belongs to (or of the caller's
/// span, read from its request).
enum TraceContextKey: ServiceContextKey {
    typealias Value = TraceContext
    static let nameOverride: String? = "tollgate-trace-context"
}

extension ServiceContext {
    /// The trace context of the span this context belongs to, or of the remote caller's span.
    var traceContext: TraceContext? {
        get { self[TraceContextKey.self] }
        set { self[TraceContextKey.self] = newValue }
    }
}

/// Trace and span ids: SplitMix64 over a counter that starts at a random point, so ids are unique
/// within a process (a 2^64 period), differ between processes, and cost no system call or lock.
enum TraceIDs {
    private static let seed = UInt64.random(in: .min ... .max)
    private static let counter = Atomic<UInt64>(0)

    /// A new non-zero 64-bit id.
    static func next() -> UInt64 {
        let step = counter.wrappingAdd(1, ordering: .relaxed).newValue
        var z = seed &+ step &* 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        z ^= z >> 31
        return z == 0 ? 1 : z
    }
}
