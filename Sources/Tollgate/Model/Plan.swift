import Foundation
import Synchronization

/// A named set of limits that applies to every key on it. A request passes only when all of its
/// enforced limits admit it.
public struct Plan: Sendable {
    /// The most limits one plan may have; decisions keep their per-limit results inline up to this count.
    public static let maximumLimits = 8

    /// The plan's name, as keys in the registry refer to it.
    public let name: String
    /// The zone in which calendar quotas start and end.
    public let timeZone: TimeZone
    /// The limits, in the order they are reported.
    public let limits: [Limit]

    package let compiled: CompiledPlan

    /// Validates and prepares a plan.
    /// - Throws: `PlanError` naming the limit and the field that is wrong.
    public init(name: String, timeZone: TimeZone = TimeZone(identifier: "UTC")!, limits: [Limit]) throws(PlanError) {
        try PlanValidator.validate(name: name, limits: limits)
        self.name = name
        self.timeZone = timeZone
        self.limits = limits
        compiled = CompiledPlan(name: name, timeZone: timeZone, limits: limits)
    }
}

/// What is wrong with a plan, and where.
public struct PlanError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The index of the offending limit, or nil when the problem is with the plan itself.
    public var limitIndex: Int?
    /// The configuration field at fault, such as `capacity` or `name`.
    public var field: String
    /// What was expected and what was found.
    public var message: String

    public var description: String {
        if let limitIndex { "limits[\(limitIndex)].\(field): \(message)" } else { "\(field): \(message)" }
    }
}

enum PlanValidator {
    /// Level arithmetic for token buckets runs in integer units of 1/refillPeriod token. The bound keeps
    /// a full bucket plus one cost below 2^53, where the Redis scripts' doubles are still exact integers.
    static let tokenBucketUnitBound: Int64 = 1 << 51
    /// A sliding counter multiplies counts by up to 2^20 ticks; this keeps the products below 2^52.
    static let maximumCounterLimit: Int64 = 1 << 32
    /// Counts of the other limits, and a cost added to them, stay below 2^53 where Redis' doubles are exact.
    static let maximumLimit: Int64 = 1 << 52

    static func validate(name: String, limits: [Limit]) throws(PlanError) {
        if name.isEmpty { throw PlanError(limitIndex: nil, field: "name", message: "expected a non-empty plan name") }
        if limits.isEmpty {
            throw PlanError(limitIndex: nil, field: "limits", message: "expected at least one limit, found none")
        }
        if limits.count > Plan.maximumLimits {
            throw PlanError(
                limitIndex: nil, field: "limits",
                message: "expected at most \(Plan.maximumLimits) limits, found \(limits.count)")
        }
        var seen = Set<String>()
        for (index, limit) in limits.enumerated() {
            if !PolicyName.isValid(limit.name) {
                throw PlanError(
                    limitIndex: index, field: "name",
                    message: "expected 1-64 characters of letters, digits, '-', '_' or '.', found \"\(limit.name)\"")
            }
            if !seen.insert(limit.name).inserted {
                throw PlanError(limitIndex: index, field: "name", message: "duplicate limit name \"\(limit.name)\"")
            }
            try validate(limit.algorithm, index: index)
        }
    }

    static func validate(_ algorithm: LimitAlgorithm, index: Int) throws(PlanError) {
        func positive(_ value: Int64, _ field: String) throws(PlanError) {
            if value <= 0 {
                throw PlanError(limitIndex: index, field: field, message: "expected a positive integer, found \(value)")
            }
        }
        switch algorithm {
        case .tokenBucket(let capacity, let tokens, let period):
            try positive(capacity, "capacity")
            try positive(tokens, "refill.tokens")
            try positive(period, "refill.per")
            let rate = TokenBucketRate(tokens: tokens, period: period)
            let (full, overflow) = capacity.multipliedReportingOverflow(by: rate.unitsPerToken)
            if overflow || full > tokenBucketUnitBound {
                throw PlanError(
                    limitIndex: index, field: "capacity",
                    message: "capacity \(capacity) with a refill of \(tokens) per \(Durations.describe(period)) is too large "
                        + "for exact arithmetic; use a shorter refill period or a calendar quota")
            }
        case .slidingLog(let limit, let window), .slidingCounter(let limit, let window),
            .fixedWindow(let limit, let window):
            try positive(limit, "limit")
            try atMostMaximumLimit(limit)
            if case .slidingCounter = algorithm, limit > maximumCounterLimit {
                throw PlanError(
                    limitIndex: index, field: "limit",
                    message: "expected at most \(maximumCounterLimit) for a sliding_window limit, found \(limit)")
            }
            try positive(window, "window")
            if window > Durations.maximumWindow {
                throw PlanError(
                    limitIndex: index, field: "window",
                    message: "expected at most 366 days, found \(Durations.describe(window))")
            }
        case .calendar(let limit, _):
            try positive(limit, "limit")
            try atMostMaximumLimit(limit)
        }

        func atMostMaximumLimit(_ limit: Int64) throws(PlanError) {
            if limit > maximumLimit {
                throw PlanError(limitIndex: index, field: "limit", message: "expected at most \(maximumLimit) (2^52), found \(limit)")
            }
        }
    }
}

/// Policy names travel in structured-field strings and Redis keys, so they are kept to a safe alphabet.
enum PolicyName {
    static func isValid(_ name: String) -> Bool {
        guard (1...64).contains(name.utf8.count) else { return false }
        return name.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
                true
            default: false
            }
        }
    }
}

/// A refill rate reduced to lowest terms: every microsecond adds `unitsPerMicrosecond` units and a token
/// is `unitsPerToken` units, so refills are exact integers however long the bucket runs.
struct TokenBucketRate: Sendable {
    let unitsPerToken: Int64
    let unitsPerMicrosecond: Int64

    init(tokens: Int64, period: Int64) {
        var a = tokens, b = period
        while b != 0 { (a, b) = (b, a % b) }
        unitsPerToken = period / a
        unitsPerMicrosecond = tokens / a
    }
}

/// Duration helpers shared by validation, configuration and rendering.
public enum Durations {
    /// The longest window a duration-based limit may have.
    public static let maximumWindow: Int64 = 366 * 86_400 * 1_000_000

    /// A short human form: `1s`, `250ms`, `1m`, `2h`, `1d`, or microseconds when nothing else is exact.
    public static func describe(_ microseconds: Int64) -> String {
        let units: [(Int64, String)] = [
            (86_400_000_000, "d"), (3_600_000_000, "h"), (60_000_000, "m"), (1_000_000, "s"), (1_000, "ms"),
        ]
        for (size, suffix) in units where microseconds != 0 && microseconds % size == 0 {
            return "\(microseconds / size)\(suffix)"
        }
        return "\(microseconds)us"
    }
}
