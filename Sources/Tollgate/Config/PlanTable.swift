import Foundation

/// Renders a configuration's plans as an aligned plain-text table, one row per limit, followed by a
/// summary line; `tollgate check` prints it.
///
/// Read across, the QUOTA and WINDOW columns make a sentence: `5 burst, refill 1/s`, `60 per 1m`,
/// `1,000 per month`.
public enum PlanTable {
    static let header = ["PLAN", "TIME ZONE", "LIMIT", "ALGORITHM", "QUOTA", "WINDOW", "SCOPE", "SHADOW"]
    /// Columns aligned to the right (numbers).
    static let rightAligned: Set<Int> = [4]

    /// The table and a final `OK: 4 plans, 15 limits` line, without a trailing newline.
    public static func render(_ configuration: TollgateConfiguration) -> String {
        var rows = [header]
        for plan in configuration.plans {
            for limit in plan.limits {
                rows.append(row(limit, of: plan))
            }
        }
        var widths = Array(repeating: 0, count: header.count)
        for row in rows {
            for (column, cell) in row.enumerated() { widths[column] = max(widths[column], cell.count) }
        }
        var lines = rows.map { row in
            row.enumerated().map { column, cell in
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                return rightAligned.contains(column) ? padding + cell : cell + padding
            }
            .joined(separator: "  ")
            .trimmingTrailingSpaces()
        }
        let limitCount = configuration.plans.reduce(0) { $0 + $1.limits.count }
        lines.append("")
        lines.append("OK: \(counted(configuration.plans.count, "plan")), \(counted(limitCount, "limit"))")
        return lines.joined(separator: "\n")
    }

    static func row(_ limit: Limit, of plan: Plan) -> [String] {
        [
            plan.name, zoneName(plan.timeZone), limit.name, limit.algorithm.kind, grouped(limit.capacity),
            window(of: limit.algorithm), limit.scope.rawValue, limit.shadow ? "yes" : "no",
        ]
    }

    /// Foundation names the zone written as `UTC` "GMT"; show it the way configurations write it.
    static func zoneName(_ zone: TimeZone) -> String {
        zone.identifier == "GMT" ? "UTC" : zone.identifier
    }

    /// What the quota is counted over, worded to follow the quota: `burst, refill 1/s`, `per 1m`, `per month`.
    static func window(of algorithm: LimitAlgorithm) -> String {
        switch algorithm {
        case .tokenBucket(_, let tokens, let period):
            let per = Durations.describe(period)
            // "1s" reads as "/s"; anything else keeps its count: "/250ms", "/90s".
            let unit = per.hasPrefix("1") && per.dropFirst().allSatisfy(\.isLetter) ? String(per.dropFirst()) : per
            return "burst, refill \(grouped(tokens))/\(unit)"
        case .slidingLog(_, let window), .slidingCounter(_, let window), .fixedWindow(_, let window):
            return "per \(Durations.describe(window))"
        case .calendar(_, let unit):
            return "per \(unit.rawValue)"
        }
    }

    /// `5000000` as `5,000,000`.
    static func grouped(_ value: Int64) -> String {
        let digits = String(value.magnitude)
        var result = ""
        for (offset, digit) in digits.enumerated() {
            if offset > 0 && (digits.count - offset) % 3 == 0 { result.append(",") }
            result.append(digit)
        }
        return value < 0 ? "-" + result : result
    }

    static func counted(_ count: Int, _ noun: String) -> String {
        "\(count) \(noun)\(count == 1 ? "" : "s")"
    }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var copy = self
        while copy.last == " " { copy.removeLast() }
        return copy
    }
}
