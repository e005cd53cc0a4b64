import Synchronization
import Tollgate

/// Remembers refusals so that a client hammering a limit it has reached is answered in process until
/// the refusal's retry instant, without a round trip.
///
/// It only ever refuses, and only what Redis would refuse too: an entry holds the refused cost and the
/// instant (on the local clock, taken when the request was *sent*, so never later than Redis' own) until
/// which that cost cannot pass. A request of the same plan and partition with at least that cost before
/// that instant cannot pass either — quota only returns with time, and other traffic only delays it.
/// Bounded: at `capacity` entries per shard, expired entries are dropped, then the soonest-expiring.
final class DenyCache: Sendable {
    struct Key: Hashable, Sendable {
        let plan: ObjectIdentifier
        let partition: Partition
    }

    struct Entry: Sendable {
        let until: Int64
        let cost: Int
        let decision: Decision
    }

    private final class Shard: Sendable {
        let table = Mutex<[Key: Entry]>([:])
    }

    private let shards: [Shard]
    private let perShard: Int

    init(capacity: Int) {
        let count = 16
        shards = (0..<count).map { _ in Shard() }
        perShard = max(1, (capacity + count - 1) / count)
    }

    private func shard(_ key: Key) -> Shard {
        shards[Int(UInt(bitPattern: key.partition.hashValue) % UInt(shards.count))]
    }

    /// A refusal for `cost` at local instant `now`, if one is known; its retry-after counts down from the
    /// original refusal.
    func lookup(_ key: Key, cost: Int, now: Int64) -> Decision? {
        guard cost > 0 else { return nil }
        return shard(key).table.withLock { table in
            guard let entry = table[key] else { return nil }
            guard now < entry.until else {
                table[key] = nil
                return nil
            }
            guard cost >= entry.cost else { return nil }
            var decision = entry.decision
            decision.retryAfterMicroseconds = entry.until - now
            return decision
        }
    }

    /// Forgets every refusal of `partition`, whatever its plan (its counters were reset).
    func forget(_ partition: Partition) {
        shards[Int(UInt(bitPattern: partition.hashValue) % UInt(shards.count))].table.withLock { table in
            table = table.filter { $0.key.partition != partition }
        }
    }

    /// Records a refusal of `cost` that was sent at local instant `sentAt`.
    func record(_ key: Key, cost: Int, sentAt: Int64, decision: Decision) {
        guard decision.denial == .limited, let retry = decision.retryAfterMicroseconds, retry > 0 else { return }
        let entry = Entry(until: sentAt + retry, cost: cost, decision: decision)
        shard(key).table.withLock { table in
            if table[key] == nil && table.count >= perShard {
                table = table.filter { $0.value.until > sentAt }
                if table.count >= perShard, let soonest = table.min(by: { $0.value.until < $1.value.until }) {
                    table[soonest.key] = nil
                }
            }
            table[key] = entry
        }
    }

    /// Entries held now (for tests and metrics).
    var count: Int { shards.reduce(0) { total, shard in total + shard.table.withLock { $0.count } } }
}
