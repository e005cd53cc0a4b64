/// Keeps a dead Redis from costing a timeout on every request: after `failureThreshold` consecutive
/// failures the circuit opens and calls are refused at once; after `probeInterval` one call is let
/// through as a probe — success closes the circuit, failure opens it for another interval.
///
/// A plain state machine over microsecond instants, so tests drive it with a manual clock.
struct CircuitBreaker: Sendable {
    enum State: Sendable, Equatable {
        case closed(consecutiveFailures: Int)
        case open(until: Int64)
        /// One probe is in flight; everyone else is refused until it reports.
        case probing
    }

    /// What a caller should do now.
    enum Permission: Sendable, Equatable {
        case call
        case probe
        case refuse
    }

    let failureThreshold: Int
    let probeInterval: Int64
    private(set) var state: State = .closed(consecutiveFailures: 0)

    init(failureThreshold: Int, probeInterval: Int64) {
        self.failureThreshold = max(1, failureThreshold)
        self.probeInterval = max(1, probeInterval)
    }

    mutating func permission(now: Int64) -> Permission {
        switch state {
        case .closed: return .call
        case .probing: return .refuse
        case .open(let until):
            guard now >= until else { return .refuse }
            state = .probing
            return .probe
        }
    }

    mutating func recordSuccess() {
        state = .closed(consecutiveFailures: 0)
    }

    mutating func recordFailure(now: Int64) {
        switch state {
        case .closed(let failures):
            state = failures + 1 >= failureThreshold ? .open(until: now + probeInterval) : .closed(consecutiveFailures: failures + 1)
        case .probing, .open:
            state = .open(until: now + probeInterval)
        }
    }

    var isOpen: Bool {
        if case .closed = state { return false }
        return true
    }
}
