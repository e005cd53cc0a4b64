import Foundation
import HTTPTypes
import Tollgate
import TollgateHTTP

/// What operators do with counters, for the admin API and the CLI alike: report a key's or an
/// organization's usage of every limit of its plan, read without consuming, and reset counters.
///
/// A key is named by its id (the first 16 hex digits of its SHA-256, as logs and
/// `X-Tollgate-Key-Id` show it; any longer prefix of the digest too). An organization's report lists
/// each of its keys (organization-wide limits appear under each, as each key's requests see them).
/// A reset by key puts the key's own limits back to full; organization-wide limits are shared by
/// every key of the organization, so they are reset by organization, or by naming the limit
/// (`limit=`). A reset by organization resets every limit of every key of the organization.
public struct CounterAdmin: Sendable {
    /// Which counters.
    public enum Target: Sendable, Equatable, CustomStringConvertible {
        case key(String)
        case organization(String)

        public var description: String {
            switch self {
            case .key(let id): "key \(id)"
            case .organization(let org): "organization \(org)"
            }
        }
    }

    /// A refusal with the HTTP status the admin API answers it with.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var status: HTTPResponse.Status
        public var message: String
        public var description: String { message }
    }

    public let store: any LimitStore
    public let plans: [String: Plan]
    public let keys: any KeyListing

    public init(store: any LimitStore, plans: [Plan], keys: any KeyListing) {
        self.store = store
        self.plans = Dictionary(plans.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        self.keys = keys
    }

    /// One limit as an operator reads it.
    public struct LimitUsage: Codable, Sendable, Equatable {
        public var name: String
        public var scope: String
        public var algorithm: String
        public var shadow: Bool
        public var quota: Int64
        public var used: Int64
        public var remaining: Int64
        /// Seconds until more quota is available (0: the limit is untouched).
        public var resetSeconds: Int64
        public var windowSeconds: Int64
    }

    /// One key's usage.
    public struct KeyUsage: Codable, Sendable, Equatable {
        public var keyId: String
        public var org: String
        public var plan: String
        public var revoked: Bool
        public var expiresAt: Int64?
        public var limits: [LimitUsage]
    }

    /// The answer of `usage`.
    public struct UsageReport: Codable, Sendable, Equatable {
        public var target: String
        public var keys: [KeyUsage]
    }

    /// What one reset did, for the answer and the log.
    public struct ResetReport: Codable, Sendable, Equatable {
        public struct Entry: Codable, Sendable, Equatable {
            public var keyId: String
            public var org: String
            public var plan: String
            public var limits: [String]
        }
        public var target: String
        public var reset: [Entry]
    }

    /// A target from `key=` or `org=` (exactly one).
    public static func target(key: String?, organization: String?) throws(Failure) -> Target {
        switch (key, organization) {
        case (let key?, nil):
            let id = key.lowercased()
            guard (16...64).contains(id.utf8.count), id.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else {
                throw Failure(status: .badRequest, message: "key: expected a key id of 16 to 64 hex digits (a prefix of the key's SHA-256), never a key")
            }
            return .key(id)
        case (nil, let org?):
            guard (1...128).contains(org.utf8.count) else {
                throw Failure(status: .badRequest, message: "org: expected an organization id of 1-128 bytes")
            }
            return .organization(org)
        default:
            throw Failure(status: .badRequest, message: "expected exactly one of key=<key id> and org=<organization>")
        }
    }

    /// The keys a target names, with their plans; a target that names none is a 404.
    func resolve(_ target: Target) async throws(Failure) -> [(digest: KeyDigest, record: KeyRecord, plan: Plan)] {
        let found: [(digest: KeyDigest, record: KeyRecord)]
        do {
            switch target {
            case .key(let id): found = try await keys.records(hexPrefix: id)
            case .organization(let org): found = try await keys.records(hexPrefix: "").filter { $0.record.organization == org }
            }
        } catch {
            throw Failure(status: .serviceUnavailable, message: "the key registry could not answer: \(error)")
        }
        if found.isEmpty { throw Failure(status: .notFound, message: "no key for \(target)") }
        if case .key = target, found.count > 1 {
            throw Failure(status: .conflict, message: "\(found.count) keys have ids starting with that prefix; give more hex digits")
        }
        var resolved: [(digest: KeyDigest, record: KeyRecord, plan: Plan)] = []
        for (digest, record) in found {
            guard let plan = plans[record.plan] else {
                throw Failure(status: .conflict, message: "key \(digest.keyID) is on plan \"\(record.plan)\", which the configuration does not define")
            }
            resolved.append((digest, record, plan))
        }
        return resolved
    }

    /// Every limit of each key the target names, read without consuming.
    public func usage(_ target: Target) async throws(Failure) -> UsageReport {
        var report = UsageReport(target: target.description, keys: [])
        for (digest, record, plan) in try await resolve(target) {
            let decision: Decision
            do {
                decision = try await store.usage(plan, partition: Partition(organization: record.organization, apiKey: digest.keyID))
            } catch {
                throw Failure(status: .serviceUnavailable, message: "the limit store could not answer: \(error)")
            }
            report.keys.append(
                KeyUsage(
                    keyId: digest.keyID, org: record.organization, plan: plan.name, revoked: record.revoked,
                    expiresAt: record.expiresAt, limits: Self.limits(plan, decision)))
        }
        return report
    }

    /// Resets the target's counters (all of a key's own limits, every limit of an organization, or the
    /// limit named `limit`, in the plans that have it).
    public func reset(_ target: Target, limit: String?) async throws(Failure) -> ResetReport {
        var report = ResetReport(target: target.description, reset: [])
        let keys = try await resolve(target)
        // A named limit must exist in the plan of at least one of the keys; keys on other plans are left.
        if let limit, let (_, _, plan) = keys.first, !keys.contains(where: { $0.plan.limits.contains { $0.name == limit } }) {
            throw Failure(
                status: .notFound,
                message: "plan \"\(plan.name)\" has no limit \"\(limit)\"; its limits: \(plan.limits.map(\.name).joined(separator: ", "))")
        }
        for (digest, record, plan) in keys {
            let chosen: Set<Int>
            if let limit {
                guard let index = plan.limits.firstIndex(where: { $0.name == limit }) else { continue }
                chosen = [index]
            } else if case .key = target {
                chosen = Set(plan.limits.indices.filter { plan.limits[$0].scope == .apiKey })
            } else {
                chosen = Set(plan.limits.indices)
            }
            if chosen.isEmpty { continue }
            do {
                try await store.reset(plan, partition: Partition(organization: record.organization, apiKey: digest.keyID), limits: chosen)
            } catch {
                throw Failure(status: .serviceUnavailable, message: "the limit store could not reset counters: \(error)")
            }
            report.reset.append(
                .init(keyId: digest.keyID, org: record.organization, plan: plan.name, limits: chosen.sorted().map { plan.limits[$0].name }))
        }
        return report
    }

    static func limits(_ plan: Plan, _ decision: Decision) -> [LimitUsage] {
        decision.results.map { result in
            let limit = plan.limits[result.index]
            return LimitUsage(
                name: limit.name, scope: limit.scope == .apiKey ? "key" : "organization", algorithm: Self.algorithm(limit.algorithm),
                shadow: result.shadow, quota: result.quota, used: max(0, result.quota - result.remaining), remaining: result.remaining,
                resetSeconds: seconds(result.resetAfterMicroseconds), windowSeconds: seconds(result.windowMicroseconds))
        }
    }

    static func seconds(_ microseconds: Int64) -> Int64 { microseconds <= 0 ? 0 : (microseconds + 999_999) / 1_000_000 }

    static func algorithm(_ algorithm: LimitAlgorithm) -> String {
        switch algorithm {
        case .tokenBucket: "token_bucket"
        case .slidingLog: "sliding_log"
        case .slidingCounter: "sliding_window"
        case .fixedWindow: "fixed_window"
        case .calendar: "calendar"
        }
    }

    /// The JSON the admin API answers and the CLI prints: snake_case, keys sorted.
    public static func json(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return (try? String(decoding: encoder.encode(value), as: UTF8.self)) ?? "{}"
    }
}
