import Benchmark
import Tollgate

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The in-process hot path: `MemoryStore.checkNow` on a plan that never denies.
//
// Cases: a one-bucket plan and a three-limit plan (token bucket + sliding window counter + calendar
// month), each on one hot key and spread round-robin over 1,000,000 keys. Every key is checked once in
// `setup`, so each key has its entry before anything is measured. One measured iteration is 1,000 checks
// (`scalingFactor: .kilo`): the rows marked `*` are per check (rounded down to an integer), `--scale`
// shows them per iteration of 1,000.
//
// What is expected is checked in: `mallocCountTotal` is 0 per iteration of 1,000 checks, for every case
// (a check allocates nothing once its key exists). The tolerance is here; the expected value is in
// `Thresholds/CoreBenchmarks.*.p90.json`; `swift package benchmark thresholds check` compares a run with both.

/// The keys in the spread cases: as many as the Guava comparison (`compare-core.sh`) spreads over.
let spreadKeys = 1_000_000

/// Limits so high that nothing is ever denied: every check does the full evaluate-and-commit work.
/// Durations are in microseconds, the limiters' time base.
enum Plans {
    static let second = Duration.seconds(1).microseconds
    static let bucket = Limit(
        name: "burst",
        algorithm: .tokenBucket(capacity: 1_000_000_000_000, refillTokens: 1_000_000_000_000, refillPeriod: second))
    /// The largest a sliding window counter accepts (2^32): far above the checks one run makes in a minute.
    static let minute = Limit(
        name: "minute", algorithm: .slidingCounter(limit: 1 << 32, window: 60 * second))
    static let month = Limit(name: "month", algorithm: .calendar(limit: 1_000_000_000_000_000, unit: .month))

    static func oneBucket() throws -> Plan {
        try Plan(name: "bench-one-bucket", limits: [bucket])
    }

    static func threeLimits() throws -> Plan {
        try Plan(name: "bench-three-limits", limits: [bucket, minute, month])
    }
}

/// One benchmark's store, plan and keys, built and prefilled before measuring.
final class Fixture {
    let store: MemoryStore
    let plan: Plan
    /// Built once: a `Partition` hashes its strings at creation, as a gateway that caches keys would, and
    /// checked `inout`, so that each remembers where its counters are (as `compare-core` does).
    var partitions: ContiguousArray<Partition>
    /// The next key to check; carried across iterations so the spread cases keep walking the key set.
    var cursor = 0

    /// `prefill`: check every key once now, so that measured checks only find existing entries.
    init(plan: Plan, keys: Int, prefill: Bool = true) throws {
        self.plan = plan
        store = MemoryStore(configuration: .init(maximumEntries: 2_000_000))
        partitions = ContiguousArray(
            (0..<keys).map { Partition(organization: "org_\($0 % 1000)", apiKey: "wz_live_key_\($0)") })
        if prefill {
            for partition in partitions {
                let decision = try store.checkNow(plan, partition: partition, cost: 1)
                precondition(decision.isAllowed, "the benchmark plan must never deny")
            }
        }
    }

    /// `count` checks, round-robin from the cursor; traps if any is denied (the plans never deny).
    @inline(never)
    func run(_ count: Int) throws {
        var k = cursor
        let keys = partitions.count
        var allowed = 0
        for _ in 0..<count {
            let decision = try store.checkNow(plan, partition: &partitions[k], cost: 1)
            if decision.isAllowed { allowed &+= 1 }
            k &+= 1
            if k == keys { k = 0 }
        }
        cursor = k
        precondition(allowed == count, "a check was denied")
        blackHole(allowed)
    }
}

/// Whether the CPU's instruction counter can be read. On Linux it needs a hardware PMU (absent in many
/// virtual machines, this one included); without it package-benchmark reports nothing for `instructions`.
let instructionsAvailable: Bool = {
    #if os(Linux)
    ["cpu", "cpu_core", "cpu_atom", "armv8_pmuv3", "armv8_pmuv3_0"].contains { name in
        access("/sys/bus/event_source/devices/\(name)", F_OK) == 0
    }
    #else
    true
    #endif
}()

let benchmarks: @Sendable () -> Void = {
    // A check must not allocate once its key exists: zero at every percentile, per iteration of 1,000.
    let noAllocation = BenchmarkThresholds(absolute: [.p0: 0, .p25: 0, .p50: 0, .p75: 0, .p90: 0, .p99: 0, .p100: 0])

    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 100,
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 100_000,
        thresholds: [
            .mallocCountTotal: noAllocation,
            // Time on a shared 2-core machine is noisy: compare baselines on the median with room to spare.
            .wallClock: BenchmarkThresholds(relative: [.p50: 25.0]),
            .throughput: BenchmarkThresholds(relative: [.p50: 25.0]),
        ]
    )

    // Names without spaces or slashes: package-benchmark writes thresholds files with those replaced by
    // underscores but looks them up unchanged, so such names could never find their thresholds.
    let cases: [(name: String, makePlan: () throws -> Plan, keys: Int)] = [
        ("check_one-bucket_hot-key", Plans.oneBucket, 1),
        ("check_one-bucket_1M-keys", Plans.oneBucket, spreadKeys),
        ("check_three-limits_hot-key", Plans.threeLimits, 1),
        ("check_three-limits_1M-keys", Plans.threeLimits, spreadKeys),
    ]
    for benchmarkCase in cases {
        Benchmark(benchmarkCase.name) { benchmark, fixture in
            try fixture.run(benchmark.scaledIterations.count)
        } setup: {
            try Fixture(plan: benchmarkCase.makePlan(), keys: benchmarkCase.keys)
        }
    }

    // Instructions per check, where the CPU counts them. Separate benchmarks: with `instructions` among
    // its metrics package-benchmark reads /proc around every iteration, which allocates (16 mallocs per
    // iteration, measured here on the empty loop), and that would hide the zero above.
    if instructionsAvailable {
        for benchmarkCase in cases {
            Benchmark(
                benchmarkCase.name + "_instructions",
                configuration: .init(
                    metrics: [.instructions], thresholds: [.instructions: BenchmarkThresholds(relative: [.p50: 5.0])])
            ) { benchmark, fixture in
                try fixture.run(benchmark.scaledIterations.count)
            } setup: {
                try Fixture(plan: benchmarkCase.makePlan(), keys: benchmarkCase.keys)
            }
        }
    }

    // The floor: the same loop with no check in it, to show what the harness itself costs and allocates.
    Benchmark("control_empty-loop") { benchmark in
        var sum = 0
        for i in benchmark.scaledIterations { sum &+= i }
        blackHole(sum)
    }

    // The control: the first check of each key creates its entry, which for the three-limit plan holds
    // one allocation (the counters after the first, which sits in the entry itself), so it must count
    // 1,000 per iteration. Its checked-in threshold shows that the malloc counter is live, and
    // so that the zeros above mean something. It never reaches a key twice (910 iterations of 1,000
    // checks over 1,000,000 fresh keys); a table that grows adds a few allocations now and then.
    Benchmark(
        "control_first-check_new-keys",
        configuration: .init(
            warmupIterations: 10, maxIterations: 900,
            thresholds: [.mallocCountTotal: BenchmarkThresholds(absolute: [.p50: 0, .p90: 50])])
    ) { benchmark, fixture in
        try fixture.run(benchmark.scaledIterations.count)
    } setup: {
        try Fixture(plan: Plans.threeLimits(), keys: spreadKeys, prefill: false)
    }
}
