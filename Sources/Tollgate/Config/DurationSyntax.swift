/// The duration notation of configuration files: a positive integer followed by `ms`, `s`, `m`, `h` or `d`
/// (`250ms`, `1s`, `1m`, `24h`, `30d`); a bare integer counts seconds.
enum DurationSyntax {
    /// Why a text is not a usable duration.
    enum Failure: Error, Equatable {
        /// Not digits followed by a known unit.
        case malformed
        /// Well formed, but zero.
        case zero
        /// Well formed, but longer than an Int64 of clock ticks holds.
        case tooLong
    }

    /// The form shown in error messages.
    static let expectedForm =
        "a duration such as 250ms, 1s, 1m, 24h or 30d (a positive integer followed by ms, s, m, h or d, "
        + "or a bare integer for seconds)"

    /// One second in the limiters' time unit (that of `LimiterClock`), which durations are converted to.
    static let second: Int64 = microsPerSecond

    static let units: [(suffix: String, ticks: Int64)] = [
        ("ms", second / 1_000), ("s", second), ("m", 60 * second), ("h", 3_600 * second), ("d", 86_400 * second),
    ]

    /// The longest duration that can be written, in whole days.
    static let maximumDays = Int64.max / (86_400 * second)

    /// The duration in the limiters' time unit.
    static func ticks(_ text: String) throws(Failure) -> Int64 {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let suffix = text[digits.endIndex...]
        guard !digits.isEmpty else { throw .malformed }
        let unit: Int64
        if suffix.isEmpty {
            unit = second
        } else if let match = units.first(where: { $0.suffix == suffix }) {
            unit = match.ticks
        } else {
            throw .malformed
        }
        guard let count = Int64(digits) else { throw .tooLong }
        if count == 0 { throw .zero }
        let (total, overflow) = count.multipliedReportingOverflow(by: unit)
        if overflow { throw .tooLong }
        return total
    }
}
