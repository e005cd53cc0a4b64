import Synchronization

/// The store's circuit breakers, one per Redis node (a single server is one node): a failed primary of
/// a cluster opens only its own, so the slots the others serve keep their checks.
///
/// Only nodes with failures counted have an entry; while there is none (the common case) a check reads
/// one atomic and takes no lock.
final class NodeBreakers: Sendable {
    private let breakers = Mutex<[String: CircuitBreaker]>([:])
    /// Entries in `breakers`, changed under its lock.
    private let counted = Atomic<Int>(0)
    private let failureThreshold: Int
    private let probeInterval: Int64

    init(failureThreshold: Int, probeInterval: Int64) {
        self.failureThreshold = failureThreshold
        self.probeInterval = probeInterval
    }

    /// True when no node has a failure counted.
    var allClean: Bool { counted.load(ordering: .acquiring) == 0 }

    func permission(node: String, now: Int64) -> CircuitBreaker.Permission {
        breakers.withLock { breakers in
            guard var breaker = breakers[node] else { return .call }
            let permission = breaker.permission(now: now)
            breakers[node] = breaker
            return permission
        }
    }

    func recordSuccess(node: String) {
        breakers.withLock { breakers in
            if breakers.removeValue(forKey: node) != nil { counted.subtract(1, ordering: .releasing) }
        }
    }

    /// Counts a failure of `node`; true when it opened the node's circuit.
    func recordFailure(node: String, now: Int64) -> Bool {
        breakers.withLock { breakers in
            var breaker: CircuitBreaker
            if let existing = breakers[node] {
                breaker = existing
            } else {
                breaker = CircuitBreaker(failureThreshold: failureThreshold, probeInterval: probeInterval)
                counted.add(1, ordering: .releasing)
            }
            let wasOpen = breaker.isOpen
            breaker.recordFailure(now: now)
            breakers[node] = breaker
            return !wasOpen && breaker.isOpen
        }
    }
}
