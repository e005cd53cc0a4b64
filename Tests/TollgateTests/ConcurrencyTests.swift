import Foundation
import Synchronization
import Testing

@testable import Tollgate

/// Many callers on one key admit exactly the quota, never one more.
@Suite struct ConcurrencyTests {
    @Test(arguments: [
        Limit(name: "bucket", algorithm: .tokenBucket(capacity: 1_000, refillTokens: 1, refillPeriod: 3_600 * second)),
        Limit(name: "log", algorithm: .slidingLog(limit: 1_000, window: 3_600 * second)),
        Limit(name: "counter", algorithm: .slidingCounter(limit: 1_000, window: 3_600 * second)),
        Limit(name: "month", algorithm: .calendar(limit: 1_000, unit: .month)),
    ])
    func manyTasksOnOneKeyAdmitExactlyTheQuota(limit: Limit) async throws {
        // A frozen clock: nothing refills while the tasks race.
        let h = try Harness([limit, Limit(name: "org", algorithm: .fixedWindow(limit: 1_000_000, window: 3_600 * second), scope: .organization)])
        let admitted = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    var mine = 0
                    for _ in 0..<100 where try h.check().isAllowed { mine += 1 }
                    return mine
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(admitted == 1_000)
        // And the organization-wide limit was charged exactly once per admitted request.
        #expect(try h.check(cost: 0).results[1].remaining == 1_000_000 - 1_000)
    }

    @Test func threadsOnManyKeysAndOneOrganization() throws {
        // Real OS threads, each with its own keys, all sharing one organization limit of 5,000.
        let h = try Harness([bucket(capacity: 100), Limit(name: "org", algorithm: .slidingLog(limit: 5_000, window: minute), scope: .organization)])
        let total = Atomic<Int>(0)
        let done = DispatchGroup()
        for t in 0..<4 {
            done.enter()
            Thread.detachNewThread {
                for k in 0..<50 {
                    let partition = Partition(organization: "org_1", apiKey: "key_\(t)_\(k)")
                    for _ in 0..<60 where (try? h.check(partition: partition).isAllowed) == true {
                        total.wrappingAdd(1, ordering: .relaxed)
                    }
                }
                done.leave()
            }
        }
        done.wait()
        #expect(total.load(ordering: .relaxed) == 5_000)
    }
}
