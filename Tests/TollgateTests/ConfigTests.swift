import Foundation
import Testing

@testable import Tollgate

/// A bad configuration and what its error must say.
struct BadConfiguration: Sendable, CustomTestStringConvertible {
    let label: String
    let yaml: String
    let path: String
    /// Fragments the message must contain: what was expected and what was found.
    let message: [String]
    /// The line, when the case pins it.
    let line: Int?

    init(_ label: String, _ yaml: String, path: String, _ message: String..., line: Int? = nil) {
        self.label = label
        self.yaml = yaml
        self.path = path
        self.message = message
        self.line = line
    }

    var testDescription: String { label }
}

@Suite("Configuration")
struct ConfigTests {
    static let exampleURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Config/tollgate.yaml")

    /// A one-plan file whose only limit has `fields`, one per line: the first field is on line 4.
    static func limit(_ fields: String) -> String {
        "plans:\n  free:\n    limits:\n      - " + fields.split(separator: "\n").joined(separator: "\n        ") + "\n"
    }

    /// One second in the limiters' time unit.
    static let oneSecond = DurationSyntax.second

    static let bucket = "name: burst\nalgorithm: token_bucket\ncapacity: 5\nrefill: { tokens: 1, per: 1s }"

    static func parse(_ yaml: String) throws(ConfigurationError) -> TollgateConfiguration {
        try TollgateConfiguration.parse(yaml: yaml, file: "test.yaml")
    }

    // MARK: The shipped example

