/// The exact sliding window: every admitted cost with its instant, oldest first, in a ring that grows
/// as needed. Costs admitted at the same instant share one entry, so the log holds at most one entry
/// per distinct instant in the window (and never more than `limit` entries).
///
/// `@unchecked Sendable`: a log is owned by exactly one `StoreEntry`, and entries are only read or
/// written while the lock of the shard that holds them is taken (`MemoryStore.decide`).
final class SlidingLogEntries: @unchecked Sendable {
    var times: ContiguousArray<Int64>
    var costs: ContiguousArray<Int64>
    var head = 0
    var count = 0
    /// The cost of all entries in the ring.
    var total: Int64 = 0

    init(capacity: Int = 4) {
        times = ContiguousArray(repeating: 0, count: capacity)
        costs = ContiguousArray(repeating: 0, count: capacity)
    }

    /// Approximate heap bytes held, for memory accounting.
    var byteCount: Int { times.capacity * 16 }

    func index(_ offset: Int) -> Int {
        let i = head &+ offset
        return i >= times.count ? i &- times.count : i
    }

    /// Drops entries that have left the window `(now − window, now]`.
    func prune(now: Int64, window: Int64) {
        while count > 0, times[head] &+ window <= now {
            total &-= costs[head]
            head = index(1)
            count &-= 1
        }
        if count == 0 { head = 0 }
    }

    func append(_ time: Int64, cost: Int64) {
        total &+= cost
        if count > 0 {
            let last = index(count &- 1)
            if times[last] == time {
                costs[last] &+= cost
                return
            }
        }
        if count == times.count { grow() }
        let slot = index(count)
        times[slot] = time
        costs[slot] = cost
        count &+= 1
    }

    func grow() {
        let size = max(4, times.count * 2)
        var newTimes = ContiguousArray<Int64>(repeating: 0, count: size)
        var newCosts = ContiguousArray<Int64>(repeating: 0, count: size)
        for offset in 0..<count {
            newTimes[offset] = times[index(offset)]
            newCosts[offset] = costs[index(offset)]
        }
        times = newTimes
        costs = newCosts
        head = 0
    }

    /// Microseconds from `now` until `free` units of cost have left the window.
    func waitUntilFreed(_ free: Int64, now: Int64, window: Int64) -> Int64 {
        var freed: Int64 = 0
        for offset in 0..<count {
            let i = index(offset)
            freed &+= costs[i]
            if freed >= free { return times[i] &+ window &- now }
        }
        return window  // unreachable while free ≤ total
    }

    /// The newest entry's instant, or nil when empty.
    var newest: Int64? { count > 0 ? times[index(count &- 1)] : nil }
}

/// What the sliding log's evaluation reads of a log pruned to the instant it is evaluated at: the
/// in-process ring, or the summary a store that keeps the log elsewhere reports (`SlidingLogSummary`).
protocol SlidingLogReading {
    /// The cost of every entry in the window.
    var total: Int64 { get }
    /// The oldest entry's instant, or nil when the log is empty.
    var oldest: Int64? { get }
    /// The newest entry's instant, or nil when the log is empty.
    var newest: Int64? { get }
    /// Microseconds from `now` until `free` units of cost have left the window.
    func waitUntilFreed(_ free: Int64, now: Int64, window: Int64) -> Int64
}

extension SlidingLogEntries: SlidingLogReading {
    var oldest: Int64? { count > 0 ? times[head] : nil }
}

enum SlidingLog {
    /// Evaluates against a log already pruned to `now`.
    @inline(__always)
    static func evaluate(_ spec: LimitSpec, _ log: (some SlidingLogReading)?, now: Int64, cost: Int64) -> Evaluation {
        let tooLarge = cost > spec.capacity
        let used = log?.total ?? 0
        let admits = !tooLarge && used &+ cost <= spec.capacity
        let after = admits ? used &+ cost : used
        var evaluation = Evaluation(
            admits: admits, exceedsCapacity: tooLarge, remaining: spec.capacity &- after, resetAfter: 0,
            retryAfter: tooLarge ? -1 : 0,
            window: spec.window, expiresAt: now, next: LimitState(a: after, b: 0, c: 0))
        guard let log else {
            if after > 0 {
                evaluation.resetAfter = spec.window
                evaluation.expiresAt = now &+ spec.window
            }
            return evaluation
        }
        if !admits && !tooLarge {
            evaluation.retryAfter = log.waitUntilFreed(used &+ cost &- spec.capacity, now: now, window: spec.window)
        }
        if after > 0 {
            // More quota appears when the oldest entry leaves; if the log is empty, the new entry is the oldest.
            evaluation.resetAfter = log.oldest.map { $0 &+ spec.window &- now } ?? spec.window
            evaluation.expiresAt = admits ? now &+ spec.window : (log.newest ?? now) &+ spec.window
        }
        return evaluation
    }
}
