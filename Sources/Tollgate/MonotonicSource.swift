#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CTollgateCPU
import Synchronization

/// The two clocks a `CycleConverter` reads: the CPU's cycle counter and the system's monotonic clock.
protocol ClockReadings {
    /// The cycle counter.
    static func cycles() -> Int64
    /// `CLOCK_MONOTONIC` in nanoseconds.
    static func systemNanoseconds() -> Int64
    /// Whether the counter may still be used (asked every few seconds).
    static func counterStillUsable() -> Bool
}

/// The machine's clocks: `rdtsc` and `clock_gettime(CLOCK_MONOTONIC)`.
enum HardwareReadings: ClockReadings {
    @inline(__always)
    static func cycles() -> Int64 { Int64(bitPattern: tollgate_cycle_counter()) }

    static func systemNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
    }

    /// True on x86-64 Linux while the kernel keeps time with the time-stamp counter (its clock source is
    /// `tsc`: it found the counter invariant and synchronized across cores), unless `TOLLGATE_TIME_SOURCE`
    /// is `system`.
    static func counterStillUsable() -> Bool {
        #if os(Linux) && arch(x86_64)
        if let setting = getenv("TOLLGATE_TIME_SOURCE"), String(cString: setting) == "system" { return false }
        guard tollgate_cycle_counter() != 0,
            let file = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r")
        else { return false }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 64)
        guard fgets(&line, Int32(line.count), file) != nil else { return false }
        let name = line.prefix { $0 != 0 && $0 != 10 && $0 != 32 }.map { UInt8(bitPattern: $0) }
        return name == Array("tsc".utf8)
        #else
        return false
        #endif
    }
}

/// The process's monotonic clock: the cycle counter converted with `HardwareReadings`.
enum MonotonicSource {
    static let shared = CycleConverter<HardwareReadings>(usingCycles: HardwareReadings.counterStillUsable())
}

/// `CLOCK_MONOTONIC` in nanoseconds, read from the CPU's cycle counter where the kernel itself keeps time
/// with it, and from the system clock everywhere else.
///
/// Reading the counter takes a fraction of a `clock_gettime` call, and a limiter reads the time on every
/// check. The counter is converted with a rate measured against the system clock, from an anchor renewed
/// from the system clock every 50 ms: a reading stays within microseconds of what `clock_gettime` would
/// have said, and the system clock's own corrections (NTP slewing) carry over at the next anchor. A
/// renewal may move readings back by that much; limiters treat time going back as no time passing.
///
/// At each renewal the conversion is checked against the system clock: when they disagree by more than a
/// millisecond (the counter runs on while the system clock stands still during a suspend, or the counter
/// jumped), calibration starts over, on the system clock meanwhile; after `maximumRestarts` such
/// restarts, or once the kernel stops using the counter as its clock source, the counter is left alone.
///
/// `@unchecked Sendable`: the published conversion is read under a sequence lock and written by one
/// thread at a time (`renewing`), which alone touches the calibration state.
final class CycleConverter<Readings: ClockReadings>: @unchecked Sendable {
    /// How long an anchor is used before it is renewed.
    static var anchorLifetime: Int64 { 50_000_000 }
    /// How long the counter is measured against the system clock before it is trusted.
    static var calibrationTime: Int64 { 10_000_000 }
    /// The most cycles between the two counter readings around a system clock reading for that reading to
    /// calibrate or anchor (a few microseconds; the pair is usually a hundred or so apart).
    static var bracketLimit: Int64 { 10_000 }
    /// The largest disagreement with the system clock at a renewal before calibration starts over.
    static var maximumError: Int64 { 1_000_000 }
    /// Calibrations started over before the counter is given up.
    static var maximumRestarts: Int { 10 }
    /// Renewals between two checks that the counter is still usable (about every 5 s).
    static var renewalsPerUsabilityCheck: Int { 100 }

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
    /// Set when the counter proved unusable: then only the system clock is read.
    private let gaveUp = Atomic<Bool>(false)
    /// Held by the one thread renewing the anchor.
    private let renewing = Atomic<Bool>(false)
    // Under `renewing`: the calibration's first reading of both clocks (0: none yet), the rate in use,
    // restarts so far and renewals since the last usability check.
    private var firstCycles: Int64 = 0
    private var firstNanos: Int64 = 0
    private var perCycle: Double = 0
    private var restarts = 0
    private var renewals = 0

