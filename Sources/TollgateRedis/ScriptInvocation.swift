import NIOCore
import Tollgate

/// One plan's `EVALSHA` of the limit script, prepared once: what a check of the plan sends, and how its
/// reply becomes a `Decision`.
///
/// Most of the command never changes for a plan: the script's SHA1, the number of keys, and for every
/// limit but calendar quotas all thirteen of its ARGV fields. Those bytes are encoded as RESP once, here;
/// a check only writes its keys (organization and API key), its cost, the explicit instant (tests) and a
/// calendar quota's periods around now, straight into the outbound buffer.
///
/// KEYS and ARGV are those documented in `LimitScript`, and equal, byte for byte, to formatting
/// `LimitKeys.keys` and the decimal fields with the generic encoder (a test checks this).
final class ScriptInvocation: Sendable {
    let plan: Plan
    /// The SHA1 the head was encoded with.
    let sha: String
    /// `*<argc>\r\n`, `EVALSHA`, the SHA1 and the number of keys.
    private let head: [UInt8]
    private let keys: [KeyShape]
    /// ARGV 3 (`n`) and every limit's fields when the plan has no calendar quota; else ARGV 3 only.
    private let fixedTail: [UInt8]
    /// With calendar quotas: per limit, its fields without (calendar) or with (others) the four periods.
    private let limitFields: [[UInt8]]
    private let hasCalendar: Bool
    /// Bytes of the head, the fixed tail, the limit fields and the constant part of every key.
    private let fixedByteCount: Int

    /// One key of the plan: `tg:{<tag>` + `middle` + (the API key's subject, for per-key limits) + (`:sum`).
    private struct KeyShape: Sendable {
        /// `}:<limit id>:` or `}:<limit id>:o`.
        let middle: [UInt8]
        let perKey: Bool
        let sum: Bool

        var constantCount: Int { 4 + middle.count + (sum ? 4 : 0) }
    }

    /// - Parameter packed: whether state is written packed (`PackedLayout`) where it fits, or as text.
    init(plan: Plan, limitIDs: [String], sha: String, packed: Bool = true) {
        self.plan = plan
        self.sha = sha
        let specs = plan.compiled.specs
        var keys: [KeyShape] = []
        var first: [Int] = []
        for (index, limit) in plan.limits.enumerated() {
            let middle = Array("}:\(limitIDs[index]):\(limit.scope == .apiKey ? "" : "o")".utf8)
            first.append(keys.count + 1)
            keys.append(KeyShape(middle: middle, perKey: limit.scope == .apiKey, sum: false))
            if case .slidingLog = limit.algorithm {
                keys.append(KeyShape(middle: middle, perKey: limit.scope == .apiKey, sum: true))
            }
        }
        self.keys = keys

        let argc = 3 + keys.count + 3 + specs.count * LimitScript.fieldsPerLimit
        head = Self.encoded(["EVALSHA", sha, String(keys.count)], arrayOf: argc)
        var fields: [[UInt8]] = []
        var hasCalendar = false
        for (index, spec) in specs.enumerated() {
            var values = LimitScript.fields(of: spec, firstKey: first[index], writingPacked: packed)
            if plan.compiled.calendars[index] == nil {
                values += ["0", "0", "0", "0"]
            } else {
                hasCalendar = true
            }
            fields.append(Self.encoded(values))
        }
        var tail = Self.encoded([String(specs.count)])
        if !hasCalendar {
            for bytes in fields { tail += bytes }
            fields = []
        }
        fixedTail = tail
        limitFields = fields
        self.hasCalendar = hasCalendar
        fixedByteCount = head.count + tail.count + fields.reduce(0) { $0 + $1.count } + keys.reduce(0) { $0 + $1.constantCount }
    }

    /// `arguments` as RESP bulk strings, after an array header when `arrayOf` is given.
    private static func encoded(_ arguments: [String], arrayOf count: Int? = nil) -> [UInt8] {
        var buffer = ByteBuffer()
        if let count {
            buffer.writeString("*\(count)\r\n")
        }
        for argument in arguments {
            buffer.writeString("$\(argument.utf8.count)\r\n\(argument)\r\n")
        }
        return Array(buffer.readableBytesView)
    }

