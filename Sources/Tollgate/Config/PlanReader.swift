import Foundation
import Yams

/// Reads the `plans` section into validated `Plan`s.
extension ConfigReader {
    static let planFields = ["time_zone", "limits"]
    static let commonLimitFields = ["name", "algorithm", "scope", "shadow"]

    /// The algorithms by configuration name, with the fields each one takes besides the common ones.
    enum AlgorithmName: String, CaseIterable {
        case tokenBucket = "token_bucket"
        case slidingLog = "sliding_log"
        case slidingWindow = "sliding_window"
        case fixedWindow = "fixed_window"
        case calendar

        var fields: [String] {
            switch self {
            case .tokenBucket: ["capacity", "refill"]
            case .slidingLog, .slidingWindow, .fixedWindow: ["limit", "window"]
            case .calendar: ["limit", "period"]
            }
        }
    }

    func plans(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> [Plan] {
        let fields = try fields(
            of: node, at: path, expected: "a mapping of plan names to plans", keyKind: "plan name")
        guard !fields.entries.isEmpty else {
            throw error(at: node, path, "expected at least one plan, found none")
        }
        var plans: [Plan] = []
        for entry in fields.entries {
            plans.append(try plan(named: entry.name, entry.value, key: entry.key, at: path.appending(entry.name)))
        }
        return plans
    }

    func plan(named name: String, _ node: Node, key: Node, at path: FieldPath) throws(ConfigurationError) -> Plan {
        guard PolicyName.isValid(name) else {
            throw error(
                at: key, path,
                "expected a plan name of 1-64 letters, digits, '-', '_' or '.', found \"\(name)\"")
        }
        let fields = try fields(of: node, at: path, expected: "a plan (a mapping with limits and time_zone)")
        try rejectUnknown(fields, allowed: Self.planFields, in: "a plan")

        var timeZone = TimeZone(identifier: "UTC")!
        if let zoneNode = fields["time_zone"] {
            let zonePath = path.appending("time_zone")
            let identifier = try string(zoneNode, at: zonePath, expected: "an IANA time zone name such as UTC")
            guard let zone = TimeZone(identifier: identifier) else {
                throw error(
                    at: zoneNode, zonePath,
                    "expected an IANA time zone name such as UTC, Europe/Berlin or America/Sao_Paulo, "
                        + "found unknown zone \"\(identifier)\"")
            }
            timeZone = zone
        }

        let limitsPath = path.appending("limits")
        let limitsNode = try required("limits", in: fields, expected: "a list of 1 to \(Plan.maximumLimits) limits")
        guard case .sequence(let items) = limitsNode else {
            throw error(
                at: limitsNode, limitsPath,
                "expected a list of limits (items starting with '-'), found \(describe(limitsNode))")
        }
        guard (1...Plan.maximumLimits).contains(items.count) else {
            throw error(
                at: limitsNode, limitsPath,
                "expected 1 to \(Plan.maximumLimits) limits, found \(items.count)")
        }

        var limits: [Limit] = []
        var lines: [[String: Int]] = []
        var firstLineOfName: [String: Int?] = [:]
        for (index, item) in items.enumerated() {
            let itemPath = limitsPath.appending(index: index)
            let (limit, fieldLines) = try self.limit(item, at: itemPath)
            if let first = firstLineOfName[limit.name] {
                throw error(
                    line: fieldLines["name"], itemPath.appending("name"),
                    "duplicate limit name \"\(limit.name)\"\(first.map { " (first at line \($0))" } ?? ""); "
                        + "names must be unique within a plan")
            }
            firstLineOfName[limit.name] = fieldLines["name"]
            limits.append(limit)
            lines.append(fieldLines)
        }

        do {
            return try Plan(name: name, timeZone: timeZone, limits: limits)
        } catch {
            // Plan validation backs up the checks above and owns the rules about numbers in combination.
            guard let index = error.limitIndex else {
                let line = error.field == "limits" ? limitsNode.mark?.line : key.mark?.line
                let fieldPath = error.field == "limits" ? limitsPath : path
                throw self.error(line: line, fieldPath, error.message)
            }
            let itemLines = lines[index]
            throw self.error(
                line: itemLines[error.field] ?? itemLines[""], limitsPath.appending(index: index).appending(error.field),
                error.message)
        }
    }

    /// One limit, and the line of each field read (keyed by its path below the limit; "" for the limit).
    func limit(_ node: Node, at path: FieldPath) throws(ConfigurationError) -> (Limit, [String: Int]) {
        let fields = try fields(of: node, at: path, expected: "a limit (a mapping with name, algorithm, …)")
        var lines: [String: Int] = [:]
        lines[""] = node.mark?.line
        for entry in fields.entries { lines[entry.name] = entry.value.mark?.line }

        let algorithmNames = AlgorithmName.allCases.map(\.rawValue)
        let algorithmNode = try required(
            "algorithm", in: fields, expected: "one of \(list(algorithmNames, conjunction: "or"))")
        let algorithm = try choice(
            algorithmNode, at: path.appending("algorithm"), from: AlgorithmName.allCases.map { ($0.rawValue, $0) })

        let allowed = Self.commonLimitFields + algorithm.fields
        for entry in fields.entries where !allowed.contains(entry.name) {
            if AlgorithmName.allCases.contains(where: { $0.fields.contains(entry.name) }) {
                throw error(
                    at: entry.key, path.appending(entry.name),
                    "\"\(entry.name)\" does not apply to a \(algorithm.rawValue) limit, which takes "
                        + list(algorithm.fields))
            }
            throw unknownField(entry, in: fields, allowed: allowed, what: "a \(algorithm.rawValue) limit")
        }

        let namePath = path.appending("name")
        let nameNode = try required("name", in: fields, expected: "a limit name")
        let name = try string(nameNode, at: namePath, expected: "a limit name")
        guard PolicyName.isValid(name) else {
            throw error(
                at: nameNode, namePath,
                "expected 1-64 characters of letters, digits, '-', '_' or '.', found \"\(name)\"")
        }

        func integer(_ field: String, _ meaning: String) throws(ConfigurationError) -> Int64 {
            let node = try required(field, in: fields, expected: "a positive integer (\(meaning))")
            return try positiveInteger(node, at: path.appending(field))
        }
        func window() throws(ConfigurationError) -> Int64 {
            let node = try required("window", in: fields, expected: "a duration such as 1m")
            return try duration(node, at: path.appending("window"))
        }

        let limitAlgorithm: LimitAlgorithm
        switch algorithm {
        case .tokenBucket:
            let capacity = try integer("capacity", "the bucket size, the largest burst")
            let refillPath = path.appending("refill")
            let refillNode = try required("refill", in: fields, expected: "a mapping like { tokens: 1, per: 1s }")
            let refill = try self.fields(
                of: refillNode, at: refillPath, expected: "a mapping like { tokens: 1, per: 1s }")
            try rejectUnknown(refill, allowed: ["tokens", "per"], in: "refill")
            let tokensNode = try required("tokens", in: refill, expected: "a positive integer (tokens added per period)")
            let tokens = try positiveInteger(tokensNode, at: refillPath.appending("tokens"))
            let perNode = try required("per", in: refill, expected: "a duration such as 1s")
            let period = try duration(perNode, at: refillPath.appending("per"))
            lines["refill.tokens"] = tokensNode.mark?.line
            lines["refill.per"] = perNode.mark?.line
            limitAlgorithm = .tokenBucket(capacity: capacity, refillTokens: tokens, refillPeriod: period)
        case .slidingLog:
            limitAlgorithm = .slidingLog(limit: try integer("limit", "requests per window"), window: try window())
        case .slidingWindow:
            limitAlgorithm = .slidingCounter(limit: try integer("limit", "requests per window"), window: try window())
        case .fixedWindow:
            limitAlgorithm = .fixedWindow(limit: try integer("limit", "requests per window"), window: try window())
        case .calendar:
            let limit = try integer("limit", "requests per period")
            let units = CalendarUnit.allCases.map(\.rawValue)
            let periodNode = try required("period", in: fields, expected: "one of \(list(units, conjunction: "or"))")
            let unit = try choice(
                periodNode, at: path.appending("period"), from: CalendarUnit.allCases.map { ($0.rawValue, $0) })
            limitAlgorithm = .calendar(limit: limit, unit: unit)
        }

        var scope = LimitScope.apiKey
        if let scopeNode = fields["scope"] {
            scope = try choice(
                scopeNode, at: path.appending("scope"), from: LimitScope.allCases.map { ($0.rawValue, $0) })
        }
        var shadow = false
        if let shadowNode = fields["shadow"] {
            shadow = try bool(shadowNode, at: path.appending("shadow"))
        }
        return (Limit(name: name, algorithm: limitAlgorithm, scope: scope, shadow: shadow), lines)
    }
}
