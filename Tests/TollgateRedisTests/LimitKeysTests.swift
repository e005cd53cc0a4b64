import Foundation
import Testing
import Tollgate

@testable import TollgateRedis

@Suite struct LimitKeysTests {
    private func names(_ partition: Partition) throws -> [String] {
        stateKeys(try everyAlgorithmPlan(), partition)
    }

    @Test func shortPlainIdentifiersAreWrittenAsTheyAre() throws {
        let keys = try names(Partition(organization: "org_123abcd", apiKey: "9f86d081884c7d65"))
        let perKey = LimitKeys.scopeID(plan: try everyAlgorithmPlan(), scope: .apiKey)
        let organization = LimitKeys.scopeID(plan: try everyAlgorithmPlan(), scope: .organization)
        // The per-key scope, the organization's, and the organization's sliding log (its first limit).
        #expect(
            keys == [
                "tg:{org_123abcd}:\(perKey):k9f86d081884c7d65", "tg:{org_123abcd}:\(organization):o",
                "tg:{org_123abcd}:\(organization):o:l1",
            ])
        #expect(perKey != organization)
        #expect(perKey != LimitKeys.scopeID(plan: try everyAlgorithmPlan(name: "other"), scope: .apiKey))
    }

    /// Redis rounds a name up to 48 bytes up to 44 of them: no identifier makes a name longer than that.
    @Test(arguments: [
        ("org_123abcd", "9f86d081884c7d65"),
        ("fourteen-bytes", "sixteen-bytes-id"),
        ("6f1d8a2e-3b4c-4d5e-8f90-a1b2c3d4e5f6", String(repeating: "ab", count: 32)),
        ("org with {braces} and spaces", "k"),
        ("ö", ""),
        (String(repeating: "x", count: 500), String(repeating: "y", count: 500)),
    ])
    func namesAreAtMostFortyFourBytes(organization: String, apiKey: String) throws {
        for key in try names(Partition(organization: organization, apiKey: apiKey)) {
            // A sliding log's list is named after its scope's key.
            let name = key.hasSuffix(":l1") ? String(key.dropLast(3)) : key
            #expect(name.utf8.count <= 44, "\(key)")
            #expect(key.filter { $0 == "{" }.count == 1 && key.filter { $0 == "}" }.count == 1, "\(key)")
        }
    }

    @Test func longOrUnplainIdentifiersAreHashedDistinctly() {
        let uuid = "6f1d8a2e-3b4c-4d5e-8f90-a1b2c3d4e5f6"
        let tag = LimitKeys.hashTag(uuid)
        #expect(tag.hasPrefix("#") && tag.utf8.count == 12)
        #expect(tag == LimitKeys.hashTag(for: Partition(organization: uuid, apiKey: "k")))
        #expect(LimitKeys.hashTag("fifteen-bytes-x") != LimitKeys.hashTag("fifteen-bytes-y"))
        #expect(LimitKeys.hashTag("a{b}") != "a{b}" && LimitKeys.hashTag("a{b}").hasPrefix("#"))
        #expect(LimitKeys.hashTag("").hasPrefix("#"))

        let digest = String(repeating: "ab", count: 32)
        let subject = LimitKeys.subject(for: Partition(organization: "o", apiKey: digest))
        #expect(subject.hasPrefix("h") && subject.utf8.count == 12)
        #expect(subject != LimitKeys.subject(for: Partition(organization: "o", apiKey: digest + "0")))
        #expect(LimitKeys.subject(for: Partition(organization: "o", apiKey: "sixteen-bytes-id")) == "ksixteen-bytes-id")
    }
}

@Suite struct PackedLayoutTests {
    /// Every counter and bucket of the example configuration is stored as one integer on Redis.
    @Test func theExamplePlansPack() throws {
        let file = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Config/tollgate.yaml").path
        let configuration = try TollgateConfiguration.load(contentsOfFile: file)
        var packed = 0
        for plan in configuration.plans {
            for (index, spec) in plan.compiled.specs.enumerated() where spec.kind != .slidingLog {
                #expect(PackedLayout(for: spec) != .text, "\(plan.name).\(plan.limits[index].name)")
                packed += 1
            }
        }
        #expect(packed >= 10)
    }

    @Test func layoutsLeaveTheResidueRoomForTheKeysLife() throws {
        func layout(_ algorithm: LimitAlgorithm) throws -> PackedLayout {
            PackedLayout(for: try Plan(name: "p", limits: [Limit(name: "l", algorithm: algorithm)]).compiled.specs[0])
        }
        // 5 per second refilling at 1/s: the deficit needs 7 digits, leaving 11 for the instant (27 h).
        #expect(try layout(.tokenBucket(capacity: 5, refillTokens: 1, refillPeriod: second)) == PackedLayout(width: 7, residue: 11))
        // A bucket that takes an hour to refill needs more digits for its deficit than the instant can spare.
        #expect(try layout(.tokenBucket(capacity: 1_000, refillTokens: 1_000, refillPeriod: 3_600 * second)) == .text)
        #expect(try layout(.slidingCounter(limit: 600, window: 60 * second)) == PackedLayout(width: 3, residue: 12, counts: 2))
        #expect(try layout(.fixedWindow(limit: 60_000, window: 3_600 * second)) == PackedLayout(width: 5, residue: 13))
        #expect(try layout(.calendar(limit: 1_000_000, unit: .month)) == PackedLayout(width: 7, residue: 11))
        // Ten-digit calendar counts still leave 10^8 seconds; eleven do not.
        #expect(try layout(.calendar(limit: 9_999_999_999, unit: .month)) == PackedLayout(width: 10, residue: 8))
        #expect(try layout(.calendar(limit: 10_000_000_000, unit: .month)) == .text)
        // Two counts of seven digits leave four for the window index: enough for one-second windows.
        #expect(try layout(.slidingCounter(limit: 1_000_000, window: second)) == PackedLayout(width: 7, residue: 4, counts: 2))
        #expect(try layout(.slidingLog(limit: 10, window: second)) == .text)
        #expect(PackedLayout(width: 3, residue: 12, counts: 2).pattern == "1%03.0f%03.0f%012.0f")
        #expect(PackedLayout(width: 7, residue: 11).pattern == "1%07.0f%011.0f")
        #expect(PackedLayout.text.pattern == "")
    }
}
