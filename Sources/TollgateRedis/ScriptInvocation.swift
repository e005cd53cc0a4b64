import Tollgate

/// Turns one check into the script's KEYS and ARGV, and its reply back into a `Decision`.
struct ScriptInvocation {
    let plan: Plan
    let keys: [String]
    let arguments: [String]

    /// - Parameters:
    ///   - now: an explicit instant in microseconds (tests only), or nil for Redis' `TIME`.
    ///   - callerClock: the caller's idea of now, used to send the calendar periods around it.
    init(plan: Plan, partition: Partition, cost: Int, limitIDs: [String], now: Int64?, callerClock: Int64) {
        self.plan = plan
        let (keys, first) = LimitKeys.keys(plan: plan, partition: partition, limitIDs: limitIDs)
        self.keys = keys
        let specs = plan.compiled.specs
        var arguments: [String] = [String(cost), now.map { String($0) } ?? "", String(specs.count)]
        arguments.reserveCapacity(3 + specs.count * LimitScript.fieldsPerLimit)
        for (index, spec) in specs.enumerated() {
            let kind: Int =
                switch spec.kind {
                case .tokenBucket: 1
                case .slidingLog: 2
                case .slidingCounter: 3
                case .fixedWindow: 4
                case .calendar: 5
                }
            var around: (p0: Int64, c0: Int64, c1: Int64, n1: Int64) = (0, 0, 0, 0)
            if let calendar = plan.compiled.calendars[index] {
                around = calendar.neighbourhood(of: now ?? callerClock)
            }
            arguments += [
                String(kind), spec.shadow ? "1" : "0", String(spec.capacity), String(spec.window),
                String(spec.unitsPerToken), String(spec.unitsPerMicrosecond), String(spec.fullLevel),
                String(first[index]), String(around.p0), String(around.c0), String(around.c1), String(around.n1),
            ]
        }
        self.arguments = arguments
    }

    /// Reads the script's reply; anything of the wrong shape is a `badReply` naming the hash tag.
    func decision(from values: [Int64]?, hashTag: String) throws(LimiterError) -> Decision {
        let specs = plan.compiled.specs
        guard let values, values.count == 2 + 6 * specs.count else {
            throw LimiterError(
                .badReply, "the limit script for {\(hashTag)} answered \(values.map { "\($0.count) integers" } ?? "something else"), "
                    + "expected \(2 + 6 * specs.count) integers; is another script loaded under the same SHA?")
        }
        var results: [LimitResult] = []
        results.reserveCapacity(specs.count)
        for (index, spec) in specs.enumerated() {
            let base = 2 + index * 6
            let admits = values[base], tooLarge = values[base + 1]
            guard (0...1).contains(admits), (0...1).contains(tooLarge), values[base + 2] >= 0, values[base + 3] >= 0,
                values[base + 4] >= -1, values[base + 5] >= 0
            else {
                throw LimiterError(.badReply, "the limit script for {\(hashTag)} answered out-of-range values for limit \(plan.limits[index].name)")
            }
            results.append(
                LimitResult(
                    index: index, admits: admits == 1, exceedsCapacity: tooLarge == 1, shadow: spec.shadow,
                    quota: spec.capacity, windowMicroseconds: values[base + 5], remaining: values[base + 2],
                    resetAfterMicroseconds: values[base + 3], retryAfterMicroseconds: values[base + 4] < 0 ? nil : values[base + 4]))
        }
        let decision = Decision(instant: values[0], results: results)
        guard decision.isAllowed == (values[1] == 1) else {
            throw LimiterError(.badReply, "the limit script for {\(hashTag)} answered a verdict that contradicts its limits")
        }
        return decision
    }
}
