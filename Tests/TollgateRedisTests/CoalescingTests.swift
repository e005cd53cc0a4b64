import Foundation
import MetricsTestKit
import Synchronization
import Testing
import Tollgate
import TollgateTestSupport

@testable import TollgateRedis

/// Group commit of hot keys (`CheckQueues`): checks that queue behind a call for their keys go together
/// as one call, decided as if sent one by one, in arrival order.
@Suite struct CoalescingTests {
    // MARK: The queues, as plain values

    @Test func anIdleKeyIsSentAtOnceAndOthersQueueBehindItsCall() async throws {
        let queues = CheckQueues(maximumBatch: 2)
        let key = CheckQueues.Key(plan: ObjectIdentifier(queues), partition: Partition(organization: "o", apiKey: "k"))
        let other = CheckQueues.Key(plan: ObjectIdentifier(queues), partition: Partition(organization: "o", apiKey: "other"))
        #expect(queues.claim(key), "an idle key's check goes at once")
        #expect(!queues.claim(key), "a second check of the same keys waits")
        #expect(queues.claim(other), "other keys are not held back")
        #expect(queues.next(other).isEmpty && queues.inFlight == 1, "nothing waited: the keys are released")

        // Three checks queue behind the call in flight, in this order; each is resumed once.
        var waiters: [Task<String, Never>] = []
        for cost in 1...3 {
            waiters.append(
                Task {
                    switch await queues.wait(key, cost: cost, now: 0) {
                    case .decision: "decision"
                    case .failure: "failure"
                    case .lead(let others): "lead+" + others.map { String($0.cost) }.joined(separator: ",")
                    }
                })
            while queues.waiting(key) < cost { await Task.yield() }
        }
        // The call in flight returns: the next batch is the first two, in arrival order; the first leads.
        let batch = queues.next(key)
        #expect(batch.map(\.cost) == [1, 2])
        batch[0].continuation.resume(returning: .lead(others: [batch[1]]))
        batch[1].continuation.resume(returning: .decision(.unchecked(instant: 0, origin: .store)))
        // That batch's call returns: the third goes next, alone; then nothing waits.
        let last = queues.next(key)
        #expect(last.map(\.cost) == [3])
        last[0].continuation.resume(returning: .lead(others: []))
        #expect(queues.next(key).isEmpty)
        #expect(queues.inFlight == 0 && queues.claim(key), "released, and idle again")
        var outcomes: [String] = []
        for waiter in waiters { outcomes.append(await waiter.value) }
        #expect(outcomes == ["lead+2", "decision", "lead+"])
    }

    /// With two calls allowed in flight, a check that finds one call out goes at once; only a key with two
    /// out queues, and a later check never overtakes one that waits.
    @Test func withTwoCallsInFlightAKeyQueuesOnlyBehindTheSecond() async throws {
        let queues = CheckQueues(maximumBatch: 8, maximumInFlight: 2)
        let key = CheckQueues.Key(plan: ObjectIdentifier(queues), partition: Partition(organization: "o", apiKey: "k"))
        #expect(queues.claim(key) && queues.claim(key), "two calls go at once")
        #expect(!queues.claim(key), "a third check waits")
        let waiter = Task {
            if case .lead(let others) = await queues.wait(key, cost: 7, now: 0) { return others.count }
            return -1
        }
        while queues.waiting(key) < 1 { await Task.yield() }
        // The first call returns: the waiting check leads the next call in its place (still two out).
        let batch = queues.next(key)
        #expect(batch.map(\.cost) == [7] && queues.calls(key) == 2)
        batch[0].continuation.resume(returning: .lead(others: []))
        #expect(await waiter.value == 0)
        // Calls end with nothing waiting: one fewer out, and a new check may go again at once.
        #expect(queues.next(key).isEmpty && queues.calls(key) == 1)
        #expect(queues.claim(key) && queues.calls(key) == 2)
        #expect(queues.next(key).isEmpty && queues.next(key).isEmpty && queues.inFlight == 0, "released after the last")
    }

    // MARK: Against Redis

