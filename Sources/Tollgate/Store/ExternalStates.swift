/// A sliding log kept outside the process, as its store reports it for one request: pruned to the
/// instant the request is evaluated at (the later of now and the newest entry).
package struct SlidingLogSummary: Sendable, Equatable, SlidingLogReading {
    /// The cost of every entry in the window.
    package var total: Int64
    package var oldest: Int64?
    package var newest: Int64?
    /// When the log refuses a request it could admit later: the instant of the entry with which enough
    /// cost has left the window for it. Nil otherwise.
    package var freedAt: Int64?

    package static let empty = SlidingLogSummary(total: 0, oldest: nil, newest: nil, freedAt: nil)

    package init(total: Int64, oldest: Int64?, newest: Int64?, freedAt: Int64?) {
        self.total = total
        self.oldest = oldest
        self.newest = newest
        self.freedAt = freedAt
    }

    func waitUntilFreed(_ free: Int64, now: Int64, window: Int64) -> Int64 {
        (freedAt ?? now) &+ window &- now
    }
}

/// The counter states of one plan's limits for one partition, kept outside the process (in Redis), by
/// limit index: what `Plan.decide(_:now:cost:)` reads and advances.
package struct ExternalStates: Sendable {
    /// `LimitState` per limit (unused for sliding logs).
    var states = InlineArray<8, LimitState>(repeating: LimitState())
    /// The log per sliding-log limit (unused for the others).
    package var logs = InlineArray<8, SlidingLogSummary>(repeating: .empty)

    package init() {}

    /// Sets limit `index`'s state: the token bucket's deficit and last update (`a`, `b`), the sliding
    /// counter's window start, previous and current counts, a window's start, count and end.
    package mutating func set(_ index: Int, a: Int64, b: Int64, c: Int64) {
        states[index] = LimitState(a: a, b: b, c: c)
    }

    package func state(_ index: Int) -> (a: Int64, b: Int64, c: Int64) {
        (states[index].a, states[index].b, states[index].c)
    }
}

extension Plan {
    /// Decides one request from counter states kept elsewhere, with the in-process store's arithmetic
    /// and rules (all or nothing, a refused request consumes nothing, a clock that goes back is no time
    /// passing). On return `external` holds the states after the request: what the store that keeps
    /// them must have written, and what the next request of a batch is decided from.
    package func decide(_ external: inout ExternalStates, now: Int64, cost: Int64) -> Decision {
        let hot = compiled.hot
        let specs = hot.pointee.specs
        let count = hot.pointee.limitCount
        var decision = Decision(instant: now)
        var next = InlineArray<8, LimitState>(repeating: LimitState())
        func evaluate(_ index: Int, cost: Int64) -> Evaluation {
            let spec = specs[index]
            if spec.kind == .slidingLog {
                let log = external.logs[index]
                return SlidingLog.evaluate(spec, log, now: max(now, log.newest ?? now), cost: cost)
            }
            return Evaluation.of(spec, calendar: hot.pointee.calendars[index], state: external.states[index], now: now, cost: cost)
        }
        for index in 0..<count {
            let evaluation = evaluate(index, cost: cost)
            next[index] = evaluation.next
            decision.append(LimitResult(index: index, spec: specs[index], evaluation: evaluation))
        }
        decision.settle()
        if !decision.isAllowed {
            // Nothing is consumed: limits that would have admitted report their quota as it stands.
            for index in 0..<count where decision.storage[index].admits {
                let unchanged = evaluate(index, cost: 0)
                decision.storage[index].remaining = unchanged.remaining
                decision.storage[index].resetAfterMicroseconds = unchanged.resetAfter
            }
            return decision
        }
        guard cost > 0 else { return decision }
        for index in 0..<count where decision.storage[index].admits {
            if specs[index].kind == .slidingLog {
                var log = external.logs[index]
                let t = max(now, log.newest ?? now)
                log.total = next[index].a
                log.oldest = log.oldest ?? t
                log.newest = t
                external.logs[index] = log
            } else {
                external.states[index] = next[index]
            }
        }
        return decision
    }

    /// The end of the calendar period of limit `index` (a calendar quota) that starts at `start`.
    package func periodEnd(limit index: Int, start: Int64) -> Int64 {
        compiled.calendars[index]?.window(containing: start).end ?? start
    }
}
