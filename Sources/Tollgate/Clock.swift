#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The source of "now" for limiters, in microseconds since the Unix epoch.
///
/// Microseconds are the resolution of Redis' `TIME` and keep every quantity the limiters compute below
/// 2^53, so the Redis scripts (Lua numbers are doubles) give exactly the answers the in-process store gives.
///
/// Limiters only ever compare and subtract instants, and treat an instant earlier than one they have seen
/// as that one; calendar quotas need the instant to be anchored to real time so that "the start of the
/// month" means something.
public protocol LimiterClock: Sendable {
    /// The current instant in microseconds since 1970-01-01T00:00:00Z.
    func now() -> Int64
}

/// The production clock: wall time read once at creation, advanced by the monotonic clock.
///
/// Stepping the system clock (NTP, an operator) therefore never moves limits backwards or forwards.
/// The monotonic clock is read from the CPU's time-stamp counter where the kernel keeps time with it
/// (x86-64 Linux with the `tsc` clock source; `TOLLGATE_TIME_SOURCE=system` turns that off), calibrated
/// against and re-anchored to `CLOCK_MONOTONIC` every 50 ms, and with `clock_gettime` elsewhere. Readings
/// may step back by microseconds at a re-anchoring (see `CycleConverter`).
public struct SystemClock: LimiterClock {
    private let anchor: Int64
    private let source: CycleConverter<HardwareReadings>

    /// Anchors the monotonic clock to the current wall time.
    public init() {
        source = MonotonicSource.shared
        var wall = timespec()
        clock_gettime(CLOCK_REALTIME, &wall)
        let wallMicros = Int64(wall.tv_sec) * 1_000_000 + Int64(wall.tv_nsec) / 1_000
        anchor = wallMicros - source.nanoseconds() / 1_000
    }

    @inline(__always)
    public func now() -> Int64 { anchor &+ source.nanoseconds() / 1_000 }
}

/// A clock that only moves when told to: for tests and simulations. It may be set backwards,
/// which limiters treat as no time passing.
public final class ManualClock: LimiterClock {
    private let instant: Atomic<Int64>

    /// Creates a clock at `microseconds` since the Unix epoch (default 2026-01-01T00:00:00Z).
    public init(microseconds: Int64 = 1_767_225_600 * 1_000_000) {
        instant = Atomic(microseconds)
    }

    public func now() -> Int64 { instant.load(ordering: .acquiring) }

    /// Moves the clock by `microseconds` (negative values move it backwards).
    public func advance(microseconds: Int64) {
        instant.wrappingAdd(microseconds, ordering: .acquiringAndReleasing)
    }

    /// Moves the clock by `duration`.
    public func advance(by duration: Duration) {
        advance(microseconds: duration.microseconds)
    }

    /// Sets the clock to an absolute instant.
    public func set(microseconds: Int64) {
        instant.store(microseconds, ordering: .releasing)
    }
}

extension Duration {
    /// The duration in whole microseconds (truncated), saturating at `Int64` bounds.
    public var microseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled.addingReportingOverflow(attoseconds / 1_000_000_000_000).partialValue
    }
}

/// Microseconds per second, the unit conversions use everywhere.
let microsPerSecond: Int64 = 1_000_000
