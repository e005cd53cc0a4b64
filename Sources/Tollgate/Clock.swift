#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The source of "now" for limiters, in nanoseconds since the Unix epoch.
///
/// Limiters only ever compare and subtract instants, so any monotonic source works; calendar quotas need
/// the instant to be anchored to real time so that "the start of the month" means something.
public protocol LimiterClock: Sendable {
    /// The current instant in nanoseconds since 1970-01-01T00:00:00Z.
    func now() -> Int64
}

/// The production clock: wall time read once at creation, advanced by the monotonic clock.
///
/// Stepping the system clock (NTP, an operator) therefore never moves limits backwards or forwards.
public struct SystemClock: LimiterClock {
    private let anchor: Int64

    /// Anchors the monotonic clock to the current wall time.
    public init() {
        var wall = timespec()
        clock_gettime(CLOCK_REALTIME, &wall)
        let wallNanos = Int64(wall.tv_sec) * 1_000_000_000 + Int64(wall.tv_nsec)
        anchor = wallNanos - Self.monotonic()
    }

    @inline(__always)
    private static func monotonic() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    public func now() -> Int64 { anchor &+ Self.monotonic() }
}

/// A clock that only moves when told to: for tests and simulations. It may be set backwards,
/// which limiters treat as no time passing.
public final class ManualClock: LimiterClock {
    private let instant: Atomic<Int64>

    /// Creates a clock at `nanoseconds` since the Unix epoch (default 2026-01-01T00:00:00Z).
    public init(nanoseconds: Int64 = 1_767_225_600 * 1_000_000_000) {
        instant = Atomic(nanoseconds)
    }

    public func now() -> Int64 { instant.load(ordering: .acquiring) }

    /// Moves the clock by `nanoseconds` (negative values move it backwards).
    public func advance(nanoseconds: Int64) {
        instant.wrappingAdd(nanoseconds, ordering: .acquiringAndReleasing)
    }

    /// Moves the clock by `duration`.
    public func advance(by duration: Duration) {
        advance(nanoseconds: duration.nanoseconds)
    }

    /// Sets the clock to an absolute instant.
    public func set(nanoseconds: Int64) {
        instant.store(nanoseconds, ordering: .releasing)
    }
}

extension Duration {
    /// The duration in whole nanoseconds (truncated), saturating at `Int64` bounds.
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }
}

/// Nanoseconds per second, the unit conversions use everywhere.
let nanosPerSecond: Int64 = 1_000_000_000
