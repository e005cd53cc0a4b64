import NIOCore
import Tollgate
import TollgateHTTP

/// An outcome's RateLimit fields written straight into a head's bytes: the fields of
/// `RateLimitOutcome.headers` (`RateLimitHeaders.fields`), in the same order, with no `String` or
/// `HTTPFields` made for them. The data path's judgements never set `headers` by hand, so the
/// decision says it all.
enum RateLimitFieldWriter {
    /// What the fields are made of: an outcome's decision and plan, and whether the legacy fields go too.
    struct Fields {
        var decision: Decision
        var plan: Plan
        var includesLegacy: Bool

        /// No field to write: no enforced limit and no `Retry-After`.
        var isEmpty: Bool { enforcedCount(decision.results) == 0 && RateLimitHeaders.retryAfter(decision) == nil }
    }

    /// Whether the outcome has fields to write (the upstream's own RateLimit fields then give way).
    static func hasFields(_ outcome: RateLimitOutcome) -> Bool {
        fields(of: outcome).map { !$0.isEmpty } ?? false
    }

    /// The outcome's fields, when it has a decision.
    static func fields(of outcome: RateLimitOutcome) -> Fields? {
        guard let decision = outcome.decision, let plan = outcome.plan else { return nil }
        return Fields(decision: decision, plan: plan, includesLegacy: outcome.includesLegacyHeaders)
    }

    /// How many of the results are of enforced limits (not shadow ones). By index: the view is not
    /// specialised across modules, and each `decision.results` copies the decision.
    private static func enforcedCount(_ results: Decision.Results) -> Int {
        var count = 0
        for index in 0..<results.endIndex where !results[index].shadow { count += 1 }
        return count
    }

    /// Writes the outcome's fields, each line with its CRLF.
    static func write(_ outcome: RateLimitOutcome, into out: inout ByteBuffer) {
        if let fields = fields(of: outcome) { write(fields, into: &out) }
    }

    /// Writes the fields, each line with its CRLF.
    static func write(_ fields: Fields, into out: inout ByteBuffer) {
        let (decision, plan) = (fields.decision, fields.plan)
        let results = decision.results
        if enforcedCount(results) > 0 {
            writeList("RateLimit-Policy: ", results, plan, ";q=", ";w=", into: &out) { result in
                (result.quota, RateLimitHeaders.wholeSeconds(result.windowMicroseconds, minimum: 1))
            }
            writeList("RateLimit: ", results, plan, ";r=", ";t=", into: &out) { result in
                (max(0, result.remaining), RateLimitHeaders.wholeSeconds(result.resetAfterMicroseconds, minimum: 0))
            }
        }
        if let retry = RateLimitHeaders.retryAfter(decision) { out.writeFieldLine("Retry-After", retry) }
        if fields.includesLegacy, let legacy = RateLimitHeaders.legacy(decision) {
            out.writeFieldLine("X-RateLimit-Limit", legacy.limit)
            out.writeFieldLine("X-RateLimit-Remaining", legacy.remaining)
            out.writeFieldLine("X-RateLimit-Reset", legacy.reset)
        }
    }

    /// One field of the enforced limits, `"name";<a>=<x>;<b>=<y>, …`, with its CRLF: `values` gives x and y.
    @inline(__always)
    private static func writeList(
        _ field: StaticString, _ results: Decision.Results, _ plan: Plan, _ a: StaticString, _ b: StaticString,
        into out: inout ByteBuffer, values: (LimitResult) -> (Int64, Int64)
    ) {
        out.writeStaticString(field)
        var first = true
        for index in 0..<results.endIndex {
            let result = results[index]
            if result.shadow { continue }
            if !first { out.writeStaticString(", ") }
            first = false
            writeStructuredString(plan.limits[result.index].name, into: &out)
            let (x, y) = values(result)
            out.writeStaticString(a)
            writeInteger(x, into: &out)
            out.writeStaticString(b)
            writeInteger(y, into: &out)
        }
        out.writeStaticString("\r\n")
    }

    /// An sf-string (RFC 9651 §3.3.3): quoted, `\` and `"` escaped.
    private static func writeStructuredString(_ value: String, into out: inout ByteBuffer) {
        out.writeStaticString("\"")
        if value.utf8.contains(where: { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            for byte in value.utf8 {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { out.writeInteger(UInt8(ascii: "\\")) }
                out.writeInteger(byte)
            }
        } else {
            // Policy names are validated to letters, digits, `-`, `_` and `.`: the usual case.
            out.writeString(value)
        }
        out.writeStaticString("\"")
    }

    /// A decimal integer, without making a `String` of it: its digits are formed on the stack and
    /// written at once.
    static func writeInteger(_ value: Int64, into out: inout ByteBuffer) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var rest = value.magnitude
            var start = digits.count
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            } while rest > 0
            if value < 0 {
                start -= 1
                digits[start] = UInt8(ascii: "-")
            }
            out.writeBytes(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: digits[start...])))
        }
    }
}
