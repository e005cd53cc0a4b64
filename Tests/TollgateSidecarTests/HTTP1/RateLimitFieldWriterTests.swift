import HTTPTypes
import NIOCore
import Testing
import Tollgate
import TollgateHTTP

@testable import TollgateSidecar

/// The RateLimit fields written as bytes are `RateLimitOutcome.headers`, field for field, for admitted
/// and refused decisions, with and without the legacy fields and shadow limits.
@Suite struct RateLimitFieldWriterTests {
    static let second: Int64 = 1_000_000

    static func plan(shadow: Bool) throws -> Plan {
        try Plan(
            name: "test",
            limits: [
                Limit(name: "burst", algorithm: .tokenBucket(capacity: 2, refillTokens: 1, refillPeriod: 10 * second)),
                Limit(name: "minute", algorithm: .fixedWindow(limit: 1_000_000_000_000, window: 60 * second), shadow: shadow),
                Limit(name: "month", algorithm: .calendar(limit: 100, unit: .month), scope: .organization),
            ])
    }

    static func written(_ outcome: RateLimitOutcome) -> [String] {
        var out = ByteBuffer()
        RateLimitFieldWriter.write(outcome, into: &out)
        return String(buffer: out).split(separator: "\r\n").map(String.init)
    }

    static func expected(_ outcome: RateLimitOutcome) -> [String] {
        outcome.headers.map { "\($0.name.rawName): \($0.value)" }
    }

    @Test(arguments: [false, true], [false, true])
    func theBytesAreTheOutcomesFields(legacy: Bool, shadow: Bool) async throws {
        let store = MemoryStore(clock: Tollgate.ManualClock())
        let plan = try Self.plan(shadow: shadow)
        let partition = Partition(organization: "org", apiKey: "key")
        // Admitted twice, then refused by the burst limit (Retry-After).
        for _ in 0..<3 {
            var outcome = RateLimitOutcome()
            outcome.plan = plan
            outcome.decision = try await store.check(plan, partition: partition, cost: 1)
            outcome.includesLegacyHeaders = legacy
            #expect(!Self.expected(outcome).isEmpty)
            #expect(Self.written(outcome) == Self.expected(outcome))
            #expect(RateLimitFieldWriter.hasFields(outcome))
        }
    }

    @Test(arguments: [0, 7, 10, 99, -1, -10, 1_000_000_000_000, Int64.max, Int64.min])
    func integersAreWrittenAsDecimals(value: Int64) {
        var out = ByteBuffer()
        RateLimitFieldWriter.writeInteger(value, into: &out)
        #expect(String(buffer: out) == String(value))
    }

    @Test func anOutcomeWithoutADecisionHasNoFields() {
        let outcome = RateLimitOutcome()
        #expect(Self.written(outcome).isEmpty)
        #expect(!RateLimitFieldWriter.hasFields(outcome))
        #expect(outcome.headers.isEmpty)
    }
}
