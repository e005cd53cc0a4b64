@testable import Tollgate

/// Plain, obviously-correct models of each algorithm, written differently from the store's code:
/// they keep the whole history (or use GCRA instead of a level), and find retry-after by search.
protocol ReferenceLimit {
    var capacity: Int64 { get }
    func admits(at now: Int64, cost: Int64) -> Bool
    func remaining(at now: Int64) -> Int64
    mutating func record(at now: Int64, cost: Int64)
    /// How far ahead a search for the earliest admitting instant must look.
    var horizon: Int64 { get }
}

extension ReferenceLimit {
    /// The earliest instant ≥ now at which `cost` would be admitted with no other traffic, found by
    /// binary search (availability never decreases while nothing is consumed).
    func earliestAdmission(at now: Int64, cost: Int64) -> Int64? {
        guard cost <= capacity else { return nil }
        if admits(at: now, cost: cost) { return now }
        var low = now  // denies
        var high = now + horizon
        precondition(admits(at: high, cost: cost), "horizon too short")
        while high - low > 1 {
            let mid = low + (high - low) / 2
            if admits(at: mid, cost: cost) { high = mid } else { low = mid }
        }
        return high
    }
}

/// GCRA ("virtual scheduling") in exact rational time: X-units of 1/R microsecond.
struct ReferenceTokenBucket: ReferenceLimit {
    let capacity: Int64
    let tokens: Int64
    let period: Int64
    var tat: Int128 = .min  // theoretical arrival time in X-units; .min = never used

    init(capacity: Int64, tokens: Int64, period: Int64) {
        self.capacity = capacity
        self.tokens = tokens
        self.period = period
    }

    // One microsecond is `tokens` X-units; one token is `period` X-units.
    func x(_ us: Int64) -> Int128 { Int128(us) * Int128(tokens) }
    var tau: Int128 { Int128(capacity) * Int128(period) }

    func admits(at now: Int64, cost: Int64) -> Bool {
        let start = max(tat, x(now))
        return start + Int128(cost) * Int128(period) - x(now) <= tau
    }

    func remaining(at now: Int64) -> Int64 {
        let debt = max(tat, x(now)) - x(now)
        return Int64((tau - debt) / Int128(period))
    }

    mutating func record(at now: Int64, cost: Int64) {
        tat = max(tat, x(now)) + Int128(cost) * Int128(period)
    }

    var horizon: Int64 { Int64((Int128(capacity) * Int128(period) + Int128(tokens) - 1) / Int128(tokens)) + 1 }
}

/// Every admitted request kept; the window is (now − W, now].
struct ReferenceSlidingLog: ReferenceLimit {
    let capacity: Int64
    let window: Int64
    var history: [(time: Int64, cost: Int64)] = []

    func used(at now: Int64) -> Int64 {
        history.filter { now - $0.time < window }.reduce(0) { $0 + $1.cost }
    }
    func admits(at now: Int64, cost: Int64) -> Bool { used(at: now) + cost <= capacity }
    func remaining(at now: Int64) -> Int64 { capacity - used(at: now) }
    mutating func record(at now: Int64, cost: Int64) { history.append((now, cost)) }
    var horizon: Int64 { window + 1 }
}

/// Counts per epoch-aligned window; the estimate `prev·(N−k)/N + cur` (k whole ticks elapsed of N per
/// window, ticks of ⌈W/2^20⌉ µs) compared in exact rationals.
struct ReferenceSlidingCounter: ReferenceLimit {
    let capacity: Int64
    let window: Int64
    var counts: [Int64: Int64] = [:]

    var tick: Int64 { (window + (1 << 20) - 1) / (1 << 20) }
    var ticksPerWindow: Int128 { Int128((window + tick - 1) / tick) }
    func index(_ t: Int64) -> Int64 { t >= 0 ? t / window : (t - window + 1) / window }
    func weights(at now: Int64) -> (prev: Int128, cur: Int128, left: Int128) {
        let i = index(now)
        let elapsedTicks = Int128((now - i * window) / tick)
        return (Int128(counts[i - 1] ?? 0), Int128(counts[i] ?? 0), ticksPerWindow - elapsedTicks)
    }
    func admits(at now: Int64, cost: Int64) -> Bool {
        let (prev, cur, left) = weights(at: now)
        return prev * left + (cur + Int128(cost)) * ticksPerWindow <= Int128(capacity) * ticksPerWindow
    }
    func remaining(at now: Int64) -> Int64 {
        let (prev, cur, left) = weights(at: now)
        let weighted = (prev * left + ticksPerWindow - 1) / ticksPerWindow
        return max(0, Int64(Int128(capacity) - cur - weighted))
    }
    mutating func record(at now: Int64, cost: Int64) { counts[index(now), default: 0] += cost }
    var horizon: Int64 { 2 * window + 1 }
}

/// Counts per epoch-aligned window.
struct ReferenceFixedWindow: ReferenceLimit {
    let capacity: Int64
    let window: Int64
    var counts: [Int64: Int64] = [:]

    func index(_ t: Int64) -> Int64 { t >= 0 ? t / window : (t - window + 1) / window }
    func admits(at now: Int64, cost: Int64) -> Bool { (counts[index(now)] ?? 0) + cost <= capacity }
    func remaining(at now: Int64) -> Int64 { capacity - (counts[index(now)] ?? 0) }
    mutating func record(at now: Int64, cost: Int64) { counts[index(now), default: 0] += cost }
    var horizon: Int64 { window + 1 }
}
