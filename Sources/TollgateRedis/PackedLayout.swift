import Tollgate

/// How the limit script stores one limit's state as a single decimal integer, so that Redis keeps it
/// `int`-encoded (16 bytes for the value instead of a 32–64-byte string; the goal of under 100 bytes per
/// counter key depends on it).
///
/// The value is `1`, then the counts at `width` digits each (one for a token bucket's deficit, a fixed
/// window's or calendar quota's count; two for a sliding counter's previous and current counts), then
/// the state's instant modulo 10^`residue`:
///
/// | algorithm | counts | instant |
/// | --- | --- | --- |
/// | token bucket | deficit (units) | last update, microseconds |
/// | fixed window | count | window index (start ÷ window) |
/// | sliding window counter | previous, current | window index |
/// | calendar quota | count | period start, seconds |
///
/// At most 18 digits follow the leading `1`, so the value is below 2^63; no field has more than 15 digits,
/// so the script reads each exactly as a Lua double. The script recovers the instant as the one nearest
/// to now with that residue. That is exact while the stored instant lies less than half the modulus
/// from now, either way: the layout is only used when the modulus is at least four times the key's
/// longest life (its TTL: the refill time, or two windows, plus a second; Redis deletes a key when its
/// TTL ends) and at least twice `backwardTolerance`, how far the clock may step back behind a stored
/// instant. A calendar quota's period start is recovered the same way (10^8 seconds at least) and
/// matched against the periods the caller sends. A state whose numbers do not fit (a long refill, a huge
/// count) stays in the `a:b:c` text form, which tolerates any step back; the script reads both forms.
struct PackedLayout: Equatable, Sendable {
    /// Digits of each count.
    let width: Int
    /// Digits of the instant's residue; 0 means the text form.
    let residue: Int

    static let text = PackedLayout(width: 0, residue: 0)

    /// How far back the clock may step behind a packed instant without the state being misread: an hour
    /// (NTP corrects by milliseconds; an hour is a wrongly set zone or a bad manual change).
    static let backwardTolerance: Int64 = 3_600 * 1_000_000

    /// The `string.format` pattern that writes the value from its counts and residue; empty for text.
    var pattern: String {
        guard residue > 0 else { return "" }
        let count = "%0\(width).0f"
        return "1" + count + (counts == 2 ? count : "") + "%0\(residue).0f"
    }

    /// The script's ARGV field for this layout: the pattern, or (`writing` false: state is read packed
    /// but written as text) the pattern after an `r`; empty for text.
    func argument(writing: Bool) -> String {
        writing || pattern.isEmpty ? pattern : "r" + pattern
    }

    /// Sliding counters keep two counts, the others one.
    private let counts: Int

    /// The layout of a limit's state, or `.text` when its numbers do not fit.
    init(for spec: LimitSpec) {
        let counts: Int
        let largest: Int64
        // The smallest modulus that keeps the state unambiguous, in the residue's unit.
        let needed: Int64
        let second: Int64 = 1_000_000
        switch spec.kind {
        case .tokenBucket:
            (counts, largest) = (1, spec.fullLevel)
            needed = max(4 * (spec.window + 2 * second), 2 * (Self.backwardTolerance + second))
        case .fixedWindow:
            (counts, largest) = (1, spec.capacity)
            needed = max(4 * (2 + (2 * second + spec.window - 1) / spec.window), Self.backwardWindows(spec.window))
        case .slidingCounter:
            (counts, largest) = (2, spec.capacity)
            needed = max(4 * (3 + (2 * second + spec.window - 1) / spec.window), Self.backwardWindows(spec.window))
        case .calendar:
            // Periods around now span months; 10^8 seconds is three years.
            (counts, largest) = (1, spec.capacity)
            needed = 100_000_000
        case .slidingLog:
            self = .text
            return
        }
        let width = String(largest).count
        let residue = min(15, 18 - counts * width)
        guard width <= 15, residue > 0, Self.power(residue) >= needed else {
            self = .text
            return
        }
        self.init(width: width, residue: residue, counts: counts)
    }

    init(width: Int, residue: Int, counts: Int = 1) {
        self.width = width
        self.residue = residue
        self.counts = residue > 0 ? counts : 1
    }

    /// Twice the backward tolerance in windows of `window`, plus one.
    private static func backwardWindows(_ window: Int64) -> Int64 {
        2 * ((Self.backwardTolerance + window - 1) / window + 1)
    }

    private static func power(_ digits: Int) -> Int64 {
        (0..<digits).reduce(1) { value, _ in value * 10 }
    }
}
