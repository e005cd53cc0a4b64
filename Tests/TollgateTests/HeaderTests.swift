import RawStructuredFieldValues
import Testing

@testable import Tollgate

/// Header rendering, parsed back as RFC 9651 structured fields.
@Suite struct HeaderTests {
    func parseList(_ value: String) throws -> [(name: String, params: [String: Int])] {
        var parser = StructuredFieldValueParser(Array(value.utf8))
        let list = try parser.parseListFieldValue()
        return try list.map { member in
            guard case .item(let item) = member, case .string(let name) = item.rfc9651BareItem else {
                throw ParseError.notAString
            }
            var params: [String: Int] = [:]
            for (key, value) in item.rfc9651Parameters {
                guard case .integer(let number) = value else { throw ParseError.notAnInteger }
                params[key] = Int(number)
            }
            return (name, params)
        }
    }

    enum ParseError: Error { case notAString, notAnInteger }

    @Test func deniedDecisionRendersAsDesigned() throws {
        let h = try Harness([
            bucket("burst", capacity: 20, per: second, tokens: 20),
            Limit(name: "minute", algorithm: .slidingCounter(limit: 600, window: minute)),
            Limit(name: "month", algorithm: .calendar(limit: 100_000, unit: .month)),
            bucket("experiment", capacity: 1, shadow: true),
        ])
        #expect(try h.check(cost: 20).isAllowed)
        let denied = try h.check()
        let fields = RateLimitHeaders.fields(denied, plan: h.plan)
        #expect(fields.map(\.name) == ["RateLimit-Policy", "RateLimit", "Retry-After"])

        let policy = try parseList(fields[0].value)
        #expect(policy.map(\.name) == ["burst", "minute", "month"])  // the shadow limit is not advertised
        #expect(policy[0].params == ["q": 20, "w": 1])
        #expect(policy[1].params == ["q": 600, "w": 60])
        #expect(policy[2].params == ["q": 100_000, "w": 31 * 86_400])  // January 2026

        let state = try parseList(fields[1].value)
        #expect(state[0].params == ["r": 0, "t": 1])
        #expect(state[1].params["r"] == 580)
        #expect(state[2].params["r"] == 99_980)
        #expect(state[2].params["t"] == 31 * 86_400)
        #expect(fields[2].value == "1")
        #expect(fields[0].value == #""burst";q=20;w=1, "minute";q=600;w=60, "month";q=100000;w=2678400"#)
    }

    @Test func retryAfterRoundsUpAndIsNeverEarlierThanTheDenyingLimitsReset() throws {
        // 3 tokens per second: a token every 333 ms; Retry-After rounds 333 ms up to 1 s.
        let h = try Harness([bucket(capacity: 3, per: second, tokens: 3)])
        #expect(try h.drain() == 3)
        let denied = try h.check()
        #expect(denied.retryAfterMicroseconds == 333_334)
        #expect(RateLimitHeaders.retryAfter(denied) == "1")
        let state = try parseList(RateLimitHeaders.rateLimit(denied, plan: h.plan))
        #expect(state[0].params["t"]! <= Int(RateLimitHeaders.retryAfter(denied)!)!)
        // A cost-3 request waits for three tokens: exactly one second.
        let big = try h.check(cost: 3)
        #expect(big.retryAfterMicroseconds == second)
        #expect(RateLimitHeaders.retryAfter(big) == "1")
    }

    @Test func admittedDecisionHasPolicyAndStateButNoRetryAfter() throws {
        let h = try Harness([bucket(capacity: 5)])
        let fields = RateLimitHeaders.fields(try h.check(), plan: h.plan)
        #expect(fields.map(\.name) == ["RateLimit-Policy", "RateLimit"])
        #expect(fields[1].value == #""burst";r=4;t=1"#)
    }

    @Test func legacyHeadersDescribeTheTightestLimit() throws {
        let h = try Harness([bucket("burst", capacity: 5), Limit(name: "minute", algorithm: .fixedWindow(limit: 3, window: minute))])
        let clockAtMinute = h.clock.now()
        _ = clockAtMinute
        let decision = try h.check()
        let fields = RateLimitHeaders.fields(decision, plan: h.plan, includeLegacy: true)
        let legacy = Dictionary(uniqueKeysWithValues: fields.map { ($0.name, $0.value) })
        #expect(legacy["X-RateLimit-Limit"] == "3")
        #expect(legacy["X-RateLimit-Remaining"] == "2")
        #expect(legacy["X-RateLimit-Reset"] == "60")
    }

    @Test func structuredStringEscapes() {
        #expect(RateLimitHeaders.structuredString(#"a"b\c"#) == #""a\"b\\c""#)
    }
}