    /// Writes the whole `EVALSHA` of one check.
    ///
    /// - Parameters:
    ///   - hashTag: `LimitKeys.hashTag(for: partition)`.
    ///   - now: an explicit instant in microseconds (tests only), or nil for Redis' `TIME`.
    ///   - callerClock: the instant whose calendar periods are sent: the caller's clock, or the explicit instant.
    ///   - anchors: per limit, an instant the script asked for instead (`TOLLGATE_CLOCK`); nil: none.
    func encode(
        partition: Partition, hashTag: String, cost: Int, now: Int64?, callerClock: Int64, anchors: [Int64?]? = nil,
        into buffer: inout ByteBuffer
    ) {
        let tagBytes = hashTag.utf8.count
        let subject = LimitKeys.subject(for: partition)
        let subjectBytes = subject.utf8.count
        // Every byte is counted first, so that the command is written with one capacity check.
        var count = fixedByteCount + RESPWriter.bulkIntegerCount(Int64(cost))
        count += now.map { RESPWriter.bulkIntegerCount($0) } ?? RESPWriter.bulkCount(0)
        for key in keys {
            count += RESPWriter.bulkCount(key.constantCount + tagBytes + (key.perKey ? subjectBytes : 0)) - key.constantCount
        }
        var periods: [(p0: Int64, c0: Int64, c1: Int64, n1: Int64)?] = []
        if hasCalendar {
            periods = plan.compiled.calendars.indices.map { index in
                plan.compiled.calendars[index]?.neighbourhood(of: anchors?[index] ?? callerClock)
            }
            for case let around? in periods {
                count += RESPWriter.bulkIntegerCount(around.p0) + RESPWriter.bulkIntegerCount(around.c0)
                count += RESPWriter.bulkIntegerCount(around.c1) + RESPWriter.bulkIntegerCount(around.n1)
            }
        }
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            var writer = RESPWriter(raw)
            writer.bytes(head)
            for key in keys {
                writer.bulkHeader(key.constantCount + tagBytes + (key.perKey ? subjectBytes : 0))
                writer.bytes(Self.keyPrefix)
                writer.utf8(hashTag)
                writer.bytes(key.middle)
                if key.perKey { writer.utf8(subject) }
                if key.sum { writer.bytes(Self.sumSuffix) }
                writer.crlf()
            }
            writer.bulkInteger(Int64(cost))
            if let now {
                writer.bulkInteger(now)
            } else {
                writer.bulkHeader(0)
                writer.crlf()
            }
            writer.bytes(fixedTail)
            if hasCalendar {
                for (index, fields) in limitFields.enumerated() {
                    writer.bytes(fields)
                    if let around = periods[index] {
                        writer.bulkInteger(around.p0)
                        writer.bulkInteger(around.c0)
                        writer.bulkInteger(around.c1)
                        writer.bulkInteger(around.n1)
                    }
                }
            }
            return writer.finish(raw, expected: count)
        }
    }

    private static let keyPrefix = Array("tg:{".utf8)
    private static let sumSuffix = Array(":sum".utf8)

    /// Reads the script's reply; anything of the wrong shape is a `badReply` naming the hash tag.
    func decision(from reply: RedisReply, hashTag: String) throws(LimiterError) -> Decision {
        let specs = plan.compiled.specs
        guard case .array(let elements) = reply, elements.count == 2 + 6 * specs.count else {
            let found = reply.array.map { "\($0.count) integers" } ?? "something else"
            throw LimiterError(
                .badReply, "the limit script for {\(hashTag)} answered \(found), "
                    + "expected \(2 + 6 * specs.count) integers; is another script loaded under the same SHA?")
        }
        let values = ReplyIntegers(elements)
        for index in specs.indices {
            let base = 2 + index * 6
            let admits = values[base], tooLarge = values[base + 1]
            guard (0...1).contains(admits), (0...1).contains(tooLarge), values[base + 2] >= 0, values[base + 3] >= 0,
                values[base + 4] >= -1, values[base + 5] >= 0
            else {
                throw LimiterError(.badReply, "the limit script for {\(hashTag)} answered out-of-range values for limit \(plan.limits[index].name)")
            }
        }
        let decision = Decision(instant: values[0], results: ReplyResults(values: values, specs: specs))
        guard decision.isAllowed == (values[1] == 1) else {
            throw LimiterError(.badReply, "the limit script for {\(hashTag)} answered a verdict that contradicts its limits")
        }
        return decision
    }
}

/// The integers of the script's reply (`Int64.min` for anything that is not one).
private struct ReplyIntegers {
    let elements: [RedisReply]

    init(_ elements: [RedisReply]) {
        self.elements = elements
    }

    subscript(index: Int) -> Int64 {
        if case .integer(let value) = elements[index] { return value }
        return elements[index].int64 ?? .min
    }
}

/// The per-limit results of a validated reply, one at a time: a concrete sequence, so that handing it to
/// `Decision`'s generic initializer allocates nothing and looks up no generic metadata per element.
private struct ReplyResults: Sequence, IteratorProtocol {
    let values: ReplyIntegers
    let specs: ContiguousArray<LimitSpec>
    var index = 0

    init(values: ReplyIntegers, specs: ContiguousArray<LimitSpec>) {
        self.values = values
        self.specs = specs
    }

    mutating func next() -> LimitResult? {
        guard index < specs.count else { return nil }
        defer { index += 1 }
        let base = 2 + index * 6
        let retry = values[base + 4]
        return LimitResult(
            index: index, admits: values[base] == 1, exceedsCapacity: values[base + 1] == 1, shadow: specs[index].shadow,
            quota: specs[index].capacity, windowMicroseconds: values[base + 5], remaining: values[base + 2],
            resetAfterMicroseconds: values[base + 3], retryAfterMicroseconds: retry < 0 ? nil : retry)
    }
}
