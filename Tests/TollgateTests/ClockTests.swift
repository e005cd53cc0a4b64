import Foundation
import Synchronization
import Testing

@testable import Tollgate

/// Two clocks that move only when told to, for `CycleConverter<FakeReadings>`: a 3 GHz counter and the
/// system clock. Only `ClockTests.fake…` use them, one at a time (the suite is serialized).
enum FakeReadings: ClockReadings {
    static let counter = Atomic<Int64>(1_000_000_000)
    static let system = Atomic<Int64>(5_000_000_000)
    static let usable = Atomic<Bool>(true)

    static func cycles() -> Int64 { counter.load(ordering: .relaxed) }
    static func systemNanoseconds() -> Int64 { system.load(ordering: .relaxed) }
    static func counterStillUsable() -> Bool { usable.load(ordering: .relaxed) }

    /// Both clocks forward by `nanoseconds` (the counter at 3 cycles a nanosecond).
    static func advance(nanoseconds: Int64) {
        counter.wrappingAdd(3 * nanoseconds, ordering: .relaxed)
        system.wrappingAdd(nanoseconds, ordering: .relaxed)
    }

    static func reset() {
        counter.store(1_000_000_000, ordering: .relaxed)
        system.store(5_000_000_000, ordering: .relaxed)
        usable.store(true, ordering: .relaxed)
    }
}

@Suite(.serialized) struct ClockTests {
    typealias Fake = CycleConverter<FakeReadings>
    static let millisecond: Int64 = 1_000_000

    /// Calibrates a new converter on the fake clocks: 10 ms of readings, then it reads the counter.
    func calibrated() -> Fake {
        FakeReadings.reset()
        let converter = Fake(usingCycles: true)
        #expect(converter.nanoseconds() == FakeReadings.systemNanoseconds())
        #expect(!converter.readsCounter, "a new converter reads the system clock until calibrated")
        for _ in 0..<10 {
            FakeReadings.advance(nanoseconds: Self.millisecond)
            #expect(converter.nanoseconds() == FakeReadings.systemNanoseconds())
        }
        #expect(converter.readsCounter)
        return converter
    }

    @Test func fakeCountersAreConvertedAtTheMeasuredRate() {
        let converter = calibrated()
        let start = FakeReadings.systemNanoseconds()
        // Between anchors only the counter is read: move it alone and the reading follows it.
        FakeReadings.counter.wrappingAdd(3 * 7 * Self.millisecond, ordering: .relaxed)
        let reading = converter.nanoseconds()
        #expect(abs(reading - (start + 7 * Self.millisecond)) <= 1, "7 ms of cycles read as \(reading - start) ns")
        // Across many anchor renewals the readings stay on the system clock.
        FakeReadings.system.wrappingAdd(7 * Self.millisecond, ordering: .relaxed)
        for _ in 0..<1_000 {
            FakeReadings.advance(nanoseconds: 3 * Self.millisecond + 17)
            #expect(abs(converter.nanoseconds() - FakeReadings.systemNanoseconds()) <= 1)
        }
        #expect(converter.readsCounter)
    }

    @Test func aSuspendStartsCalibrationOver() {
        let converter = calibrated()
        // Suspended for an hour: the counter ran on, the monotonic clock stood still.
        FakeReadings.counter.wrappingAdd(3 * 3_600_000 * Self.millisecond, ordering: .relaxed)
        FakeReadings.advance(nanoseconds: 60 * Self.millisecond)
        #expect(converter.nanoseconds() == FakeReadings.systemNanoseconds())
        #expect(!converter.readsCounter, "the conversion no longer matches: calibrating again")
        for _ in 0..<11 {
            FakeReadings.advance(nanoseconds: Self.millisecond)
            // The system clock until calibrated again, then the counter (to a nanosecond of rounding).
            #expect(abs(converter.nanoseconds() - FakeReadings.systemNanoseconds()) <= 1)
        }
        #expect(converter.readsCounter)
        FakeReadings.counter.wrappingAdd(3 * 20 * Self.millisecond, ordering: .relaxed)
        #expect(abs(converter.nanoseconds() - (FakeReadings.systemNanoseconds() + 20 * Self.millisecond)) <= 1)
    }

    @Test func aCounterThatKeepsJumpingIsGivenUp() {
        let converter = calibrated()
        for _ in 0...Fake.maximumRestarts {
            // The counter goes back by a second: disagreement at the next renewal, calibration again.
            FakeReadings.counter.wrappingAdd(-3_000 * Self.millisecond, ordering: .relaxed)
            for _ in 0..<12 {
                FakeReadings.advance(nanoseconds: Self.millisecond)
                #expect(abs(converter.nanoseconds() - FakeReadings.systemNanoseconds()) <= 1)
            }
        }
        #expect(converter.hasGivenUp)
        FakeReadings.advance(nanoseconds: Self.millisecond)
        #expect(converter.nanoseconds() == FakeReadings.systemNanoseconds())
        #expect(!converter.readsCounter)
    }

    @Test func theCounterIsLeftWhenTheKernelStopsUsingIt() {
        let converter = calibrated()
        FakeReadings.usable.store(false, ordering: .relaxed)
        // The clock source is looked at every `renewalsPerUsabilityCheck` renewals (one per 50 ms).
        for _ in 0...Fake.renewalsPerUsabilityCheck {
            FakeReadings.advance(nanoseconds: 51 * Self.millisecond)
            #expect(converter.nanoseconds() == FakeReadings.systemNanoseconds())
        }
        #expect(converter.hasGivenUp)
    }

    /// Reads `converter` between two system clock readings for `nanoseconds` of real time, checking that
    /// each reading lies between them (within `tolerance`) and never goes back by more than it.
    func follow(_ converter: CycleConverter<HardwareReadings>, for nanoseconds: Int64, tolerance: Int64) {
        let start = HardwareReadings.systemNanoseconds()
        var previous: Int64?
        var readings = 0
        while true {
            let before = HardwareReadings.systemNanoseconds()
            let reading = converter.nanoseconds()
            let after = HardwareReadings.systemNanoseconds()
            readings += 1
            #expect(reading >= before - tolerance, "reading \(readings) is \(before - reading) ns early")
            #expect(reading <= after + tolerance, "reading \(readings) is \(reading - after) ns late")
            if let previous {
                #expect(reading >= previous - tolerance, "reading \(readings) went back \(previous - reading) ns")
            }
            if reading < before - tolerance || reading > after + tolerance { return }
            previous = reading
            if after - start >= nanoseconds { break }
        }
    }

    @Test func theMachinesCounterFollowsTheSystemClock() {
        let usable = HardwareReadings.counterStillUsable()
        if !usable {
            print(
                "ClockTests: SKIPPING the machine's cycle counter: it is not usable here (not x86-64 Linux with the "
                    + "tsc clock source, or TOLLGATE_TIME_SOURCE=system); only the fake clocks test the conversion")
            return
        }
        let converter = CycleConverter<HardwareReadings>(usingCycles: true)
        // Past calibration (10 ms) and two anchor renewals (every 50 ms). The margin absorbs a loaded machine.
        follow(converter, for: 3 * CycleConverter<HardwareReadings>.anchorLifetime, tolerance: 200_000)
        #expect(converter.readsCounter)
    }

    @Test func theSystemClockIsAnchoredToWallTime() {
        let clock = SystemClock()
        let wall = Int64((Date().timeIntervalSince1970 * 1_000_000).rounded())
        #expect(abs(clock.now() - wall) < 50_000, "SystemClock is \(clock.now() - wall) µs from the wall clock")
    }
}