    @Test func exampleParses() throws {
        let configuration = try TollgateConfiguration.load(contentsOfFile: Self.exampleURL.path)
        #expect(configuration.plans.map(\.name) == ["free", "starter", "pro", "enterprise"])
        let names = configuration.plans.map { $0.limits.map(\.name) }
        #expect(names == [
            ["burst", "minute", "month"],
            ["burst", "minute", "day", "month"],
            ["burst", "minute", "hour", "month"],
            ["burst", "minute", "org-minute", "month"],
        ])

        let free = try #require(configuration.plan(named: "free"))
        #expect(free.timeZone.secondsFromGMT() == 0)
        #expect(free.limits[0].algorithm == .tokenBucket(capacity: 5, refillTokens: 1, refillPeriod: Self.oneSecond))
        #expect(free.limits[1].algorithm == .slidingLog(limit: 60, window: 60 * Self.oneSecond))
        #expect(free.limits[2] == Limit(name: "month", algorithm: .calendar(limit: 1_000, unit: .month), scope: .organization))

        let enterprise = try #require(configuration.plan(named: "enterprise"))
        #expect(enterprise.timeZone.identifier == "America/Sao_Paulo")
        #expect(enterprise.limits[0].algorithm
            == .tokenBucket(capacity: 200, refillTokens: 100, refillPeriod: Self.oneSecond))
        #expect(enterprise.limits[1].algorithm == .slidingCounter(limit: 6_000, window: 60 * Self.oneSecond))
        #expect(enterprise.limits[3].algorithm == .calendar(limit: 5_000_000, unit: .month))

        let all = configuration.plans.flatMap(\.limits)
        #expect(all.contains { $0.scope == .organization })
        #expect(all.contains { $0.shadow })
        #expect(configuration.plans.allSatisfy { plan in
            plan.limits.contains { if case .tokenBucket = $0.algorithm { true } else { false } }
                && plan.limits.contains { if case .calendar = $0.algorithm { true } else { false } }
        })
        // Quotas grow with the plan.
        let monthly = configuration.plans.map { $0.limits.last!.capacity }
        #expect(monthly == monthly.sorted())
        #expect(configuration.plan(named: "platinum") == nil)
    }

    @Test func defaults() throws {
        let configuration = try Self.parse(Self.limit(Self.bucket))
        let plan = try #require(configuration.plan(named: "free"))
        #expect(plan.timeZone.secondsFromGMT() == 0)
        #expect(plan.limits == [
            Limit(name: "burst", algorithm: .tokenBucket(capacity: 5, refillTokens: 1, refillPeriod: Self.oneSecond))
        ])
        #expect(plan.limits[0].scope == .apiKey && !plan.limits[0].shadow)
    }

    @Test func everyAlgorithmAndOption() throws {
        let yaml = """
            version: 1
            plans:
              p:
                time_zone: Asia/Tokyo
                limits:
                  - { name: a, algorithm: token_bucket, capacity: 1_000, refill: { tokens: 3, per: 250ms } }
                  - { name: b, algorithm: sliding_log, limit: 10, window: "90" }
                  - { name: c, algorithm: sliding_window, limit: 20, window: 1h, scope: organization }
                  - { name: d, algorithm: fixed_window, limit: 30, window: 30d, shadow: true }
                  - { name: e, algorithm: calendar, limit: 40, period: week, shadow: False }
            """
        let plan = try #require(try Self.parse(yaml).plan(named: "p"))
        #expect(plan.timeZone.identifier == "Asia/Tokyo")
        let s = Self.oneSecond
        #expect(plan.limits == [
            Limit(name: "a", algorithm: .tokenBucket(capacity: 1_000, refillTokens: 3, refillPeriod: s / 4)),
            Limit(name: "b", algorithm: .slidingLog(limit: 10, window: 90 * s)),
            Limit(name: "c", algorithm: .slidingCounter(limit: 20, window: 3_600 * s), scope: .organization),
            Limit(name: "d", algorithm: .fixedWindow(limit: 30, window: 30 * 86_400 * s), shadow: true),
            Limit(name: "e", algorithm: .calendar(limit: 40, unit: .week)),
        ])
    }

    @Test func anchorsAndAliasesShareDefinitions() throws {
        let yaml = """
            plans:
              free:
                limits: &limits
                  - { name: burst, algorithm: token_bucket, capacity: 5, refill: { tokens: 1, per: 1s } }
              trial:
                time_zone: Europe/Lisbon
                limits: *limits
            """
        let configuration = try Self.parse(yaml)
        #expect(configuration.plans.map(\.name) == ["free", "trial"])
        #expect(configuration.plans[0].limits == configuration.plans[1].limits)
    }

    // MARK: Bad input, one kind per case

    static let badInputs: [BadConfiguration] = [
        // The file as a whole
        BadConfiguration("empty file", "", path: "", "the file is empty", "plans"),
        BadConfiguration("only comments", "# nothing yet\n", path: "", "the file is empty"),
        BadConfiguration(
            "not YAML", "plans:\n  free: [\n    limits: x\n  bad: : :\n", path: "", "invalid YAML", line: 4),
        BadConfiguration(
            "mapping value in a scalar", "version: 1\nplans: free: x\n", path: "", "invalid YAML",
            "mapping values are not allowed", line: 2),
        BadConfiguration(
            "two documents", "version: 1\n---\nversion: 1\n", path: "", "expected a single document", line: 2),
        BadConfiguration(
            "top level is a list", "- free\n- pro\n", path: "",
            "expected a mapping of sections (version, plans, server, upstream, store, keys, routes, unmatched and tracing), found a list", line: 1),

        // Top-level sections
        BadConfiguration(
            "unknown section", "version: 1\nservers:\n  port: 8080\nplans: {}\n", path: "servers",
            "unknown field \"servers\"", "the top level takes version, plans, server, upstream, store, keys, routes, unmatched and tracing", line: 2),
        BadConfiguration("version 2", "version: 2\n", path: "version", "expected 1", "found 2", line: 1),
        BadConfiguration(
            "quoted version", "version: \"1\"\n", path: "version", "expected 1", "found the string \"1\""),
        BadConfiguration(
            "missing plans", "version: 1\n", path: "plans", "missing required section",
            "expected a mapping of plan names to plans", line: 1),
        BadConfiguration("empty plans", "plans: {}\n", path: "plans", "expected at least one plan, found none", line: 1),
        BadConfiguration("null plans", "plans:\n", path: "plans", "expected a mapping of plan names to plans, found nothing"),
        BadConfiguration(
            "plans as a list", "plans:\n  - free\n", path: "plans",
            "expected a mapping of plan names to plans, found a list", line: 2),

        // Plans
        BadConfiguration(
            "duplicate plan names",
            "plans:\n  free:\n    limits: [{ name: a, algorithm: calendar, limit: 1, period: day }]\n"
                + "  free:\n    limits: [{ name: b, algorithm: calendar, limit: 2, period: day }]\n",
            path: "plans.free", "duplicate plan name \"free\" (first at line 2)", line: 4),
        BadConfiguration(
            "invalid plan name", "plans:\n  my plan:\n    limits: []\n", path: "plans.my plan",
            "expected a plan name of 1-64 letters, digits", "found \"my plan\"", line: 2),
        BadConfiguration(
            "plan is a string", "plans:\n  free: basic\n", path: "plans.free",
            "expected a plan (a mapping with limits and time_zone), found \"basic\""),
        BadConfiguration(
            "unknown plan field", "plans:\n  free:\n    timezone: UTC\n    limits: []\n", path: "plans.free.timezone",
            "unknown field \"timezone\"", "a plan takes time_zone and limits", line: 3),
        BadConfiguration(
            "unknown time zone", "plans:\n  free:\n    time_zone: Mars/Olympus\n    limits: []\n",
            path: "plans.free.time_zone", "expected an IANA time zone name", "found unknown zone \"Mars/Olympus\"",
            line: 3),
        BadConfiguration(
            "time zone is a list", "plans:\n  free:\n    time_zone: [UTC]\n", path: "plans.free.time_zone",
            "expected an IANA time zone name", "found a list"),
        BadConfiguration(
            "missing limits", "plans:\n  free:\n    time_zone: UTC\n", path: "plans.free.limits",
            "missing required field", "expected a list of 1 to 8 limits", line: 3),
        BadConfiguration(
            "limits as a mapping", "plans:\n  free:\n    limits:\n      burst: 5\n", path: "plans.free.limits",
            "expected a list of limits (items starting with '-'), found a mapping", line: 4),
        BadConfiguration(
            "no limits", "plans:\n  free:\n    limits: []\n", path: "plans.free.limits",
            "expected 1 to 8 limits, found 0", line: 3),
        BadConfiguration(
            "nine limits",
            "plans:\n  free:\n    limits:\n"
                + (1...9).map { "      - { name: l\($0), algorithm: calendar, limit: \($0), period: day }\n" }.joined(),
            path: "plans.free.limits", "expected 1 to 8 limits, found 9", line: 4),
        BadConfiguration(
            "limit is a string", "plans:\n  free:\n    limits:\n      - burst\n", path: "plans.free.limits[0]",
            "expected a limit (a mapping with name, algorithm, …), found \"burst\"", line: 4),

        // Fields of a limit
        BadConfiguration(
            "unknown limit field", limit(bucket + "\ncapacty: 5"), path: "plans.free.limits[0].capacty",
            "unknown field \"capacty\"", "a token_bucket limit takes name, algorithm, scope, shadow, capacity and refill",
            line: 8),
        BadConfiguration(
            "window on a calendar limit", limit("name: month\nalgorithm: calendar\nlimit: 5\nperiod: month\nwindow: 1m"),
            path: "plans.free.limits[0].window",
            "\"window\" does not apply to a calendar limit, which takes limit and period", line: 8),
        BadConfiguration(
            "capacity on a sliding window", limit("name: m\nalgorithm: sliding_window\nlimit: 5\nwindow: 1m\ncapacity: 5"),
            path: "plans.free.limits[0].capacity", "does not apply to a sliding_window limit, which takes limit and window"),
        BadConfiguration(
            "merge key", limit(bucket + "\n<<: {}"), path: "plans.free.limits[0].<<", "merge keys are not supported"),
        BadConfiguration(
            "missing algorithm", limit("name: burst\ncapacity: 5"), path: "plans.free.limits[0].algorithm",
            "missing required field",
            "expected one of token_bucket, sliding_log, sliding_window, fixed_window or calendar", line: 4),
        BadConfiguration(
            "unknown algorithm", limit("name: burst\nalgorithm: leaky_bucket"), path: "plans.free.limits[0].algorithm",
            "expected one of token_bucket, sliding_log, sliding_window, fixed_window or calendar",
            "found \"leaky_bucket\"", line: 5),
        BadConfiguration(
            "missing name", limit("algorithm: calendar\nlimit: 5\nperiod: day"), path: "plans.free.limits[0].name",
            "missing required field", "expected a limit name"),
        BadConfiguration(
            "invalid limit name", limit("name: per minute\nalgorithm: calendar\nlimit: 5\nperiod: day"),
            path: "plans.free.limits[0].name", "expected 1-64 characters of letters, digits", "found \"per minute\"",
            line: 4),
        BadConfiguration(
            "limit name is a mapping", limit("name: { a: 1 }\nalgorithm: calendar\nlimit: 5\nperiod: day"),
            path: "plans.free.limits[0].name", "expected a limit name, found a mapping"),
        BadConfiguration(
            "duplicate limit names",
            "plans:\n  free:\n    limits:\n"
                + "      - { name: burst, algorithm: calendar, limit: 1, period: day }\n"
                + "      - { name: burst, algorithm: calendar, limit: 2, period: day }\n",
            path: "plans.free.limits[1].name", "duplicate limit name \"burst\" (first at line 4)", line: 5),
        BadConfiguration(
            "duplicate field", limit(bucket + "\ncapacity: 6"), path: "plans.free.limits[0].capacity",
            "duplicate field \"capacity\" (first at line 6)", line: 8),
        BadConfiguration(
            "field repeated three times", limit("name: a\nname: b\nname: c\nalgorithm: calendar"),
            path: "plans.free.limits[0].name", "duplicate field \"name\" (first at line 4)", line: 5),
        BadConfiguration(
            "missing capacity", limit("name: burst\nalgorithm: token_bucket\nrefill: { tokens: 1, per: 1s }"),
            path: "plans.free.limits[0].capacity", "missing required field", "expected a positive integer", line: 4),
        BadConfiguration(
            "missing refill", limit("name: burst\nalgorithm: token_bucket\ncapacity: 5"),
            path: "plans.free.limits[0].refill", "missing required field", "{ tokens: 1, per: 1s }"),
        BadConfiguration(
            "refill as a string", limit("name: burst\nalgorithm: token_bucket\ncapacity: 5\nrefill: 1/s"),
            path: "plans.free.limits[0].refill", "expected a mapping like { tokens: 1, per: 1s }, found \"1/s\"",
            line: 7),
        BadConfiguration(
            "unknown refill field",
            limit("name: burst\nalgorithm: token_bucket\ncapacity: 5\nrefill: { tokens: 1, every: 1s }"),
            path: "plans.free.limits[0].refill.every", "unknown field \"every\"", "refill takes tokens and per"),
        BadConfiguration(
            "missing refill period", limit("name: burst\nalgorithm: token_bucket\ncapacity: 5\nrefill:\n  tokens: 1"),
            path: "plans.free.limits[0].refill.per", "missing required field", "expected a duration", line: 8),
        BadConfiguration(
            "zero refill tokens", limit("name: burst\nalgorithm: token_bucket\ncapacity: 5\nrefill: { tokens: 0, per: 1s }"),
            path: "plans.free.limits[0].refill.tokens", "expected a positive integer, found 0", line: 7),
        BadConfiguration(
            "missing period", limit("name: month\nalgorithm: calendar\nlimit: 5"), path: "plans.free.limits[0].period",
            "missing required field", "expected one of minute, hour, day, week or month"),
        BadConfiguration(
            "unknown period", limit("name: year\nalgorithm: calendar\nlimit: 5\nperiod: year"),
            path: "plans.free.limits[0].period", "expected one of minute, hour, day, week or month, found \"year\"",
            line: 7),
        BadConfiguration(
            "unknown scope", limit(bucket + "\nscope: account"), path: "plans.free.limits[0].scope",
            "expected one of key or organization, found \"account\"", line: 8),
        BadConfiguration(
            "shadow yes", limit(bucket + "\nshadow: yes"), path: "plans.free.limits[0].shadow",
            "expected true or false, found \"yes\"", line: 8),
        BadConfiguration(
            "shadow quoted", limit(bucket + "\nshadow: \"true\""), path: "plans.free.limits[0].shadow",
            "expected true or false, found the string \"true\""),
        BadConfiguration(
            "missing window", limit("name: m\nalgorithm: fixed_window\nlimit: 5"), path: "plans.free.limits[0].window",
            "missing required field", "expected a duration such as 1m"),
        BadConfiguration(
            "window too long for a plan", limit("name: m\nalgorithm: sliding_log\nlimit: 5\nwindow: 400d"),
            path: "plans.free.limits[0].window", "expected at most 366 days, found 400d", line: 7),
        BadConfiguration(
            "bucket too large for exact arithmetic",
            limit("name: burst\nalgorithm: token_bucket\ncapacity: 4_000_000_000_000_000_000\nrefill: { tokens: 1, per: 1s }"),
            path: "plans.free.limits[0].capacity", "too large for exact arithmetic", line: 6),
    ]

    @Test(arguments: badInputs)
    func rejects(_ bad: BadConfiguration) throws {
        let error = try #require(throws: ConfigurationError.self) { try Self.parse(bad.yaml) }
        #expect(error.file == "test.yaml")
        #expect(error.path == bad.path, "\(error)")
        for fragment in bad.message {
            #expect(error.message.contains(fragment), "\(error.message) lacks \(fragment)")
        }
        if let line = bad.line {
            #expect(error.line == line, "\(error)")
        }
    }

    // MARK: Wrong values for an integer field

    @Test(arguments: [
        ("\"5\"", "found the string \"5\"; write numbers without quotes"),
        ("'5'", "found the string \"5\""),
        ("five", "expected a positive integer, found \"five\""),
        ("1.5", "expected a positive integer (a whole number), found 1.5"),
        ("-5", "expected a positive integer, found -5"),
        ("0", "expected a positive integer, found 0"),
        ("", "expected a positive integer, found nothing"),
        ("~", "expected a positive integer, found nothing"),
        ("true", "expected a positive integer, found true"),
        ("[5]", "expected a positive integer, found a list"),
        ("{ n: 5 }", "expected a positive integer, found a mapping"),
        ("99999999999999999999", "no larger than 9223372036854775807"),
        ("|\n  5", "found a block of text"),
    ])
    func rejectsCapacity(_ value: String, _ message: String) throws {
        let yaml = Self.limit("name: burst\nalgorithm: token_bucket\ncapacity: \(value)\nrefill: { tokens: 1, per: 1s }")
        let error = try #require(throws: ConfigurationError.self) { try Self.parse(yaml) }
        #expect(error.path == "plans.free.limits[0].capacity")
        #expect(error.line == 6)
        #expect(error.message.contains(message), "\(error.message)")
    }

    /// Counts stay below 2^53, where the Redis scripts' doubles are exact integers.
    @Test(arguments: ["fixed_window\nwindow: 1m", "sliding_log\nwindow: 1m", "calendar\nperiod: month"])
    func limitsAboveTwoToTheFiftySecondAreRefused(_ algorithm: String) throws {
        let yaml = Self.limit("name: m\nalgorithm: \(algorithm)\nlimit: 4503599627370497")
        let error = try #require(throws: ConfigurationError.self) { try Self.parse(yaml) }
        #expect(error.path == "plans.free.limits[0].limit")
        #expect(error.message.contains("expected at most 4503599627370496 (2^52)"), "\(error.message)")
        #expect(try Self.parse(Self.limit("name: m\nalgorithm: \(algorithm)\nlimit: 4503599627370496")).plans[0].limits[0].capacity == 1 << 52)
    }

    @Test func integersMayUseUnderscores() throws {
        let plan = try Self.parse(Self.limit("name: m\nalgorithm: calendar\nlimit: 1_000_000\nperiod: month")).plans[0]
        #expect(plan.limits[0].capacity == 1_000_000)
        let error = try #require(throws: ConfigurationError.self) {
            try Self.parse(Self.limit("name: m\nalgorithm: calendar\nlimit: 1__0\nperiod: month"))
        }
        #expect(error.path == "plans.free.limits[0].limit")
    }

    // MARK: Durations

    /// Texts and their length in seconds.
    @Test(arguments: [(String, Double)]([
        ("250ms", 0.25), ("1ms", 0.001), ("1s", 1), ("90s", 90), ("1m", 60), ("24h", 86_400), ("30d", 2_592_000),
        ("60", 60), ("007s", 7), ("1000ms", 1), ("366d", 366 * 86_400),
    ]))
    func parsesDuration(_ text: String, _ seconds: Double) throws {
        #expect(try DurationSyntax.ticks(text) == Int64(seconds * Double(Self.oneSecond)))
    }

    @Test func longestDuration() throws {
        let days = DurationSyntax.maximumDays
        #expect(try DurationSyntax.ticks("\(days)d") == days * 86_400 * Self.oneSecond)
        #expect(throws: DurationSyntax.Failure.tooLong) { try DurationSyntax.ticks("\(days + 1)d") }
    }

    @Test(arguments: [(String, DurationSyntax.Failure)]([
        ("0s", .zero), ("0", .zero), ("0ms", .zero),
        ("", .malformed), ("s", .malformed), ("ms", .malformed), ("-1s", .malformed), ("+1s", .malformed),
        ("1.5s", .malformed), ("1 s", .malformed), (" 1s", .malformed), ("1s ", .malformed), ("1S", .malformed),
        ("1w", .malformed), ("1us", .malformed), ("1ns", .malformed), ("1sm", .malformed), ("1m30s", .malformed),
        ("1_000ms", .malformed), ("١s", .malformed), ("1e3s", .malformed),
        ("99999999999999999999s", .tooLong), ("9223372036854775807s", .tooLong),
    ]))
    func rejectsDuration(_ text: String, _ failure: DurationSyntax.Failure) {
        #expect(throws: failure) { try DurationSyntax.ticks(text) }
    }

    @Test(arguments: [
        ("1.5m", "expected a duration such as 250ms, 1s, 1m, 24h or 30d (a positive integer followed by ms, s, m, h or d", "found \"1.5m\""),
        ("0s", "expected a positive duration", "found 0s"),
        ("-1m", "expected a duration such as 250ms, 1s, 1m, 24h or 30d (a positive integer followed by ms, s, m, h or d", "found \"-1m\""),
        ("1 minute", "or a bare integer for seconds), found", "found \"1 minute\""),
        ("[1m]", "expected a duration", "found a list"),
        ("", "expected a duration", "found nothing"),
        ("99999999999999d", "expected a duration of at most", "d, found 99999999999999d"),
    ])
    func rejectsWindow(_ value: String, _ expected: String, _ found: String) throws {
        let yaml = Self.limit("name: m\nalgorithm: sliding_window\nlimit: 5\nwindow: \(value)")
        let error = try #require(throws: ConfigurationError.self) { try Self.parse(yaml) }
        #expect(error.path == "plans.free.limits[0].window")
        #expect(error.line == 7)
        #expect(error.message.contains(expected), "\(error.message)")
        #expect(error.message.contains(found), "\(error.message)")
    }

    @Test func quotedDurationsAreDurations() throws {
        let plan = try Self.parse(Self.limit("name: m\nalgorithm: sliding_window\nlimit: 5\nwindow: '2m'")).plans[0]
        #expect(plan.limits[0].algorithm == .slidingCounter(limit: 5, window: 120 * Self.oneSecond))
    }

    // MARK: Files

    @Test func missingFile() throws {
        let path = "/nonexistent/tollgate-\(UUID().uuidString).yaml"
        let error = try #require(throws: ConfigurationError.self) {
            try TollgateConfiguration.load(contentsOfFile: path)
        }
        #expect(error.file == path)
        #expect(error.line == nil)
        #expect(error.path == "")
        #expect(error.message.contains("no such file"))
        #expect(error.description == "\(path): no such file; expected the path of a YAML configuration file")
    }

    @Test func directoryInsteadOfFile() throws {
        let error = try #require(throws: ConfigurationError.self) {
            try TollgateConfiguration.load(contentsOfFile: NSTemporaryDirectory())
        }
        #expect(error.message.contains("is a directory"))
    }

    @Test func fileThatIsNotUTF8() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-\(UUID().uuidString).yaml")
        try Data([0x70, 0x6C, 0x61, 0x6E, 0x73, 0x3A, 0x20, 0xFF, 0xFE, 0x0A]).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        let error = try #require(throws: ConfigurationError.self) {
            try TollgateConfiguration.load(contentsOfFile: url.path)
        }
        #expect(error.message.contains("expected UTF-8 text"))
    }

    @Test func errorsInALoadedFileNameTheFile() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-\(UUID().uuidString).yaml")
        try Data(Self.limit("name: burst\nalgorithm: token_bucket\ncapacity: -5\nrefill: { tokens: 1, per: 1s }").utf8)
            .write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        let error = try #require(throws: ConfigurationError.self) {
            try TollgateConfiguration.load(contentsOfFile: url.path)
        }
        #expect(error.description
            == "\(url.path):6: plans.free.limits[0].capacity: expected a positive integer, found -5")
    }

    @Test func errorDescription() {
        let error = ConfigurationError(
            file: "Config/tollgate.yaml", line: 14, path: "plans.free.limits[1].capacity",
            message: "expected a positive integer, found -5")
        #expect(error.description
            == "Config/tollgate.yaml:14: plans.free.limits[1].capacity: expected a positive integer, found -5")
        #expect(ConfigurationError(file: "a.yaml", line: nil, path: "", message: "gone").description == "a.yaml: gone")
        #expect(ConfigurationError(file: "a.yaml", line: 3, path: "", message: "bad").description == "a.yaml:3: bad")
    }

    // MARK: The plan table

    @Test func tableOfTheExample() throws {
        let configuration = try TollgateConfiguration.load(contentsOfFile: Self.exampleURL.path)
        let table = PlanTable.render(configuration)
        let lines = table.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let cells = lines.map { $0.split(separator: "  ").map { $0.trimmingCharacters(in: .whitespaces) } }

        #expect(cells[0] == ["PLAN", "TIME ZONE", "LIMIT", "ALGORITHM", "QUOTA", "WINDOW", "SCOPE", "SHADOW"])
        #expect(cells.contains(["free", "UTC", "burst", "token_bucket", "5", "burst, refill 1/s", "key", "no"]))
        #expect(cells.contains(["free", "UTC", "minute", "sliding_log", "60", "per 1m", "key", "no"]))
        #expect(cells.contains(["free", "UTC", "month", "calendar", "1,000", "per month", "organization", "no"]))
        #expect(cells.contains(["starter", "UTC", "day", "calendar", "10,000", "per day", "organization", "yes"]))
        #expect(cells.contains(["pro", "Europe/Berlin", "hour", "fixed_window", "60,000", "per 1h", "key", "no"]))
        #expect(cells.contains([
            "enterprise", "America/Sao_Paulo", "burst", "token_bucket", "200", "burst, refill 100/s", "key", "no",
        ]))
        #expect(cells.contains([
            "enterprise", "America/Sao_Paulo", "month", "calendar", "5,000,000", "per month", "organization", "no",
        ]))
        #expect(lines.last == "OK: 4 plans, 15 limits")
        #expect(lines.count == 1 + 15 + 2)

        // Aligned: every row's WINDOW column starts where its header does, quotas end where QUOTA ends.
        let header = lines[0]
        let windowColumn = header.distance(from: header.startIndex, to: header.range(of: "WINDOW")!.lowerBound)
        let quotaEnd = header.distance(from: header.startIndex, to: header.range(of: "QUOTA")!.upperBound)
        for line in lines[1...15] {
            let characters = Array(line)
            #expect(characters[windowColumn - 1] == " " && characters[windowColumn] != " ", "\(line)")
            #expect(characters[quotaEnd - 1] != " " && characters[quotaEnd] == " ", "\(line)")
            #expect(!line.hasSuffix(" "))
        }
    }

    @Test func tableWording() throws {
        #expect(PlanTable.grouped(0) == "0")
        #expect(PlanTable.grouped(999) == "999")
        #expect(PlanTable.grouped(1_000) == "1,000")
        #expect(PlanTable.grouped(5_000_000) == "5,000,000")
        #expect(PlanTable.grouped(Int64.max) == "9,223,372,036,854,775,807")
        let s = Self.oneSecond
        #expect(PlanTable.window(of: .tokenBucket(capacity: 5, refillTokens: 1, refillPeriod: s / 4))
            == "burst, refill 1/250ms")
        #expect(PlanTable.window(of: .tokenBucket(capacity: 5, refillTokens: 1_000, refillPeriod: 60 * s))
            == "burst, refill 1,000/m")
        #expect(PlanTable.window(of: .tokenBucket(capacity: 5, refillTokens: 1, refillPeriod: 90 * s))
            == "burst, refill 1/90s")
        #expect(PlanTable.window(of: .fixedWindow(limit: 5, window: 86_400 * s)) == "per 1d")
        #expect(PlanTable.window(of: .calendar(limit: 5, unit: .week)) == "per week")

        let one = try Self.parse(Self.limit(Self.bucket))
        #expect(PlanTable.render(one).hasSuffix("\nOK: 1 plan, 1 limit"))
    }
}
