import Foundation

@testable import Tollgate

let second: Int64 = 1_000_000
let minute: Int64 = 60 * second

/// A store on a manual clock with the plan and partition most tests need.
struct Harness {
    let clock: ManualClock
    let store: MemoryStore
    let plan: Plan
    let partition: Partition

    init(_ limits: [Limit], timeZone: String = "UTC", at instant: Int64? = nil, maximumEntries: Int = 1_000, shards: Int = 4) throws {
        clock = instant.map { ManualClock(microseconds: $0) } ?? ManualClock()
        store = MemoryStore(configuration: .init(maximumEntries: maximumEntries, shards: shards), clock: clock)
        plan = try Plan(name: "test", timeZone: TimeZone(identifier: timeZone)!, limits: limits)
        partition = Partition(organization: "org_1", apiKey: "key_1")
    }

    @discardableResult
    func check(cost: Int = 1, partition: Partition? = nil) throws -> Decision {
        try store.checkNow(plan, partition: partition ?? self.partition, cost: cost)
    }

    /// Admits requests of `cost` until one is refused; returns how many passed.
    func drain(cost: Int = 1, partition: Partition? = nil) throws -> Int {
        var admitted = 0
        while try check(cost: cost, partition: partition).isAllowed { admitted += 1 }
        return admitted
    }
}

func bucket(_ name: String = "burst", capacity: Int64, per period: Int64 = second, tokens: Int64? = nil, scope: LimitScope = .apiKey, shadow: Bool = false) -> Limit {
    Limit(name: name, algorithm: .tokenBucket(capacity: capacity, refillTokens: tokens ?? capacity, refillPeriod: period), scope: scope, shadow: shadow)
}