    init(usingCycles: Bool) {
        self.usingCycles = usingCycles
    }

    /// Whether readings currently come from the counter.
    var readsCounter: Bool {
        usingCycles && !gaveUp.load(ordering: .relaxed) && span.load(ordering: .relaxed) != 0
    }

    /// Whether the counter has been given up for good.
    var hasGivenUp: Bool { gaveUp.load(ordering: .relaxed) }

    /// The current `CLOCK_MONOTONIC` instant in nanoseconds.
    @inline(__always)
    func nanoseconds() -> Int64 {
        guard usingCycles else { return Readings.systemNanoseconds() }
        let cycles = Readings.cycles()
        let before = sequence.load(ordering: .acquiring)
        let anchor = anchorCycles.load(ordering: .relaxed)
        let base = anchorNanos.load(ordering: .relaxed)
        let perCycle = scale.load(ordering: .relaxed)
        let limit = span.load(ordering: .relaxed)
        atomicMemoryFence(ordering: .acquiring)
        let elapsed = cycles &- anchor
        // `limit` is 0 until calibrated, so an uncalibrated or abandoned conversion always renews.
        if before & 1 == 0 && elapsed >= 0 && elapsed < limit && sequence.load(ordering: .relaxed) == before {
            // elapsed × perCycle < 50 ms × 2^32 ns < 2^63: no overflow.
            return base &+ (elapsed &* perCycle) >> 32
        }
        return renew()
    }

    /// Reads the system clock and, when this thread may, calibrates, checks or renews the conversion.
    @inline(never)
    private func renew() -> Int64 {
        guard !gaveUp.load(ordering: .relaxed) else { return Readings.systemNanoseconds() }
        let cyclesBefore = Readings.cycles()
        let nanos = Readings.systemNanoseconds()
        let cyclesAfter = Readings.cycles()
        guard renewing.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            return nanos
        }
        defer { renewing.store(false, ordering: .releasing) }
        // A reading bracketed loosely (the thread was preempted, say) would skew the rate or the anchor.
        let bracket = cyclesAfter &- cyclesBefore
        guard bracket >= 0 && bracket < Self.bracketLimit else { return nanos }
        let cycles = cyclesBefore &+ bracket / 2

        renewals += 1
        if renewals >= Self.renewalsPerUsabilityCheck {
            renewals = 0
            if !Readings.counterStillUsable() { return giveUp(nanos) }
        }
        if perCycle > 0 {
            // Calibrated: the conversion must still agree with the system clock.
            let predicted = Double(anchorNanos.load(ordering: .relaxed))
                + Double(cycles &- anchorCycles.load(ordering: .relaxed)) * perCycle
            guard abs(predicted - Double(nanos)) <= Double(Self.maximumError) else {
                restarts += 1
                if restarts > Self.maximumRestarts { return giveUp(nanos) }
                perCycle = 0
                (firstCycles, firstNanos) = (cycles, nanos)
                publish(cycles: 0, nanos: 0, scale: 0, span: 0)
                return nanos
            }
        } else if firstNanos == 0 {
            (firstCycles, firstNanos) = (cycles, nanos)
            return nanos
        }
        let measuredNanos = nanos &- firstNanos
        guard measuredNanos >= Self.calibrationTime else { return nanos }
        let measuredCycles = cycles &- firstCycles
        let rate = Double(measuredNanos) / Double(measuredCycles)
        // A counter that stood still, ran backwards or ran outside 10 MHz–100 GHz is not a clock to trust.
        guard measuredCycles > 0, rate > 0.01, rate < 100 else { return giveUp(nanos) }
        perCycle = rate
        publish(
            cycles: cycles, nanos: nanos, scale: Int64(rate * 4_294_967_296),
            span: Int64(Double(Self.anchorLifetime) / rate))
        return nanos
    }

    private func giveUp(_ nanos: Int64) -> Int64 {
        gaveUp.store(true, ordering: .relaxed)
        perCycle = 0
        publish(cycles: 0, nanos: 0, scale: 0, span: 0)
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
}
