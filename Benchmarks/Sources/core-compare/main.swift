import Foundation
// The Swift side of the Guava comparison: mirrors shared/peers/guava/Keyed.java step for step.
//
//     core-compare THREADS KEYS [one|three] [split|shared] [shuffled] [byvalue] [--checks N] [--shards N]
//
// - N = 10,000,000 checks per thread (`--checks` lowers it, e.g. for callgrind), round-robin over the keys.
// - Keys are built once, before anything is timed (`Partition` hashes its strings at creation, as Java's
//   `String` caches its hash code). Each thread gets its own copy of its keys, also before timing, and
//   passes each partition in place, without copying it per check (see `Work`).
// - Two warm-up passes of N checks over the whole key set on the main thread (this also creates every
//   key's entry), then THREADS OS threads (pthreads) are started and joined; the time from before the
//   first start to after the last join is the result, exactly as Keyed.java measures it.
// - With more than one thread and more than one key, each thread walks its own disjoint slice of the keys
//   (`split`, the default), so that threads on distinct keys really are on distinct keys; `shared` makes
//   every thread walk all keys from the first, as Keyed.java's threads do. With one key, every thread
//   checks that same key (the contention case).
//
// `--shards` sets `MemoryStore.Configuration.shards` (default 64), for experiments.
//
// Prints one line in the format of Keyed.java's.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Tollgate

struct Options {
    var threads = 1
    var keys = 1
    var plan = "one"
    var split = true
    var shuffled = false
    var byValue = false
    var checks = 10_000_000
    var shards = 64

    static let usage = "usage: core-compare THREADS KEYS [one|three] [split|shared] [shuffled] [byvalue] [--checks N] [--shards N]"

    init(_ arguments: [String]) {
        var positional: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--checks" || argument == "--shards", index + 1 < arguments.count,
                let n = Int(arguments[index + 1]), n > 0
            {
                if argument == "--checks" { checks = n } else { shards = n }
                index += 2
                continue
            }
            positional.append(argument)
            index += 1
        }
        guard positional.count >= 2, let threads = Int(positional[0]), threads > 0,
            let keys = Int(positional[1]), keys > 0
        else { Self.fail("expected THREADS and KEYS as positive integers, found \(arguments)") }
        self.threads = threads
        self.keys = keys
        for word in positional.dropFirst(2) {
            switch word {
            case "one", "three": plan = word
            case "split": split = true
            case "shared": split = false
            case "shuffled": shuffled = true
            case "byvalue": byValue = true
            default: Self.fail("unknown argument \"\(word)\"")
            }
        }
        if split && keys > 1 && keys < threads {
            Self.fail("split needs at least one key per thread: \(keys) keys for \(threads) threads")
        }
    }

    static func fail(_ message: String) -> Never {
        let text = "core-compare: \(message)\n\(usage)\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
        exit(2)
    }
}

/// Limits so high that nothing is ever denied (durations in microseconds, the limiters' time base):
/// one token bucket, or that bucket with a sliding window counter and a calendar month.
func makePlan(_ name: String) throws -> Plan {
    let second = Duration.seconds(1).microseconds
    let bucket = Limit(
        name: "burst",
        algorithm: .tokenBucket(capacity: 1_000_000_000_000, refillTokens: 1_000_000_000_000, refillPeriod: second))
    if name == "one" {
        return try Plan(name: "one-bucket", limits: [bucket])
    }
    return try Plan(
        name: "three-limits",
        limits: [
            bucket,
            // The largest a sliding window counter accepts (2^32): far above the checks a run makes in a minute.
            Limit(name: "minute", algorithm: .slidingCounter(limit: 1 << 32, window: 60 * second)),
            Limit(name: "month", algorithm: .calendar(limit: 1_000_000_000_000_000, unit: .month)),
        ])
}

/// What one thread does: `checks` checks round-robin over `range` of the key array.
///
/// Each `Work` holds its own copy of its keys, made before anything is timed and used by one thread
/// only, so that a check passes its partition where it lies, as a gateway passes the partition it keeps
/// per key: reading a `Partition` out of an array shared with other threads copies it (two string
/// retains and releases per check) where Keyed.java only loads a reference. By default the partition
/// goes `inout` (`checkNow(_:partition: inout)`), the form for callers that keep one per key: it
/// remembers where its counters are, as a Java `String` keeps its hash; `byvalue` uses the plain
/// `checkNow`, which looks the counters up in the store's index every time. The store synchronizes
/// itself; nothing else is shared while threads run, so it is Sendable.
final class Work: Sendable {
    let store: MemoryStore
    let plan: Plan
    let byValue: Bool
    /// The partitions of `range`, owned by this work; freed in `deinit`.
    nonisolated(unsafe) let keys: UnsafeMutableBufferPointer<Partition>
    let checks: Int

    init(
        store: MemoryStore, plan: Plan, partitions: ContiguousArray<Partition>, range: Range<Int>, checks: Int,
        byValue: Bool
    ) {
        self.store = store
        self.plan = plan
        self.byValue = byValue
        keys = .allocate(capacity: range.count)
        _ = keys.initialize(from: partitions[range])
        self.checks = checks
    }

    deinit {
        keys.deinitialize()
        keys.deallocate()
    }

