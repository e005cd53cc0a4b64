/// Fixed windows (epoch-aligned durations) and calendar quotas: a count that resets at each window's end.
enum FixedWindow {
    @_transparent
    static func evaluate(
        _ spec: LimitSpec, _ state: LimitState, window: (start: Int64, end: Int64), now: Int64, cost: Int64
    ) -> Evaluation {
        let length = window.end &- window.start
        let tooLarge = cost > spec.capacity
        let used = state.a == window.start && state.c == window.end ? state.b : 0
        let admits = !tooLarge && used &+ cost <= spec.capacity
        let after = admits ? used &+ cost : used
        return Evaluation(
            admits: admits, exceedsCapacity: tooLarge, remaining: spec.capacity &- after,
            resetAfter: after > 0 ? window.end &- now : 0,
            retryAfter: tooLarge ? -1 : (admits ? 0 : window.end &- now),
            window: length, expiresAt: after > 0 ? window.end : now,
            next: LimitState(a: window.start, b: after, c: window.end))
    }

    /// The epoch-aligned window of `length` microseconds containing `now`.
    @inline(__always)
    static func aligned(_ now: Int64, length: Int64) -> (start: Int64, end: Int64) {
        var offset = now % length
        if offset < 0 { offset &+= length }
        let start = now &- offset
        return (start, start &+ length)
    }
}

/// The sliding window counter: the previous window's count weighted by how much of it still overlaps
/// the sliding window, plus the current window's count. O(1) state.
///
/// The overlap is measured in ticks: each window is cut into at most 2^20 ticks (one tick is one
/// microsecond for windows up to about a second), and a request passes when
/// `previous·(N − elapsedTicks) + (current + cost)·N ≤ limit·N`. That keeps every product below 2^53,
/// so the Redis script computes exactly the same answers, and the estimate moves in steps of at most
/// one millionth of a window.
enum SlidingCounter {
    static let maximumTicks: Int64 = 1 << 20

    /// The tick length and the number of ticks in a window of `window` microseconds (`LimitSpec` keeps
    /// them, so that a check does not divide for them).
    static func ticks(_ window: Int64) -> (tick: Int64, count: Int64) {
        let tick = (window &+ maximumTicks &- 1) / maximumTicks
        return (tick, (window &+ tick &- 1) / tick)
    }

    /// A window of `count` ticks of `tick` microseconds, `elapsed` microseconds (`elapsedTicks` whole ticks)
    /// into it.
    struct Position {
        let window: Int64
        let tick: Int64
        let count: Int64
        let elapsed: Int64
        let elapsedTicks: Int64
    }

    @_transparent
    static func evaluate(_ spec: LimitSpec, _ state: LimitState, now: Int64, cost: Int64) -> Evaluation {
        let length = spec.window
        let tooLarge = cost > spec.capacity
        let window = FixedWindow.aligned(now, length: length)
        let previous: Int64
        let current: Int64
        if state.a == window.start {
            (previous, current) = (state.b, state.c)
        } else if state.a == window.start &- length {
            (previous, current) = (state.c, 0)
        } else {
            (previous, current) = (0, 0)
        }
        let elapsed = now &- window.start
        let position = Position(
            window: length, tick: spec.tick, count: spec.tickCount, elapsed: elapsed, elapsedTicks: elapsed / spec.tick)
        let wait =
            tooLarge ? -1 : retry(previous: previous, current: current, at: position, limit: spec.capacity, cost: cost)
        let admits = wait == 0
        let after = admits ? current &+ cost : current
        let remaining = remaining(previous: previous, current: after, at: position, limit: spec.capacity)
        let resetAfter =
            remaining >= spec.capacity
            ? 0 : retry(previous: previous, current: after, at: position, limit: spec.capacity, cost: remaining &+ 1)
        let expiresAt: Int64 = after > 0 ? window.end &+ length : (previous > 0 ? window.end : now)
        return Evaluation(
            admits: admits, exceedsCapacity: tooLarge, remaining: remaining, resetAfter: resetAfter, retryAfter: wait,
            window: length, expiresAt: expiresAt, next: LimitState(a: window.start, b: previous, c: after))
    }

    /// `limit − current − ⌈previous·(N − elapsedTicks)/N⌉`, at least 0.
    @inline(__always)
    static func remaining(previous: Int64, current: Int64, at position: Position, limit: Int64) -> Int64 {
        if previous == 0 { return max(0, limit &- current) }
        let weighted = ceilDiv(previous &* (position.count &- position.elapsedTicks), position.count)
        return max(0, limit &- current &- weighted)
    }

    /// Microseconds from now until a request of `cost` passes, given no other traffic; 0 if it passes now.
    /// Requires `cost ≤ limit`.
    @inline(__always)
    static func retry(previous: Int64, current: Int64, at position: Position, limit: Int64, cost: Int64) -> Int64 {
        let (tick, count) = (position.tick, position.count)
        let room = limit &- current &- cost
        if room >= 0 {
            if previous == 0 { return 0 }
            // Passes from tick k on, where previous·(N − k) ≤ room·N, i.e. k ≥ N − ⌊room·N / previous⌋.
            let earliest = count &- (room &* count) / previous
            if earliest <= position.elapsedTicks { return 0 }
            if earliest < count { return earliest &* tick &- position.elapsed }
        }
        // In the next window the current count becomes the previous one and nothing is current yet;
        // the window after that starts empty.
        let toBoundary = position.window &- position.elapsed
        if current == 0 { return toBoundary }
        let earliest = max(0, count &- ((limit &- cost) &* count) / current)
        return toBoundary &+ min(earliest &* tick, position.window)
    }
}
