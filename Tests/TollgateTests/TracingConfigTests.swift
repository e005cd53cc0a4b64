import Foundation
import Testing

@testable import Tollgate

/// The `tracing` section: off by default, and every field read (its errors are among
/// `SidecarConfigTests.refused`'s).
@Suite("Tracing configuration")
struct TracingConfigTests {
    @Test func offByDefault() throws {
        let settings = try SidecarConfigTests.parse("")
        #expect(settings.tracing == TracingSettings())
        #expect(!settings.tracing.enabled && settings.tracing.endpoint == nil)
        #expect(settings.tracing.sampleRatio == 1 && settings.tracing.serviceName == "tollgate")
    }

    @Test func everyField() throws {
        let settings = try SidecarConfigTests.parse(
            "tracing:\n  enabled: true\n  endpoint: http://collector:4318\n  sample_ratio: 0.25\n  service_name: edge-tollgate\n")
        #expect(settings.tracing.enabled)
        #expect(settings.tracing.endpoint == "http://collector:4318")
        #expect(settings.tracing.sampleRatio == 0.25)
        #expect(settings.tracing.serviceName == "edge-tollgate")
    }

    /// The README's example turns tracing on as it says.
    @Test func readmeExample() throws {
        let readme = try String(contentsOf: ReadmeExampleTests.root.appendingPathComponent("README.md"), encoding: .utf8)
        let start = try #require(readme.range(of: "```yaml\ntracing:\n"))
        let end = try #require(readme.range(of: "```", range: start.upperBound..<readme.endIndex))
        let settings = try SidecarConfigTests.parse(String(readme[readme.index(start.lowerBound, offsetBy: 8)..<end.lowerBound]))
        #expect(settings.tracing.enabled && settings.tracing.endpoint == "http://127.0.0.1:4318")
        #expect(settings.tracing.sampleRatio == 0.1 && settings.tracing.serviceName == "tollgate")
    }

    /// An endpoint may be written while tracing stays off (to switch it on by one line).
    @Test func endpointWithoutEnabling() throws {
        let settings = try SidecarConfigTests.parse("tracing: { endpoint: \"https://otel.example:4318/v1/traces\", sample_ratio: 0 }\n")
        #expect(!settings.tracing.enabled && settings.tracing.endpoint == "https://otel.example:4318/v1/traces")
        #expect(settings.tracing.sampleRatio == 0)
    }
}
