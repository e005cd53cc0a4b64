/// Token bucket in exact integer units: a token is `unitsPerToken` units and every microsecond refills
/// `unitsPerMicrosecond` units, so no rounding accumulates however many calls are made.
enum TokenBucket {
    @_transparent
    static func evaluate(_ spec: LimitSpec, _ state: LimitState, now: Int64, cost: Int64) -> Evaluation {
        let tooLarge = cost > spec.capacity
        let rate = spec.unitsPerMicrosecond
        let deficit = refilledDeficit(state.a, since: state.b, now: now, rate: rate)
        let need = tooLarge ? 0 : cost &* spec.unitsPerToken
        let admits = !tooLarge && deficit &+ need <= spec.fullLevel
        let after = admits ? deficit &+ need : deficit
        let level = spec.fullLevel &- after
        let (tokens, partial) = divide(level, by: spec.unitsPerToken)
        var evaluation = Evaluation(
            admits: admits, exceedsCapacity: tooLarge, remaining: tokens,
            resetAfter: 0, retryAfter: 0, window: spec.window,
            expiresAt: now &+ ceilDiv(after, rate), next: LimitState(a: after, b: now, c: 0))
        if after > 0 {
            // The next whole token: units up to the next multiple of a token.
            evaluation.resetAfter = ceilDiv(spec.unitsPerToken &- partial, rate)
        }
        if tooLarge {
            evaluation.retryAfter = -1
        } else if !admits {
            evaluation.retryAfter = ceilDiv(deficit &+ need &- spec.fullLevel, rate)
        }
        return evaluation
    }

    /// The deficit after refilling from `last` to `now`; multiplies only when the product cannot overflow.
    @inline(__always)
    static func refilledDeficit(_ deficit: Int64, since last: Int64, now: Int64, rate: Int64) -> Int64 {
        if deficit == 0 { return 0 }
        let elapsed = now &- last
        if elapsed <= 0 { return deficit }
        let (refill, overflow) = elapsed.multipliedReportingOverflow(by: rate)
        return overflow || refill >= deficit ? 0 : deficit &- refill
    }

    /// Quotient and remainder; a reduced rate usually has one of its two terms at 1, which needs no division.
    @inline(__always)
    static func divide(_ numerator: Int64, by denominator: Int64) -> (Int64, Int64) {
        denominator == 1 ? (numerator, 0) : numerator.quotientAndRemainder(dividingBy: denominator)
    }
}

@inline(__always)
func ceilDiv(_ numerator: Int64, _ denominator: Int64) -> Int64 {
    if numerator <= 0 { return 0 }
    // Divides only when the quotient is neither the numerator nor 1.
    if denominator == 1 { return numerator }
    return numerator <= denominator ? 1 : (numerator &- 1) / denominator &+ 1
}
