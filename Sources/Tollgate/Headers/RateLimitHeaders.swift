/// Renders a `Decision` as HTTP response headers: `RateLimit-Policy` and `RateLimit`
/// (draft-ietf-httpapi-ratelimit-headers-10, structured fields per RFC 9651), `Retry-After`, and
/// optionally the legacy `X-RateLimit-*` trio.
///
/// Shadow limits are left out: they are for operators (metrics and logs), and advertising a limit that
/// never denies would mislead clients.
public enum RateLimitHeaders {
    /// `"burst";q=20;w=1, "month";q=100000;w=2592000` — each enforced limit's quota and window.
    public static func policy(_ decision: Decision, plan: Plan) -> String {
        var out = ""
        out.reserveCapacity(48 * decision.results.count)
        for result in decision.results where !result.shadow {
            if !out.isEmpty { out.append(", ") }
            appendStructuredString(plan.limits[result.index].name, to: &out)
            out.append(";q=")
            out.append(String(result.quota))
            out.append(";w=")
            out.append(String(wholeSeconds(result.windowMicroseconds, minimum: 1)))
        }
        return out
    }

    /// `"burst";r=0;t=1, "month";r=98211;t=1209600` — remaining quota and seconds until more is available.
    public static func rateLimit(_ decision: Decision, plan: Plan) -> String {
        var out = ""
        out.reserveCapacity(48 * decision.results.count)
        for result in decision.results where !result.shadow {
            if !out.isEmpty { out.append(", ") }
            appendStructuredString(plan.limits[result.index].name, to: &out)
            out.append(";r=")
            out.append(String(max(0, result.remaining)))
            out.append(";t=")
            out.append(String(wholeSeconds(result.resetAfterMicroseconds, minimum: 0)))
        }
        return out
    }

    /// The delay before the same request would pass, in whole seconds rounded up (at least 1); nil when
    /// the request was admitted or can never pass.
    public static func retryAfter(_ decision: Decision) -> String? {
        guard let micros = decision.retryAfterMicroseconds, !decision.isAllowed else { return nil }
        return String(wholeSeconds(micros, minimum: 1))
    }

    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (delta seconds) for the enforced limit with the
    /// least quota left (ties: the one that takes longest to recover). Nil when no limit is enforced.
    public static func legacy(_ decision: Decision) -> (limit: String, remaining: String, reset: String)? {
        var tightest: LimitResult?
        for result in decision.results where !result.shadow {
            guard let current = tightest else {
                tightest = result
                continue
            }
            if result.remaining < current.remaining
                || (result.remaining == current.remaining && result.resetAfterMicroseconds > current.resetAfterMicroseconds)
            {
                tightest = result
            }
        }
        guard let tightest else { return nil }
        return (
            String(tightest.quota), String(max(0, tightest.remaining)),
            String(wholeSeconds(tightest.resetAfterMicroseconds, minimum: 0))
        )
    }

    /// Every header for `decision`, as name-value pairs in a stable order.
    public static func fields(_ decision: Decision, plan: Plan, includeLegacy: Bool = false) -> [(name: String, value: String)] {
        var fields: [(name: String, value: String)] = []
        let policy = policy(decision, plan: plan)
        if !policy.isEmpty {
            fields.append(("RateLimit-Policy", policy))
            fields.append(("RateLimit", rateLimit(decision, plan: plan)))
        }
        if let retry = retryAfter(decision) { fields.append(("Retry-After", retry)) }
        if includeLegacy, let legacy = legacy(decision) {
            fields.append(("X-RateLimit-Limit", legacy.limit))
            fields.append(("X-RateLimit-Remaining", legacy.remaining))
            fields.append(("X-RateLimit-Reset", legacy.reset))
        }
        return fields
    }

    /// Microseconds as whole seconds, rounded up.
    public static func wholeSeconds(_ microseconds: Int64, minimum: Int64) -> Int64 {
        max(minimum, ceilDiv(microseconds, microsPerSecond))
    }

    /// An sf-string: quoted, with `\` and `"` escaped. Policy names are validated to a safe alphabet,
    /// so nothing else needs escaping.
    static func structuredString(_ value: String) -> String {
        var out = ""
        appendStructuredString(value, to: &out)
        return out
    }

    static func appendStructuredString(_ value: String, to out: inout String) {
        out.append("\"")
        if value.utf8.contains(where: { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            for character in value {
                if character == "\"" || character == "\\" { out.append("\\") }
                out.append(character)
            }
        } else {
            out.append(value)
        }
        out.append("\"")
    }
}
