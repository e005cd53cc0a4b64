import NIOCore
import Tollgate

/// One plan's `EVALSHA` of its generated script (`PlanScript`), prepared once: what a check sends, and
/// how the compact reply becomes decisions.
///
/// The command's constant bytes (the SHA1, the number of keys, each key's constant parts) are encoded
/// once, here; a check writes its keys (organization and API key), the explicit instant (tests), a
/// calendar quota's periods around now and its cost straight into the outbound buffer.
final class PlanCall: Sendable {
    let plan: Plan
    let script: PlanScript
    /// The SHA1 of `script.source`, as `SCRIPT LOAD` answered it.
    let sha: String
    /// `$7\r\nEVALSHA\r\n`, the SHA1 and the number of keys, after the array header.
    private let head: [UInt8]
    private let keys: [KeyShape]
    private let constantKeyBytes: Int

    /// One key of the plan: `tg:{<tag>` + `middle` + (the API key's subject, per-key scope) + `suffix`.
    private struct KeyShape: Sendable {
        /// `}:<scope id>:` or `}:<scope id>:o`.
        let middle: [UInt8]
        let perKey: Bool
        /// `:l<n>` for a sliding log's list, else empty.
        let suffix: [UInt8]

        var constantCount: Int { 4 + middle.count + suffix.count }
    }

    init(plan: Plan, script: PlanScript, sha: String) {
        self.plan = plan
        self.script = script
        self.sha = sha
        var keys: [KeyShape] = []
        for scope in script.scopes {
            let middle = Array("}:\(LimitKeys.scopeID(plan: plan, scope: scope.scope)):\(scope.scope == .apiKey ? "" : "o")".utf8)
            keys.append(KeyShape(middle: middle, perKey: scope.scope == .apiKey, suffix: []))
        }
        for index in script.logs {
            let owner = keys[plan.limits[index].scope == .apiKey ? 0 : keys.count - 1]
            keys.append(KeyShape(middle: owner.middle, perKey: owner.perKey, suffix: Array(":l\(LimitKeys.logNumber(plan: plan, index: index))".utf8)))
        }
        self.keys = keys
        var head = ByteBuffer()
        for argument in ["EVALSHA", sha, String(keys.count)] {
            head.writeString("$\(argument.utf8.count)\r\n\(argument)\r\n")
        }
        self.head = Array(head.readableBytesView)
        constantKeyBytes = keys.reduce(0) { $0 + $1.constantCount }
    }

