import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Tollgate
import TollgateSidecar

/// How `usage` and `reset` reach the counters: the sidecar's admin API, or Redis directly.
struct CounterTarget: ParsableArguments {
    @Argument(help: "The key's id (16 hex digits: the start of its SHA-256, as logs and `keys list` show it).")
    var keyID: String?

    @Option(help: "An organization instead of one key.")
    var org: String?

    @Option(help: ArgumentHelp("The sidecar's admin listener (http://host:9090): ask it, for either store.", valueName: "url"))
    var admin: String?

    @Option(help: ArgumentHelp("The admin API's token (default: $TOLLGATE_ADMIN_TOKEN).", valueName: "token"))
    var token: String?

    @OptionGroup var options: OperatorOptions

    func target() throws -> CounterAdmin.Target {
        do {
            return try CounterAdmin.target(key: keyID, organization: org)
        } catch {
            throw ValidationError(error.message)
        }
    }

    /// The admin API's answer to `method` on `/v1/usage` with this target's query, or its problem's detail.
    func ask(_ method: HTTPMethod, limit: String? = nil) async throws -> Data {
        guard let admin else { throw ValidationError("no --admin URL") }
        guard let token = token ?? ProcessInfo.processInfo.environment["TOLLGATE_ADMIN_TOKEN"], !token.isEmpty else {
            throw ValidationError("--admin needs the admin token: --token or TOLLGATE_ADMIN_TOKEN")
        }
        var components = URLComponents(string: admin.hasSuffix("/") ? String(admin.dropLast()) + "/v1/usage" : admin + "/v1/usage")
        var items: [URLQueryItem] = []
        switch try target() {
        case .key(let id): items.append(URLQueryItem(name: "key", value: id))
        case .organization(let org): items.append(URLQueryItem(name: "org", value: org))
        }
        if let limit { items.append(URLQueryItem(name: "limit", value: limit)) }
        components?.queryItems = items
        guard let url = components?.string else { throw ValidationError("--admin: expected a URL such as http://127.0.0.1:9090") }
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "User-Agent", value: "tollgate-cli")
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            let response = try await client.execute(request, timeout: .seconds(30))
            let body = try await response.body.collect(upTo: 16 << 20)
            try await client.shutdown()
            let data = Data(body.readableBytesView)
            guard response.status == .ok else {
                let detail = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["detail"] as? String
                throw ValidationError("the admin API answered \(response.status.code): \(detail ?? String(decoding: data, as: UTF8.self))")
            }
            return data
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}

/// `tollgate usage KEY-ID | --org ORG`: every limit of the plan, read without consuming.
struct UsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage",
        abstract: "Show a key's or an organization's usage of every limit of its plan (nothing is consumed).")

    @OptionGroup var target: CounterTarget

    func run() async throws {
        let report: CounterAdmin.UsageReport
        if target.admin != nil {
            report = try CounterTarget.decoder().decode(CounterAdmin.UsageReport.self, from: try await target.ask(.GET))
        } else {
            let chosen = try target.target()
            report = try await target.options.withCounters { admin in
                do { return try await admin.usage(chosen) } catch { throw ValidationError("\(error)") }
            }
        }
        guard target.options.format == .table else { return print(CounterAdmin.json(report)) }
        var rows: [[String]] = []
        for key in report.keys {
            for limit in key.limits {
                rows.append([
                    key.keyId, key.org, key.plan, limit.name + (limit.shadow ? " (shadow)" : ""), limit.scope, String(limit.quota),
                    String(limit.used), String(limit.remaining), "\(limit.resetSeconds)s", "\(limit.windowSeconds)s",
                ])
            }
        }
        print(TextTable.render(["KEY ID", "ORG", "PLAN", "LIMIT", "SCOPE", "QUOTA", "USED", "REMAINING", "RESET", "WINDOW"], rows))
    }
}

/// `tollgate reset KEY-ID | --org ORG [--limit NAME]`: puts counters back to full.
struct ResetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset",
        abstract: "Reset counters: a key's own limits, every limit of an organization, or one named limit.",
        discussion: """
            A key's reset leaves its organization-wide limits, which the organization's other keys share: \
            reset those with --org, or name the limit with --limit.
            """)

    @OptionGroup var target: CounterTarget

    @Option(help: "Only this limit of the plan.") var limit: String?

    func run() async throws {
        let report: CounterAdmin.ResetReport
        if target.admin != nil {
            report = try CounterTarget.decoder().decode(CounterAdmin.ResetReport.self, from: try await target.ask(.DELETE, limit: limit))
        } else {
            let chosen = try target.target()
            let limit = self.limit
            report = try await target.options.withCounters { admin in
                do { return try await admin.reset(chosen, limit: limit) } catch { throw ValidationError("\(error)") }
            }
        }
        guard target.options.format == .table else { return print(CounterAdmin.json(report)) }
        print(TextTable.render(["KEY ID", "ORG", "PLAN", "RESET"], report.reset.map { [$0.keyId, $0.org, $0.plan, $0.limits.joined(separator: ", ")] }))
    }
}
