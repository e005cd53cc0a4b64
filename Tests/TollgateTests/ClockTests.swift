import Foundation
import Testing

@testable import Tollgate

/// The production clock against the system's: these read real clocks (they assert agreement, never speed).
@Suite struct ClockTests {
    /// How far a reading may stray outside the system clock readings taken just before and after it.
    /// The source is designed to stay within microseconds; the margin absorbs a loaded machine.
    static let tolerance: Int64 = 200_000

    /// Reads `source` between two system clock readings for `nanoseconds` of wall time, checking that
    /// it lies between them (within the tolerance) and never goes back by more than the tolerance.
    func follow(_ source: MonotonicSource, for nanoseconds: Int64) {
        let start = MonotonicSource.systemNanoseconds()
        var previous: Int64?
        var readings = 0
        while true {
            let before = MonotonicSource.systemNanoseconds()
            let reading = source.nanoseconds()
            let after = MonotonicSource.systemNanoseconds()
            readings += 1
            #expect(reading >= before - Self.tolerance, "reading \(readings) is \(before - reading) ns early")
            #expect(reading <= after + Self.tolerance, "reading \(readings) is \(reading - after) ns late")
            if let previous {
                #expect(reading >= previous - Self.tolerance, "reading \(readings) went back \(previous - reading) ns")
            }
            if reading < before - Self.tolerance || reading > after + Self.tolerance { return }
            previous = reading
            if after - start >= nanoseconds { break }
        }
    }

    @Test func theCycleCounterSourceFollowsTheSystemClockThroughCalibrationAndRenewals() {
        let usable = MonotonicSource.counterIsUsable()
        if !usable {
            print(
                "ClockTests: the cycle counter is not usable here (not x86-64 Linux with the tsc clock source, "
                    + "or TOLLGATE_CLOCK=system): checking the system clock path only")
        }
        let source = MonotonicSource(usingCycles: usable)
        #expect(!source.readsCounter, "a new source reads the system clock until calibrated")
        // Past calibration (10 ms) and two anchor renewals (every 50 ms).
        follow(source, for: 3 * MonotonicSource.anchorLifetime)
        #expect(source.readsCounter == usable)
    }

    @Test func aSourceTurnedOffReadsTheSystemClock() {
        let source = MonotonicSource(usingCycles: false)
        follow(source, for: 2 * MonotonicSource.calibrationTime)
        #expect(!source.readsCounter)
    }

    @Test func theSystemClockIsAnchoredToWallTime() {
        let clock = SystemClock()
        let wall = Int64((Date().timeIntervalSince1970 * 1_000_000).rounded())
        #expect(abs(clock.now() - wall) < 50_000, "SystemClock is \(clock.now() - wall) µs from the wall clock")
    }
}
