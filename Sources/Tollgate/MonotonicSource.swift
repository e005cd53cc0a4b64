#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CTollgateCycles
import Synchronization

/// `CLOCK_MONOTONIC` in nanoseconds, read from the CPU's time-stamp counter where the kernel itself
/// keeps time with it, and from `clock_gettime` everywhere else.
///
/// Reading the counter takes a fraction of a `clock_gettime` call, and a limiter reads the time on every
/// check. The counter is converted with a rate measured against `clock_gettime` over the whole life of
/// the process, from an anchor renewed from `clock_gettime` every 50 ms: a reading stays within
/// microseconds of what `clock_gettime` would have said, and the system clock's own corrections (NTP
/// slewing) carry over at the next anchor. A renewal may move readings back by that much; limiters treat
/// time going back as no time passing.
///
/// The counter is used only on x86-64 Linux when the kernel's clock source is `tsc` (the kernel found the
/// counter invariant and synchronized across cores). `TOLLGATE_CLOCK=system` in the environment turns it off.
///
/// `@unchecked Sendable`: the published conversion is read under a sequence lock and written by one
/// thread at a time (`renewing`); the calibration start is only touched by that thread.
final class MonotonicSource: @unchecked Sendable {
    /// The process's one source.
    static let shared = MonotonicSource(usingCycles: MonotonicSource.counterIsUsable())

    /// How long an anchor is used before it is renewed.
    static let anchorLifetime: Int64 = 50_000_000
    /// How long the counter is measured against the system clock before it is trusted.
    static let calibrationTime: Int64 = 10_000_000
    /// The most cycles between the two counter readings around a system clock reading for that reading to
    /// calibrate or anchor (a few microseconds; the pair is usually a hundred or so apart).
    static let bracketLimit: Int64 = 10_000

    // The published conversion, under a sequence lock (odd while being rewritten):
    // nanoseconds = anchorNanos + (cycles − anchorCycles) × scale / 2^32, for cycles within `span`.
    private let sequence = Atomic<UInt64>(0)
    private let anchorCycles = Atomic<Int64>(0)
    private let anchorNanos = Atomic<Int64>(0)
    /// Nanoseconds per cycle × 2^32; 0 until calibrated.
    private let scale = Atomic<Int64>(0)
    /// Cycles after the anchor within which the conversion is used (`anchorLifetime`); 0 until calibrated.
    private let span = Atomic<Int64>(0)

    /// Whether the counter is read at all (false when unusable or turned off).
    private let usingCycles: Bool
    /// Set when calibration found the counter inconsistent with the system clock: then it is not read.
    private let gaveUp = Atomic<Bool>(false)
    /// Held by the one thread renewing the anchor.
    private let renewing = Atomic<Bool>(false)
    /// The first reading of both clocks: the rate is measured from it.
    private var firstCycles: Int64 = 0
    private var firstNanos: Int64 = 0

    init(usingCycles: Bool) {
        self.usingCycles = usingCycles
    }

    /// Whether readings currently come from the counter (after calibration).
    var readsCounter: Bool {
        usingCycles && !gaveUp.load(ordering: .relaxed) && scale.load(ordering: .relaxed) != 0
    }

    /// The current `CLOCK_MONOTONIC` instant in nanoseconds.
    @inline(__always)
    func nanoseconds() -> Int64 {
        guard usingCycles else { return Self.systemNanoseconds() }
        let cycles = Int64(bitPattern: tollgate_cycle_counter())
        let before = sequence.load(ordering: .acquiring)
        let anchor = anchorCycles.load(ordering: .relaxed)
        let base = anchorNanos.load(ordering: .relaxed)
        let perCycle = scale.load(ordering: .relaxed)
        let limit = span.load(ordering: .relaxed)
        atomicMemoryFence(ordering: .acquiring)
        let elapsed = cycles &- anchor
        // `limit` is 0 until calibrated, so an uncalibrated or turned-off source always renews.
        if before & 1 == 0 && elapsed >= 0 && elapsed < limit && sequence.load(ordering: .relaxed) == before {
            // elapsed × perCycle < 50 ms × 2^32 ns < 2^63: no overflow.
            return base &+ (elapsed &* perCycle) >> 32
        }
        return renew()
    }

    /// Reads the system clock and, when this thread may, calibrates or renews the anchor.
    @inline(never)
    private func renew() -> Int64 {
        guard !gaveUp.load(ordering: .relaxed) else { return Self.systemNanoseconds() }
        let cyclesBefore = Int64(bitPattern: tollgate_cycle_counter())
        let nanos = Self.systemNanoseconds()
        let cyclesAfter = Int64(bitPattern: tollgate_cycle_counter())
        guard renewing.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            return nanos
        }
        defer { renewing.store(false, ordering: .releasing) }
        // A reading bracketed loosely (the thread was preempted, say) would skew the rate or the anchor.
        guard cyclesAfter &- cyclesBefore < Self.bracketLimit else { return nanos }
        let cycles = cyclesBefore &+ (cyclesAfter &- cyclesBefore) / 2
        if firstNanos == 0 {
            (firstCycles, firstNanos) = (cycles, nanos)
            return nanos
        }
        let measuredNanos = nanos &- firstNanos
        guard measuredNanos >= Self.calibrationTime else { return nanos }
        let measuredCycles = cycles &- firstCycles
        let perCycle = Double(measuredNanos) / Double(measuredCycles)
        // A counter that stood still, ran backwards or ran outside 10 MHz–100 GHz is not a clock to trust.
        guard measuredCycles > 0, perCycle > 0.01, perCycle < 100 else {
            gaveUp.store(true, ordering: .relaxed)
            publish(cycles: 0, nanos: 0, scale: 0, span: 0)
            return nanos
        }
        publish(
            cycles: cycles, nanos: nanos, scale: Int64(perCycle * 4_294_967_296),
            span: Int64(Double(Self.anchorLifetime) / perCycle))
        return nanos
    }

    private func publish(cycles: Int64, nanos: Int64, scale newScale: Int64, span newSpan: Int64) {
        let current = sequence.load(ordering: .relaxed)
        sequence.store(current &+ 1, ordering: .relaxed)
        atomicMemoryFence(ordering: .releasing)
        anchorCycles.store(cycles, ordering: .relaxed)
        anchorNanos.store(nanos, ordering: .relaxed)
        scale.store(newScale, ordering: .relaxed)
        span.store(newSpan, ordering: .relaxed)
        sequence.store(current &+ 2, ordering: .releasing)
    }

    /// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds.
    static func systemNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
    }

    /// True on x86-64 Linux when the kernel keeps time with the time-stamp counter and
    /// `TOLLGATE_CLOCK` is not `system`.
    static func counterIsUsable() -> Bool {
        #if os(Linux) && arch(x86_64)
        if let setting = getenv("TOLLGATE_CLOCK"), String(cString: setting) == "system" { return false }
        guard tollgate_cycle_counter() != 0,
            let file = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r")
        else { return false }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 64)
        guard fgets(&line, Int32(line.count), file) != nil else { return false }
        let name = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.trimmingSuffix() == "tsc"
        #else
        return false
        #endif
    }
}

extension String {
    fileprivate func trimmingSuffix() -> Substring {
        var end = endIndex
        while end > startIndex, let last = self[index(before: end)].asciiValue, last <= 32 { end = index(before: end) }
        return self[startIndex..<end]
    }
}
