import Foundation
import Testing

@testable import Tollgate

/// The embedding example in README.md is this code: the test checks that the README shows it verbatim,
/// and runs it.
@Suite struct ReadmeExampleTests {
    // README-EXAMPLE-BEGIN
    /// A gateway's request handler, reduced to the decision.
    func handle(apiKeyHash: String, organization: String, limiter: MemoryStore, plan: Plan) throws -> (status: Int, headers: [(name: String, value: String)]) {
        let partition = Partition(organization: organization, apiKey: apiKeyHash)
        let decision = try limiter.checkNow(plan, partition: partition, cost: 1)
        let headers = RateLimitHeaders.fields(decision, plan: plan)
        return decision.isAllowed ? (200, headers) : (429, headers)
    }

    func example(configurationFile: String = "Config/tollgate.yaml") throws -> [Int] {
        let configuration = try TollgateConfiguration.load(contentsOfFile: configurationFile)
        let free = configuration.plan(named: "free")!  // burst 5, 60 per minute, 1,000 per month
        let limiter = MemoryStore()  // the embedded store: sharded, bounded, in process
        return try (0..<7).map { _ in
            try handle(apiKeyHash: "9f86d081884c7d65", organization: "org_123", limiter: limiter, plan: free).status
        }
    }
    // README-EXAMPLE-END

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func readmeShowsThisExampleVerbatim() throws {
        let source = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        let begin = try #require(source.range(of: "    // README-EXAMPLE-BEGIN\n"))
        let end = try #require(source.range(of: "    // README-EXAMPLE-END"))
        let snippet = source[begin.upperBound..<end.lowerBound]
            .split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasPrefix("    ") ? String($0.dropFirst(4)) : String($0) }
            .joined(separator: "\n")
        #expect(readme.contains(snippet), "README.md must contain the example exactly as compiled here")
    }

    @Test func exampleRuns() throws {
        // Five pass on the burst of five; the sixth and seventh get 429 until a token refills.
        let file = Self.root.appendingPathComponent("Config/tollgate.yaml").path
        #expect(try example(configurationFile: file) == [200, 200, 200, 200, 200, 429, 429])
    }
}