    /// Returns how many checks were admitted (all of them, with these plans).
    @inline(never)
    func run() -> Int {
        let store = store
        let plan = plan
        let keys = keys
        let upper = keys.count
        var allowed = 0
        let byValue = byValue
        // In place: exclusive access to the key for the call, which no other thread touches.
        @inline(__always) func check(_ partition: inout Partition) throws -> Bool {
            if byValue { return try store.checkNow(plan, partition: partition, cost: 1).isAllowed }
            return try store.checkNow(plan, partition: &partition, cost: 1).isAllowed
        }
        var k = 0
        for _ in 0..<checks {
            do {
                if try check(&keys[k]) { allowed &+= 1 }
            } catch {
                fatalError("check failed: \(error)")
            }
            k &+= 1
            if k == upper { k = 0 }
        }
        return allowed
    }
}

/// A pthread running one `Work`; joined for its admitted count.
final class Runner {
    let work: Work
    var allowed = 0
    private var thread = pthread_t()

    init(_ work: Work) { self.work = work }

    func start() {
        let context = Unmanaged.passRetained(self).toOpaque()
        let status = pthread_create(
            &thread, nil,
            { context in
                let runner = Unmanaged<Runner>.fromOpaque(context!).takeRetainedValue()
                runner.allowed = runner.work.run()
                return nil
            }, context)
        precondition(status == 0, "pthread_create failed: \(status)")
    }

    func join() {
        let status = pthread_join(thread, nil)
        precondition(status == 0, "pthread_join failed: \(status)")
    }
}

func monotonicNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

let options = Options(Array(CommandLine.arguments.dropFirst()))
let plan: Plan
do {
    plan = try makePlan(options.plan)
} catch {
    Options.fail("invalid plan: \(error)")
}
let store = MemoryStore(configuration: .init(maximumEntries: 2_000_000, shards: options.shards))
let partitions = ContiguousArray(
    (0..<options.keys).map { Partition(organization: "org_\($0 % 1000)", apiKey: "wz_live_key_\($0)") })
let n = options.checks

// `TOLLGATE_MEASURE_MEMORY=1 core-compare 1 KEYS [one|three]`: memory the store holds per key (resident
// set after one check of every key minus before; the partitions' strings are the caller's and are
// shared, not copied, by the store).
func residentBytes() -> Int {
    let fields = ((try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? "").split(separator: " ")
    return (fields.count > 1 ? Int(fields[1]) ?? 0 : 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}
if ProcessInfo.processInfo.environment["TOLLGATE_MEASURE_MEMORY"] == "1" {
    let before = residentBytes()
    for partition in partitions { _ = try? store.checkNow(plan, partition: partition, cost: 1) }
    let after = residentBytes()
    let perKey = Double(after - before) / Double(options.keys)
    print("tollgate memory (MemoryStore, plan=\(options.plan)) keys=\(options.keys) resident bytes per key=\(String(format: "%.1f", perKey)) entries=\(store.statistics.entries)")
    exit(0)
}

// Keyed.java: r.run(); r.run(); — every key, on the main thread.
let warmUp = Work(
    store: store, plan: plan, partitions: partitions, range: 0..<options.keys, checks: n, byValue: options.byValue)
precondition(warmUp.run() == n && warmUp.run() == n, "a warm-up check was denied")

// `shuffled`: the timed threads visit the keys in a fixed random order instead of the order they were
// created in (the order of their entries in memory), as guava/KeyedShuffled.java does for Guava: it tells
// memory-layout effects from the check.
var timed = partitions
if options.shuffled {
    var state: UInt64 = 0x9e37_79b9_7f4a_7c15
    for index in stride(from: timed.count - 1, to: 0, by: -1) {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        timed.swapAt(index, Int((state >> 33) % UInt64(index + 1)))
    }
}
let runners = (0..<options.threads).map { t in
    let range: Range<Int>
    if options.split && options.keys > 1 {
        range = (options.keys * t / options.threads)..<(options.keys * (t + 1) / options.threads)
    } else {
        range = 0..<options.keys
    }
    return Runner(Work(store: store, plan: plan, partitions: timed, range: range, checks: n, byValue: options.byValue))
}
let t0 = monotonicNanoseconds()
for runner in runners { runner.start() }
for runner in runners { runner.join() }
let dt = Double(monotonicNanoseconds() - t0)
precondition(runners.allSatisfy { $0.allowed == n }, "a check was denied")

let layout = (options.threads > 1 && options.keys > 1 ? (options.split ? " split" : " shared") : "")
    + (options.shuffled ? " shuffled" : "") + (options.byValue ? " byvalue" : "")
let perThread = format1(dt / Double(n))
let total = format1(Double(options.threads * n) / (dt / 1e9) / 1e6)
print(
    "tollgate memory (MemoryStore, plan=\(options.plan)\(layout)) threads=\(options.threads) keys=\(options.keys) "
        + "ns/op(per thread)=\(perThread) total Mops/s=\(total)")

/// `%.1f`, as Keyed.java prints.
func format1(_ value: Double) -> String {
    let tenths = (value * 10).rounded()
    let whole = Int(tenths / 10)
    let fraction = Int(tenths) - whole * 10
    return "\(whole).\(fraction)"
}
