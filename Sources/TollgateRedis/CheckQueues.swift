import Synchronization
import Tollgate

/// Group commit for hot keys: while a call for one set of Redis keys (a plan's keys for one partition) is
/// in flight (or `maximumInFlight` calls are), later checks of the same keys wait here; when a call
/// returns, the waiting checks go together as one call of the plan's script, which decides them in
/// arrival order exactly as if they had been sent one by one. No timer: the first check of an idle key
/// goes at once.
///
/// The caller that made the call in flight hands the next batch to the first of its checks, whose task
/// then makes the call and hands the decisions to the others: no task exists only to drive a queue, and
/// every caller is resumed by a decision or a failure, once.
final class CheckQueues: Sendable {
    /// Which keys a check touches: its plan and partition.
    struct Key: Hashable, Sendable {
        let plan: ObjectIdentifier
        let partition: Partition
    }

    /// What a waiting check is resumed with.
    enum Outcome: Sendable {
        case decision(Decision)
        case failure(RedisLimitStore.Failure)
        /// Make the next call, for this check and then `others`, in this order.
        case lead(others: [Waiter])
    }

    /// A check waiting behind the call in flight for its keys.
    struct Waiter: Sendable {
        let cost: Int
        /// The store's clock when it queued (for the queue wait metric).
        let queuedAt: Int64
        let continuation: CheckedContinuation<Outcome, Never>
    }

    /// The calls in flight and the checks waiting per set of keys, in shards so that checks of different
    /// keys on different event loops rarely take the same lock; a key is present while a call for it is
    /// in flight.
    private let shards: [Shard]

    private struct Entry {
        var calls = 1
        var waiting: [Waiter] = []
    }

    private final class Shard: Sendable {
        let queues = Mutex<[Key: Entry]>([:])
    }
    let maximumBatch: Int
    let maximumInFlight: Int

    init(maximumBatch: Int, maximumInFlight: Int = 1, shards: Int = 16) {
        precondition(maximumBatch >= 1, "a batch holds at least one check")
        precondition(maximumInFlight >= 1, "at least one call is in flight")
        self.maximumBatch = maximumBatch
        self.maximumInFlight = maximumInFlight
        self.shards = (0..<max(1, shards)).map { _ in Shard() }
    }

    /// Takes one more call for `key` when it may go now: nothing in flight, or fewer than
    /// `maximumInFlight` calls and nothing queued (a later check never overtakes one that waits).
    private func take(_ key: Key, in queues: inout [Key: Entry]) -> Bool {
        guard var entry = queues[key] else {
            queues[key] = Entry()
            return true
        }
        guard entry.calls < maximumInFlight, entry.waiting.isEmpty else { return false }
        entry.calls += 1
        queues[key] = entry
        return true
    }

    private func shard(_ key: Key) -> Shard {
        shards[Int((key.partition.apiKeyHash ^ key.partition.organizationHash) % UInt64(shards.count))]
    }

    /// Claims a call for the keys when it may go now: the caller then makes the call.
    func claim(_ key: Key) -> Bool {
        shard(key).queues.withLock { take(key, in: &$0) }
    }

    /// Waits behind the calls in flight for `key`, or claims a call when one has just ended.
    func wait(_ key: Key, cost: Int, now: Int64) async -> Outcome {
        await withCheckedContinuation { continuation in
            let claimed = shard(key).queues.withLock { queues -> Bool in
                if take(key, in: &queues) { return true }
                queues[key]!.waiting.append(Waiter(cost: cost, queuedAt: now, continuation: continuation))
                return false
            }
            if claimed { continuation.resume(returning: .lead(others: [])) }
        }
    }

    /// Called by the caller whose call for `key` has returned: the next batch (at most `maximumBatch`
    /// checks, in arrival order), which the first of them sends in place of the call that ended; or an
    /// empty list when nothing waits, which ends that call (and releases the keys after the last).
    func next(_ key: Key) -> [Waiter] {
        shard(key).queues.withLock { queues in
            guard var entry = queues[key] else { return [] }
            guard !entry.waiting.isEmpty else {
                entry.calls -= 1
                queues[key] = entry.calls == 0 ? nil : entry
                return []
            }
            let batch = Array(entry.waiting.prefix(maximumBatch))
            entry.waiting.removeFirst(batch.count)
            queues[key] = entry
            return batch
        }
    }

    /// The number of sets of keys with a call in flight (tests).
    var inFlight: Int { shards.reduce(0) { $0 + $1.queues.withLock { $0.count } } }

    /// The number of calls in flight for `key` (tests).
    func calls(_ key: Key) -> Int { shard(key).queues.withLock { $0[key]?.calls ?? 0 } }

    /// The number of checks waiting behind the calls in flight for `key` (tests).
    func waiting(_ key: Key) -> Int { shard(key).queues.withLock { $0[key]?.waiting.count ?? 0 } }
}