    /// Random concurrent checks (two hot keys, six cold ones, costs 0 to 12, refusals) through the
    /// coalescing store, and the in-process store fed the same checks in the order of the calls that
    /// decided them, at the instants Redis answered: the same decisions, field by field.
    @Test(arguments: [31, 32] as [UInt64])
    func coalescedChecksDecideAsTheInProcessStoreInCallOrder(seed: UInt64) async throws {
        let plan = try everyAlgorithmPlan(name: "coalesce")
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let store = RedisLimitStore(
                    client: client, configuration: .init(denyCache: false, maximumBatch: 8), logger: quietLogger)
                let calls = Mutex<[(Partition, [Int], [Decision])]>([])
                store.callObserver.withLock { $0 = { partition, costs, decisions in calls.withLock { $0.append((partition, costs, decisions)) } } }
                // One organization per key: the in-process replay may then take each key's calls on their own.
                let run = String(UInt64.random(in: 0..<1_000_000_000_000), radix: 36)
                let partitions = (0..<8).map { Partition(organization: "c\(run)-\($0)", apiKey: "key-\($0)") }
                let answers = try await withThrowingTaskGroup(of: [Decision].self) { group in
                    for caller in 0..<24 {
                        group.addTask {
                            var random = SplitMix64(seed: seed &* 1_000 &+ UInt64(caller))
                            var answers: [Decision] = []
                            for _ in 0..<40 {
                                let roll = random.next() % 100
                                let partition = partitions[roll < 80 ? Int(roll % 2) : 2 + Int(random.next() % 6)]
                                let cost = roll % 17 == 0 ? 12 : Int(random.next() % 3)
                                answers.append(try await store.check(plan, partition: partition, cost: cost))
                            }
                            return answers
                        }
                    }
                    return try await group.reduce(into: [Decision]()) { $0 += $1 }
                }
                #expect(answers.allSatisfy { $0.origin == .store })
                let recorded = calls.withLock { $0 }
                #expect(recorded.reduce(0) { $0 + $1.1.count } == 24 * 40, "every check decided by exactly one call")
                #expect(recorded.contains { $0.1.count > 1 }, "hot keys were decided in batches")
                let clock = ManualClock(microseconds: 0)
                let memory = MemoryStore(configuration: .init(maximumEntries: 1_000, shards: 4), clock: clock)
                for (number, (partition, costs, decisions)) in recorded.enumerated() {
                    for (index, cost) in costs.enumerated() {
                        clock.set(microseconds: decisions[index].instant)
                        let expected = try memory.checkNow(plan, partition: partition, cost: cost)
                        let context = Comment(rawValue: "call \(number) check \(index) of \(costs) for \(partition.apiKey)")
                        try #require(decisions[index].denial == expected.denial, context)
                        try #require(decisions[index].retryAfterMicroseconds == expected.retryAfterMicroseconds, context)
                        try #require(Array(decisions[index].results) == Array(expected.results), context)
                    }
                }
            }
        }
    }

    /// 128 concurrent callers on one key of a small limit admit exactly the limit, most of them in
    /// batches, with one or two calls in flight per key; the batch sizes are in the metrics.
    @Test(arguments: [1, 2])
    func hundredsOfCallersOnOneKeyAdmitExactlyTheLimit(maximumInFlight: Int) async throws {
        let plan = try Plan(
            name: "hot",
            limits: [
                Limit(name: "burst", algorithm: .tokenBucket(capacity: 300, refillTokens: 1, refillPeriod: 86_400 * second)),
                Limit(name: "minute", algorithm: .slidingCounter(limit: 5_000, window: 60 * second)),
                Limit(name: "month", algorithm: .calendar(limit: 1_000_000, unit: .month), scope: .organization),
            ])
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let metrics = TestMetrics()
                let store = RedisLimitStore(
                    client: client, configuration: .init(denyCache: false, maximumInFlight: maximumInFlight), logger: quietLogger,
                    metricsFactory: metrics)
                let partition = Partition(organization: "hot-\(UInt64.random(in: 0...UInt64.max))", apiKey: "k")
                let admitted = try await withThrowingTaskGroup(of: Int.self) { group in
                    for _ in 0..<128 {
                        group.addTask {
                            var admitted = 0
                            for _ in 0..<5 where try await store.check(plan, partition: partition, cost: 1).isAllowed { admitted += 1 }
                            return admitted
                        }
                    }
                    return try await group.reduce(0, +)
                }
                #expect(admitted == 300)
                let sizes = try metrics.expectRecorder("tollgate_redis_batch_size")
                #expect(sizes.values.reduce(0) { $0 + Int($1) } == 128 * 5)
                #expect(sizes.values.contains { $0 > 1 }, "checks were decided in batches")
            }
        }
    }

    /// Redis killed while checks queue on one key: every check is answered, once, by the store or by
    /// the failure policy; nothing hangs, and checks reach Redis again once it is back.
    @Test func aServerKilledMidBatchAnswersEveryQueuedCheckOnce() async throws {
        let server = try await RedisTestServer.start()
        let plan = try Plan(name: "k", limits: [Limit(name: "f", algorithm: .fixedWindow(limit: 1_000_000, window: 60 * second))])
        var redis = server.configuration
        redis.commandTimeout = .milliseconds(300)
        redis.connectTimeout = .milliseconds(300)
        redis.reconnectBackoffMaximum = .milliseconds(100)
        try await withClient(redis) { client in
            let store = RedisLimitStore(
                client: client, configuration: .init(failurePolicy: .deny, breakerFailureThreshold: 1_000), logger: quietLogger)
            let partition = Partition(organization: "killed", apiKey: "k")
            let answered = Tally()
            // The server stops itself mid-run (SHUTDOWN NOSAVE through the client: connections drop as if killed).
            let killer = Task {
                while answered.count.load(ordering: .relaxed) < 200 { await Task.yield() }
                _ = await outcome { () async throws(RedisClientError) in try await client.send(["SHUTDOWN", "NOSAVE"]) }
            }
            let origins = try await withThrowingTaskGroup(of: [Decision.Origin].self) { group in
                for _ in 0..<64 {
                    group.addTask {
                        var origins: [Decision.Origin] = []
                        for _ in 0..<20 {
                            origins.append(try await store.check(plan, partition: partition, cost: 1).origin)
                            answered.count.add(1, ordering: .relaxed)
                        }
                        return origins
                    }
                }
                return try await group.reduce(into: [Decision.Origin]()) { $0 += $1 }
            }
            await killer.value
            await server.kill()
            #expect(origins.count == 64 * 20, "every check answered once")
            #expect(origins.contains(.store) && origins.contains(.failClosed))
            #expect(Set(origins).isSubset(of: [.store, .failClosed]))
        }
    }
}

/// A count shared by tasks.
final class Tally: Sendable {
    let count = Atomic<Int>(0)
}
