import Foundation
import Testing
import TollgateTestSupport

@testable import TollgateRedis

/// Exactness under contention across processes: two `tollgate redis-load` processes with 32 concurrent
/// callers each, all on one key limited to 1,000 per minute, admit exactly 1,000 between them.
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

    @Test func twoProcessesAdmitExactlyTheLimit() async throws {
        let executable = try Self.tollgateExecutable()
        try await withAnyRedis { configuration in
            let url =
                configuration.unixSocketPath.map { "unix://\($0)" }
                ?? "redis://\(configuration.password.map { ":\($0)@" } ?? "")\(configuration.host):\(configuration.port)/\(configuration.database)"
            let organization = "org-contention-\(UInt64.random(in: 0...UInt64.max))"
            // Fixed windows are aligned to the minute: a run that straddles a minute boundary may rightly
            // admit up to twice the limit. The run takes well under a second; start clear of the boundary.
            let secondOfMinute = Int(Date().timeIntervalSince1970) % 60
            if secondOfMinute >= 55 {
                try await Task.sleep(for: .seconds(61 - secondOfMinute))
            }
            let processes = try (0..<2).map { _ in
                let process = Process()
                process.executableURL = URL(fileURLWithPath: executable)
                process.arguments = [
                    "redis-load", "--url", url, "--callers", "32", "--requests", "100", "--limit", "1000", "--window", "60",
                    "--shared-key", "--organization", organization,
                ]
                let output = Pipe()
                process.standardOutput = output
                process.standardError = FileHandle.nullDevice
                process.standardInput = FileHandle.nullDevice
                try process.run()
                return (process, output)
            }
            var admitted = 0
            for (process, output) in processes {
                let data = output.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                #expect(process.terminationStatus == 0)
                let report = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
                #expect(report["failures"] as? Int == 0)
                #expect(report["checks"] as? Int == 3_200)
                admitted += try #require(report["admitted"] as? Int)
            }
            #expect(admitted == 1_000)
        }
    }
}
