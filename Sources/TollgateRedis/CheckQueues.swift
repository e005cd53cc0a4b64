import Synchronization
import Tollgate

/// Group commit for hot keys: while a call for one set of Redis keys (a plan's keys for one partition) is
/// in flight, later checks of the same keys wait here; when the call returns, the waiting checks go
/// together as one call of the plan's script, which decides them in arrival order exactly as if they had
/// been sent one by one. No timer: the first check of an idle key goes at once.
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

    /// The checks waiting per set of keys, in shards so that checks of different keys on different
    /// event loops rarely take the same lock; a key is present while a call for it is in flight.
    private let shards: [Shard]

    private final class Shard: Sendable {
        let queues = Mutex<[Key: [Waiter]]>([:])
    }
    let maximumBatch: Int

    init(maximumBatch: Int, shards: Int = 16) {
        precondition(maximumBatch >= 1, "a batch holds at least one check")
        self.maximumBatch = maximumBatch
        self.shards = (0..<max(1, shards)).map { _ in Shard() }
    }

    private func shard(_ key: Key) -> Shard {
        shards[Int((key.partition.apiKeyHash ^ key.partition.organizationHash) % UInt64(shards.count))]
    }

    /// Claims the keys when no call for them is in flight: the caller then makes the call.
    func claim(_ key: Key) -> Bool {
        shard(key).queues.withLock { queues in
            guard queues[key] == nil else { return false }
            queues[key] = []
            return true
        }
    }

    /// Waits behind the call in flight for `key`, or claims the keys when that call has just ended.
    func wait(_ key: Key, cost: Int, now: Int64) async -> Outcome {
        await withCheckedContinuation { continuation in
            let claimed = shard(key).queues.withLock { queues -> Bool in
                guard queues[key] != nil else {
                    queues[key] = []
                    return true
                }
                queues[key]!.append(Waiter(cost: cost, queuedAt: now, continuation: continuation))
                return false
            }
            if claimed { continuation.resume(returning: .lead(others: [])) }
        }
    }

    /// Called by the caller whose call for `key` has returned: the next batch (at most `maximumBatch`
    /// checks, in arrival order), or an empty list when nothing waits, which releases the keys.
    func next(_ key: Key) -> [Waiter] {
        shard(key).queues.withLock { queues in
            guard let waiting = queues[key], !waiting.isEmpty else {
                queues[key] = nil
                return []
            }
            let batch = Array(waiting.prefix(maximumBatch))
            queues[key] = Array(waiting.dropFirst(batch.count))
            return batch
        }
    }

    /// The number of sets of keys with a call in flight (tests).
    var inFlight: Int { shards.reduce(0) { $0 + $1.queues.withLock { $0.count } } }

    /// The number of checks waiting behind the call in flight for `key` (tests).
    func waiting(_ key: Key) -> Int { shard(key).queues.withLock { $0[key]?.count ?? 0 } }
}
