import Foundation
import Testing
import TollgateTestSupport

@testable import TollgateRedis

/// Exactness under contention across processes: `tollgate redis-load` processes with 32 concurrent
/// callers each, all on one key (so the group commit batches their checks), admit exactly the limit
/// between them.
@Suite struct MultiProcessTests {
    /// The `tollgate` executable built next to this test binary.
    static func tollgateExecutable() throws -> String {
        let testBinary = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        var directory = testBinary.deletingLastPathComponent()
        // The test binary sits in the products folder, or inside an .xctest bundle within it.
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("tollgate").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        throw TestSetupError(description: "the tollgate executable was not found near \(testBinary.path); build it with `swift build`")
    }

    /// Runs `tollgate redis-load` `processes` times at once with `arguments` (plus the URL and
    /// organization) and returns the checks admitted between them, after checking that each made 3,200
    /// checks unfailed; `batched` asks that some of its calls decided several checks.
    private func admittedByProcesses(
        _ arguments: [String], organization: String, processes count: Int = 2, batched: Bool = false
    ) async throws -> Int {
        let executable = try Self.tollgateExecutable()
        var admitted = 0
        try await withAnyRedis { configuration in
            let url =
                configuration.unixSocketPath.map { "unix://\($0)" }
                ?? "redis://\(configuration.password.map { ":\($0)@" } ?? "")\(configuration.host):\(configuration.port)/\(configuration.database)"
            let processes = try (0..<count).map { _ in
                let process = Process()
                process.executableURL = URL(fileURLWithPath: executable)
                process.arguments =
                    ["redis-load", "--url", url, "--callers", "32", "--requests", "100", "--shared-key", "--organization", organization]
                    + arguments
                let output = Pipe()
                process.standardOutput = output
                process.standardError = FileHandle.nullDevice
                process.standardInput = FileHandle.nullDevice
                try process.run()
                return (process, output)
            }
            for (process, output) in processes {
                let data = await readToEnd(output.fileHandleForReading) { process.waitUntilExit() }
                #expect(process.terminationStatus == 0)
                let report = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
                #expect(report["failures"] as? Int == 0)
                #expect(report["checks"] as? Int == 3_200)
                #expect((report["redis_cpu_us_per_check"] as? Double ?? 0) > 0)
                if batched { #expect((report["checks_per_call"] as? Double ?? 0) > 1, "the group commit batched no check") }
                admitted += try #require(report["admitted"] as? Int)
            }
        }
        return admitted
    }

    @Test func twoProcessesAdmitExactlyTheLimit() async throws {
        // Fixed windows are aligned to the minute: a run that straddles a minute boundary may rightly
        // admit up to twice the limit. The run takes well under a second; start clear of the boundary.
        let secondOfMinute = Int(Date().timeIntervalSince1970) % 60
        if secondOfMinute >= 55 {
            try await Task.sleep(for: .seconds(61 - secondOfMinute))
        }
        let admitted = try await admittedByProcesses(
            ["--limit", "1000", "--window", "60"], organization: "org-contention-\(UInt64.random(in: 0...UInt64.max))")
        #expect(admitted == 1_000)
    }

    /// The same with a plan of three limits over two scopes from a configuration file: a bucket of 600
    /// that refills once a day (the tightest), a sliding window and an organization's month.
    @Test func twoProcessesAdmitExactlyTheTightestOfAPlansLimits() async throws {
        let admitted = try await withThreeLimitPlan(burst: 600, window: "5000, window: 1m") { arguments in
            try await admittedByProcesses(arguments, organization: "org-three-\(UInt64.random(in: 0...UInt64.max))")
        }
        #expect(admitted == 600)
    }

    /// Runs `body` with the arguments of `tollgate redis-load` for plan `three` of a configuration file
    /// written for it (removed afterwards): a bucket of `burst` that refills once a day, a sliding window
    /// of `window` (its limit, then its length) and an organization's month.
    private func withThreeLimitPlan(burst: Int, window: String, _ body: ([String]) async throws -> Int) async throws -> Int {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-three-\(UInt64.random(in: 0...UInt64.max)).yaml")
        try """
            plans:
              three:
                limits:
                  - { name: burst, algorithm: token_bucket, capacity: \(burst), refill: { tokens: 1, per: 1d } }
                  - { name: minute, algorithm: sliding_window, limit: \(window) }
                  - { name: month, algorithm: calendar, limit: 1000000, period: month, scope: organization }
            """.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        return try await body(["--config", file.path, "--plan", "three"])
    }

    /// 128 callers in four processes on one key of the three-limit plan, with the group commit on (the
    /// default): batches decided in one call each still admit exactly the tightest limit.
    @Test func hundredTwentyEightCallersInFourProcessesAdmitExactlyTheLimit() async throws {
        let admitted = try await withThreeLimitPlan(burst: 5000, window: "1500, window: 1h") { arguments in
            try await admittedByProcesses(
                arguments, organization: "org-hot-\(UInt64.random(in: 0...UInt64.max))", processes: 4, batched: true)
        }
        #expect(admitted == 1_500)
    }
}