    /// Writes the whole `EVALSHA` of checks of `costs`, in order.
    ///
    /// - Parameters:
    ///   - hashTag: `LimitKeys.hashTag(for: partition)`.
    ///   - now: the explicit instant in microseconds, for a script generated with `explicitInstant`
    ///     (tests); nil for Redis' `TIME`.
    ///   - callerClock: the instant whose calendar periods are sent: the caller's clock, or the explicit instant.
    ///   - anchors: per limit, an instant the script asked for instead (`TOLLGATE_CLOCK`); nil: none.
    func encode(
        partition: Partition, hashTag: String, costs: some Collection<Int>, now: Int64?, callerClock: Int64,
        anchors: [Int64?]? = nil, into buffer: inout ByteBuffer
    ) {
        let tagBytes = hashTag.utf8.count
        let subject = LimitKeys.subject(for: partition)
        let subjectBytes = subject.utf8.count
        precondition((now != nil) == script.explicitInstant, "an explicit instant needs the script that takes one")
        let argc = 3 + keys.count + (now == nil ? 0 : 1) + script.periodArguments + costs.count
        // Every byte is counted first, so that the command is written with one capacity check.
        var count = RESPWriter.arrayHeaderCount(argc) + head.count
        for key in keys {
            count += RESPWriter.bulkCount(key.constantCount + tagBytes + (key.perKey ? subjectBytes : 0))
        }
        count += now.map { RESPWriter.bulkIntegerCount($0) } ?? 0
        // The period that holds the caller's clock (or the instant the script asked for), in seconds.
        var periods = InlineArray<8, (start: Int64, end: Int64)>(repeating: (0, 0))
        for (position, index) in script.calendars.enumerated() where !script.keptPeriods {
            let around = plan.compiled.calendars[index]!.neighbourhood(of: anchors?[index] ?? callerClock)
            periods[position] = (around.c0 / 1_000_000, around.c1 / 1_000_000)
            count += RESPWriter.bulkIntegerCount(periods[position].start) + RESPWriter.bulkIntegerCount(periods[position].end)
        }
        for cost in costs { count += RESPWriter.bulkIntegerCount(Int64(cost)) }
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            var writer = RESPWriter(raw)
            writer.arrayHeader(argc)
            writer.bytes(head)
            for key in keys {
                writer.bulkHeader(key.constantCount + tagBytes + (key.perKey ? subjectBytes : 0))
                writer.bytes(Self.keyPrefix)
                writer.utf8(hashTag)
                writer.bytes(key.middle)
                if key.perKey { writer.utf8(subject) }
                writer.bytes(key.suffix)
                writer.crlf()
            }
            if let now { writer.bulkInteger(now) }
            for position in script.calendars.indices where !script.keptPeriods {
                writer.bulkInteger(periods[position].start)
                writer.bulkInteger(periods[position].end)
            }
            for cost in costs { writer.bulkInteger(Int64(cost)) }
            return writer.finish(raw, expected: count)
        }
    }

    private static let keyPrefix = Array("tg:{".utf8)

    /// Whether `reply` is a script with kept periods saying it needs them (`PlanScript`): nothing was
    /// written, and the same checks go to the script that takes the periods.
    func needsPeriods(_ reply: RedisReply) -> Bool {
        guard script.keptPeriods, case .integer(0) = reply else { return false }
        return true
    }

    /// The decision of a call of one check.
    func decision(from reply: RedisReply, cost: Int, hashTag: String) throws(LimiterError) -> Decision {
        var decision = Decision.unchecked(instant: 0, origin: .store)
        try decide(reply, costs: CollectionOfOne(cost), hashTag: hashTag) { _, next in decision = next }
        return decision
    }

    /// The decisions of a call of several checks, in order.
    func decisions(from reply: RedisReply, costs: [Int], hashTag: String) throws(LimiterError) -> [Decision] {
        var decisions: [Decision] = []
        decisions.reserveCapacity(costs.count)
        try decide(reply, costs: costs, hashTag: hashTag) { _, next in decisions.append(next) }
        return decisions
    }

    /// Reads the script's reply (one binary string, see `PlanScript`) and replays its checks in order
    /// with the in-process arithmetic; anything of the wrong shape, or a verdict that disagrees with the
    /// states the script read, is a `badReply` naming the hash tag.
    private func decide(
        _ reply: RedisReply, costs: some Collection<Int>, hashTag: String, _ body: (Int, Decision) -> Void
    ) throws(LimiterError) {
        let logs = script.logs
        let scopes = script.scopes
        guard case .bulkString(var bytes) = reply, let now = bytes.readInteger(endianness: .little, as: Int64.self),
            let present = bytes.readInteger(as: UInt8.self)
        else {
            throw bad(hashTag, "answered \(reply), not the reply this version's script gives; is another script loaded under the same SHA?")
        }
        var expected = 24 * logs.count + costs.count * (1 + 8 * logs.count)
        for (position, scope) in scopes.enumerated() where present & (1 << position) != 0 { expected += scope.byteCount }
        // An instant past 2^53 µs (year 2255) is not one the script's doubles hold exactly.
        guard now >= 0, now < 1 << 53, present >> scopes.count == 0, bytes.readableBytes == expected else {
            throw bad(hashTag, "answered \(bytes.readableBytes + 9) bytes that do not fit its keys and checks")
        }
        var states = ExternalStates()
        for (position, scope) in scopes.enumerated() where present & (1 << position) != 0 {
            let value = bytes.readSlice(length: scope.byteCount)!
            guard scope.decode(value, plan: plan, into: &states) else {
                throw LimiterError(
                    .badReply,
                    "a Redis key under hash tag {\(hashTag)} for the \(scope.scope == .apiKey ? "per-key" : "organization") "
                        + "limits of plan \(plan.name) holds something that is not Tollgate state of this plan")
            }
        }
        func integer(least: Int64) throws(LimiterError) -> Int64 {
            let value = bytes.readInteger(endianness: .little, as: Int64.self)!
            guard value >= least else { throw bad(hashTag, "answered \(value) where an integer of at least \(least) belongs") }
            return value
        }
        for index in logs {
            let newest = try integer(least: -1)
            let oldest = try integer(least: -1)
            let total = try integer(least: 0)
            guard total <= plan.compiled.specs[index].capacity, (total == 0) == (oldest < 0) else {
                throw bad(hashTag, "answered a sliding log that disagrees with itself for limit \(plan.limits[index].name)")
            }
            states.logs[index] = SlidingLogSummary(
                total: total, oldest: oldest < 0 ? nil : oldest, newest: newest < 0 ? nil : newest, freedAt: nil)
        }
        for (check, cost) in costs.enumerated() {
            let verdict = bytes.readInteger(as: UInt8.self)!
            for index in logs {
                let freed = try integer(least: -1)
                states.logs[index].freedAt = freed < 0 ? nil : freed
            }
            let decision = plan.decide(&states, now: now, cost: Int64(cost))
            guard verdict <= 1, decision.isAllowed == (verdict == 1) else {
                throw bad(hashTag, "answered a verdict that contradicts the state it read")
            }
            for index in logs {
                let result = decision.results[index]
                guard (!result.admits && !result.exceedsCapacity) == (states.logs[index].freedAt != nil) else {
                    throw bad(hashTag, "answered a sliding log's retry that contradicts the state it read")
                }
            }
            body(check, decision)
        }
    }

    private func bad(_ hashTag: String, _ message: String) -> LimiterError {
        LimiterError(.badReply, "the limit script of plan \(plan.name) for {\(hashTag)} \(message)")
    }

    /// The limits whose state key `index` (1-based, as in `TOLLGATE_BADSTATE`) holds, for messages.
    func describeKey(_ index: Int) -> String {
        if index >= 1 && index <= script.scopes.count {
            let scope = script.scopes[index - 1]
            return "the \(scope.scope == .apiKey ? "per-key" : "organization") limits "
                + scope.members.map { plan.limits[$0].name }.joined(separator: ", ")
        }
        let log = index - script.scopes.count - 1
        guard script.logs.indices.contains(log) else { return "(unknown)" }
        return "the sliding log of limit \(plan.limits[script.logs[log]].name)"
    }
}
