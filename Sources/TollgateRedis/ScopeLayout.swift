import NIOCore
import Tollgate

/// How the limits of one scope of a plan (its per-key limits, or its per-organization limits) keep
/// their state in one Redis key: a fixed binary value, a tag byte then each limit's fields as
/// little-endian integers (`struct.pack` in the script).
///
/// | algorithm | fields |
/// | --- | --- |
/// | token bucket | deficit in rate units, last update (µs) |
/// | sliding window counter | window index (start ÷ window), previous count, current count |
/// | fixed window | window index, count |
/// | calendar quota | period start (seconds), count |
/// | sliding log | the cost in its list (the entries themselves are a list key of their own) |
///
/// Instants take 8 bytes; a count takes 4 when every value it can hold is below 2^31, else 8. The last
/// 4 bytes are the second at which the key's TTL ends (`PXAT`), so that most writes keep the TTL set
/// (`KEEPTTL`, about half the cost of a `SET … PX` in Redis) and renew it only when it would end too
/// soon. The value of the three-limit plan's per-key scope (a bucket and a sliding counter) is 41
/// bytes, short enough for Redis to keep it in one allocation with its object (`embstr`).
struct ScopeLayout: Sendable, Equatable {
    /// One stored integer.
    struct Field: Sendable, Equatable {
        enum Role: Sendable, Equatable {
            case deficit, lastUpdate, windowIndex, previous, current, count, periodStart, logTotal
        }
        /// The limit's index in the plan.
        let limit: Int
        let role: Role
        /// 4 or 8 bytes.
        let width: Int
        /// The most the field may hold (a value read outside 0…most is not Tollgate state).
        let most: Int64

        /// The Lua variable that holds the field (`d1`: limit 1's deficit).
        var variable: String {
            let prefix =
                switch role {
                case .deficit: "d"
                case .lastUpdate: "l"
                case .windowIndex: "x"
                case .previous: "p"
                case .current: "c"
                case .count: "n"
                case .periodStart: "s"
                case .logTotal: "u"
                }
            return prefix + String(limit + 1)
        }
    }

    /// The first byte of every value: never a digit, so no value of the earlier decimal layout matches.
    static let tag: UInt8 = 0xFE

    let scope: LimitScope
    /// The plan's limits of this scope, in plan order.
    let members: [Int]
    let fields: [Field]

    /// Bytes of a value, the tag and the TTL's end included.
    var byteCount: Int { 1 + fields.reduce(0) { $0 + $1.width } + 4 }

    /// The `struct` format of the fields after the tag byte, the TTL's end (unsigned seconds) last.
    var fieldFormat: String { fields.map { $0.width == 4 ? "i4" : "i8" }.joined() + "I4" }

    init(plan: Plan, scope: LimitScope) {
        self.scope = scope
        let specs = plan.compiled.specs
        members = plan.limits.indices.filter { plan.limits[$0].scope == scope }
        var fields: [Field] = []
        // Instants stay below 2^53 µs, where the script's doubles are exact; a window index or a period
        // start in seconds is bounded accordingly, so that turning it back into microseconds cannot overflow.
        let instant: Int64 = 1 << 53
        for index in members {
            let spec = specs[index]
            func count(_ role: Field.Role, most: Int64) -> Field {
                Field(limit: index, role: role, width: most < Int64(Int32.max) ? 4 : 8, most: most)
            }
            func time(_ role: Field.Role, unit: Int64 = 1) -> Field {
                Field(limit: index, role: role, width: 8, most: instant / unit)
            }
            switch spec.kind {
            case .tokenBucket:
                fields += [count(.deficit, most: spec.fullLevel), time(.lastUpdate)]
            case .slidingCounter:
                fields += [time(.windowIndex, unit: spec.window), count(.previous, most: spec.capacity), count(.current, most: spec.capacity)]
            case .fixedWindow:
                fields += [time(.windowIndex, unit: spec.window), count(.count, most: spec.capacity)]
            case .calendar:
                fields += [time(.periodStart, unit: 1_000_000), count(.count, most: spec.capacity)]
            case .slidingLog:
                fields.append(count(.logTotal, most: spec.capacity))
            }
        }
        self.fields = fields
    }

    /// The scopes of `plan` that have limits: the per-key one first, as the plan's keys are ordered.
    static func scopes(of plan: Plan) -> [ScopeLayout] {
        [LimitScope.apiKey, .organization].map { ScopeLayout(plan: plan, scope: $0) }.filter { !$0.members.isEmpty }
    }

    /// Writes a value with these fields and the second its TTL ends (tests, and state a caller plants).
    func encode(_ values: [Int64], expiry: UInt32 = 0) -> [UInt8] {
        precondition(values.count == fields.count, "one value per field")
        var bytes: [UInt8] = [Self.tag]
        for (width, value) in zip(fields.map(\.width) + [4], values + [Int64(expiry)]) {
            for shift in stride(from: 0, to: width * 8, by: 8) {
                bytes.append(UInt8(truncatingIfNeeded: value >> Int64(shift)))
            }
        }
        return bytes
    }

    /// Reads a value into `states` (a sliding log's total into its summary), checking its shape and
    /// every field's range. Returns false for anything that is not a value of this layout.
    func decode(_ value: ByteBuffer, plan: Plan, into states: inout ExternalStates) -> Bool {
        guard value.readableBytes == byteCount, value.getInteger(at: value.readerIndex, as: UInt8.self) == Self.tag else {
            return false
        }
        var offset = value.readerIndex + 1
        var numbers = InlineArray<24, Int64>(repeating: 0)
        for (position, field) in fields.enumerated() {
            let number: Int64 =
                field.width == 4
                ? Int64(value.getInteger(at: offset, endianness: .little, as: Int32.self)!)
                : value.getInteger(at: offset, endianness: .little, as: Int64.self)!
            guard number >= 0, number <= field.most else { return false }
            numbers[position] = number
            offset += field.width
        }
        let specs = plan.compiled.specs
        var position = 0
        for index in members {
            let spec = specs[index]
            let first = numbers[position]
            switch spec.kind {
            case .tokenBucket:
                states.set(index, a: first, b: numbers[position + 1], c: 0)
                position += 2
            case .slidingCounter:
                states.set(index, a: first * spec.window, b: numbers[position + 1], c: numbers[position + 2])
                position += 3
            case .fixedWindow:
                states.set(index, a: first * spec.window, b: numbers[position + 1], c: first * spec.window + spec.window)
                position += 2
            case .calendar:
                let start = first * 1_000_000
                states.set(index, a: start, b: numbers[position + 1], c: plan.periodEnd(limit: index, start: start))
                position += 2
            case .slidingLog:
                states.logs[index].total = first
                position += 1
            }
        }
        return true
    }
}
