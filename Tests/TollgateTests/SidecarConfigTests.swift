import Foundation
import Testing

@testable import Tollgate

/// The sidecar's sections of the configuration file: defaults, the shipped example, and errors that name
/// the field.
@Suite("Sidecar configuration")
struct SidecarConfigTests {
    static let plans = "plans:\n  free:\n    limits:\n      - { name: burst, algorithm: token_bucket, capacity: 5, refill: { tokens: 1, per: 1s } }\n"

    static func parse(_ sections: String) throws(ConfigurationError) -> SidecarSettings {
        try TollgateConfiguration.parse(yaml: plans + sections, file: "test.yaml").sidecar
    }

    /// The error for `sections` (appended after the 4-line plans), or nil when it parses.
    static func failure(_ sections: String) -> ConfigurationError? {
        do {
            _ = try parse(sections)
            return nil
        } catch {
            return error
        }
    }

    @Test func defaultsWithoutSections() throws {
        let settings = try Self.parse("")
        #expect(settings == SidecarSettings())
        #expect(settings.server.port == 8080 && settings.server.adminPort == 9090)
        #expect(settings.server.maxHeaderSize == 32 * 1024 && settings.server.maxBodySize == 16 * 1024 * 1024)
        #expect(settings.server.idleTimeout == .seconds(30))
        #expect(settings.upstream.url == nil)
        #expect(settings.store.backend == .memory)
        #expect(settings.keys.source == .file && settings.keys.file == "keys.yaml" && settings.keys.cacheTTL == .seconds(5))
        #expect(settings.routes.isEmpty && settings.unmatched == .pass)
    }

    @Test func shippedExample() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Config/tollgate.yaml")
        let settings = try TollgateConfiguration.load(contentsOfFile: url.path).sidecar
        #expect(settings.routes.map(\.path) == ["/api/v1/messages/send", "/api/v1/messages/bulk", "/api/v1/orgs/{org}/messages/{id}"])
        #expect(settings.routes[0].scope == "messages:send" && settings.routes[0].cost == .fixed(1))
        #expect(settings.routes[1].cost == .perItem(field: ["recipients"], maxBodySize: 1024 * 1024))
        #expect(settings.routes[2].limits == .key)
        #expect(settings.routes[2].segments == [.literal("api"), .literal("v1"), .literal("orgs"), .parameter("org"), .literal("messages"), .parameter("id")])
        #expect(settings.upstream.url == nil)
        #expect(settings.keys.file == "keys.yaml")
    }

    @Test func everyField() throws {
        let settings = try Self.parse(
            """
            server:
              host: 0.0.0.0
              port: 0
              admin_host: 127.0.0.1
              admin_port: 0
              max_header_size: 8KiB
              max_body_size: 2MiB
              idle_timeout: 2s
              legacy_headers: true
              access_log: debug
              access_log_sample: 10
              shutdown_timeout: 5s
              threads: 1
            upstream:
              url: http://127.0.0.1:3000/prefix/
              pool_size: 8
              connect_timeout: 250ms
              response_timeout: 2s
              read_timeout: 3s
              forward_credentials: false
            store:
              backend: redis
              url: redis://:secret@127.0.0.1:6380/2
              failure_policy: local
              timeout: 100ms
              connections: 2
              unavailable_retry_after: 3s
              coalesce: false
              max_batch: 16
            keys:
              source: redis
              cache_ttl: 200ms
              negative_cache_ttl: 1s
              cache_size: 10
              stale_if_error: 5s
            """
                + "\nroutes:\n  - { method: POST, path: '/a/{org}/*', scope: x:y, cost: 0, limits: organization }\nunmatched: not_found\n")
        #expect(settings.server.host == "0.0.0.0" && settings.server.port == 0 && settings.server.adminPort == 0)
        #expect(settings.server.maxHeaderSize == 8192 && settings.server.maxBodySize == 2 << 20)
        #expect(settings.server.idleTimeout == .seconds(2) && settings.server.legacyHeaders)
        #expect(settings.server.accessLog == .debug && settings.server.accessLogSample == 10)
        #expect(settings.server.threads == 1)
        #expect(settings.upstream.url == "http://127.0.0.1:3000/prefix")
        #expect(settings.upstream.poolSize == 8 && settings.upstream.connectTimeout == .milliseconds(250))
        #expect(!settings.upstream.forwardCredentials)
        #expect(settings.store.backend == .redis && settings.store.failurePolicy == .local && settings.store.timeout == .milliseconds(100))
        #expect(settings.store.unavailableRetryAfter == .seconds(3) && settings.store.connections == 2)
        #expect(!settings.store.coalesce && settings.store.maxBatch == 16)
        // Keys from Redis share the store's URL when they name none.
        #expect(settings.keys.source == .redis && settings.keys.url == settings.store.url)
        #expect(settings.keys.cacheTTL == .milliseconds(200) && settings.keys.cacheSize == 10)
        #expect(settings.routes == [
            RouteSettings(
                method: "POST", path: "/a/{org}/*", segments: [.literal("a"), .parameter("org"), .rest], scope: "x:y",
                cost: .fixed(0), limits: .organization)
        ])
        #expect(settings.unmatched == .notFound)
    }

    /// A bad section and what its error must say; the plans take lines 1-4.
    struct Bad: Sendable, CustomTestStringConvertible {
        let yaml: String
        let path: String
        let message: [String]
        let line: Int?
        init(_ yaml: String, path: String, _ message: String..., line: Int? = nil) {
            self.yaml = yaml
            self.path = path
            self.message = message
            self.line = line
        }
        var testDescription: String { path + ": " + message.joined(separator: " … ") }
    }

    @Test(arguments: [
        Bad("server: 8080\n", path: "server", "expected a mapping of server settings", line: 5),
        Bad("server:\n  prot: 1\n", path: "server.prot", "unknown field \"prot\"", "server takes host, port", line: 6),
        Bad("server:\n  port: 70000\n", path: "server.port", "expected a port from 0 to 65535, found 70000", line: 6),
        Bad("server:\n  port: -1\n", path: "server.port", "expected a port from 0 to 65535, found -1"),
        Bad("server:\n  port: \"80\"\n", path: "server.port", "found the string \"80\""),
        Bad("server:\n  port: 9090\n", path: "server.admin_port", "other than server.port (9090)"),
        Bad("server:\n  max_body_size: 10MB\n", path: "server.max_body_size", "expected a size such as 65536, 64KiB", "found \"10MB\""),
        Bad("server:\n  max_header_size: 100\n", path: "server.max_header_size", "at least 1024 bytes"),
        Bad("server:\n  max_body_size: 100GiB\n", path: "server.max_body_size", "at most 64GiB"),
        Bad("server:\n  idle_timeout: soon\n", path: "server.idle_timeout", "expected a duration such as 250ms"),
        Bad("server:\n  access_log: verbose\n", path: "server.access_log", "expected one of info, debug or off"),
        Bad("server:\n  threads: 0\n", path: "server.threads", "expected a positive integer, found 0"),
        Bad("server:\n  threads: 5000\n", path: "server.threads", "expected 1 to 1024 event-loop threads"),
        Bad("upstream:\n  url: ftp://x\n", path: "upstream.url", "expected an http:// URL"),
        Bad("upstream:\n  url: http://h:1/?q=1\n", path: "upstream.url", "no query"),
        Bad("upstream:\n  pool_size: 0\n", path: "upstream.pool_size", "expected a positive integer, found 0"),
        Bad("store:\n  backend: postgres\n", path: "store.backend", "expected one of memory or redis"),
        Bad("store:\n  backend: redis\n", path: "store.url", "missing required field for the redis backend"),
        Bad("store:\n  failure_policy: allow\n", path: "store.failure_policy", "does not apply to the memory backend"),
        Bad("store:\n  backend: redis\n  url: redis://x\n  max_entries: 5\n", path: "store.max_entries", "does not apply to the redis backend"),
        Bad("store:\n  backend: redis\n  url: redis://x\n  failure_policy: retry\n", path: "store.failure_policy", "expected one of deny, allow or local"),
        Bad("store:\n  backend: redis\n  url: redis://x\n  packed_state: false\n", path: "store.packed_state", "no longer a setting"),
        Bad("store:\n  backend: redis\n  cluster: redis://x\n", path: "store.cluster", "expected a list of a Redis Cluster's seed nodes"),
        Bad("store:\n  backend: redis\n  cluster: []\n", path: "store.cluster", "expected a list of a Redis Cluster's seed nodes"),
        Bad("store:\n  backend: redis\n  cluster: [redis://a, unix:///s]\n", path: "store.cluster[1]", "found a unix:// URL"),
        Bad("store:\n  backend: redis\n  cluster: [redis://a, rediss://b]\n", path: "store.cluster[1]", "the same scheme"),
        Bad("store:\n  backend: redis\n  cluster: [http://a]\n", path: "store.cluster[0]", "expected a URL such as redis://"),
        Bad("store:\n  backend: redis\n  url: redis://x\n  cluster: [redis://a]\n", path: "store.cluster", "exclude each other"),
        Bad("store:\n  backend: redis\n  cluster: [redis://a]\n  tls: { ca_file: ca.pem }\n", path: "store.tls", "expected rediss:// URLs in store.cluster"),
        Bad("store:\n  cluster: [redis://a]\n", path: "store.cluster", "does not apply to the memory backend"),
        Bad("store:\n  backend: redis\n  sentinel: { nodes: [redis://a] }\n", path: "store.sentinel.master", "missing required field"),
        Bad("store:\n  backend: redis\n  sentinel: { master: tg, nodes: [] }\n", path: "store.sentinel.nodes", "a list of sentinels"),
        Bad("store:\n  backend: redis\n  sentinel: { master: tg, nodes: [redis://a], pasword: x }\n", path: "store.sentinel.pasword", "unknown field"),
        Bad("store:\n  backend: redis\n  sentinel: { master: tg, nodes: [redis://a], username: u }\n", path: "store.sentinel.password", "a username needs a password"),
        Bad("store:\n  backend: redis\n  cluster: [redis://a]\n  sentinel: { master: tg, nodes: [redis://b] }\n", path: "store.sentinel", "exclude each other"),
        Bad("keys:\n  source: redis\n", path: "keys.url", "keys from redis need a URL"),
        Bad("keys:\n  url: redis://x\n", path: "keys.url", "\"url\" does not apply to keys from a file"),
        Bad("keys:\n  cache_ttl: 0s\n", path: "keys.cache_ttl", "expected a positive duration"),
        Bad("routes:\n  path: /x\n", path: "routes", "expected a list of routes"),
        Bad("routes:\n  - method: POST\n", path: "routes[0].path", "missing required field"),
        Bad("routes:\n  - path: api/v1\n", path: "routes[0].path", "starts with /"),
        Bad("routes:\n  - path: /a//b\n", path: "routes[0].path", "empty segment"),
        Bad("routes:\n  - path: /a/\n", path: "routes[0].path", "remove the trailing /"),
        Bad("routes:\n  - path: /a/*/b\n", path: "routes[0].path", "* is only allowed as the last segment"),
        Bad("routes:\n  - path: /a/{b-c}\n", path: "routes[0].path", "a parameter is {name}"),
        Bad("routes:\n  - path: /a/{x}/{x}\n", path: "routes[0].path", "parameter {x} appears twice"),
        Bad("routes:\n  - path: /a/%41\n", path: "routes[0].path", "a literal segment"),
        Bad("routes:\n  - path: /a\n    method: post\n", path: "routes[0].method", "in capitals"),
        Bad("routes:\n  - path: /a\n    scope: two words\n", path: "routes[0].scope", "without spaces"),
        Bad("routes:\n  - path: /a\n    cost: -1\n", path: "routes[0].cost", "an integer of 0 or more"),
        Bad("routes:\n  - path: /a\n    cost: { per_item: '' }\n", path: "routes[0].cost.per_item", "expected the JSON field"),
        Bad("routes:\n  - path: /a\n    cost: { per_item: a..b }\n", path: "routes[0].cost.per_item", "joined by dots"),
        Bad("routes:\n  - path: /a\n    cost: { per_item: a, max_body_size: big }\n", path: "routes[0].cost.max_body_size", "expected a size"),
        Bad("routes:\n  - path: /a\n    cost: { each: a }\n", path: "routes[0].cost.each", "unknown field"),
        Bad("routes:\n  - path: /a\n    limits: some\n", path: "routes[0].limits", "expected one of all, key, organization or none"),
        Bad("routes:\n  - path: /a\n  - path: /a\n", path: "routes[1]", "duplicate route * /a (first at line 6)", line: 7),
        Bad("routes:\n  - path: /a\n    wat: 1\n", path: "routes[0].wat", "unknown field"),
        Bad("unmatched: drop\n", path: "unmatched", "expected one of pass or not_found", line: 5),
        Bad("tracing: on\n", path: "tracing", "expected a mapping of tracing settings", line: 5),
        Bad("tracing:\n  enabled: true\n", path: "tracing.endpoint", "expected the OTLP/HTTP collector's URL", line: 6),
        Bad("tracing:\n  enabled: yes please\n", path: "tracing.enabled", "expected true or false"),
        Bad("tracing:\n  endpoint: collector:4318\n", path: "tracing.endpoint", "expected an OTLP/HTTP collector URL"),
        Bad("tracing:\n  endpoint: http://c:4318/?x=1\n", path: "tracing.endpoint", "no query"),
        Bad("tracing:\n  sample_ratio: 1.5\n", path: "tracing.sample_ratio", "expected a number from 0 to 1", "found 1.5"),
        Bad("tracing:\n  sample_ratio: \"0.5\"\n", path: "tracing.sample_ratio", "expected a number from 0 to 1"),
        Bad("tracing:\n  sample_ratio: -0.1\n", path: "tracing.sample_ratio", "expected a number from 0 to 1"),
        Bad("tracing:\n  service_name: ''\n", path: "tracing.service_name", "1 to 255 characters"),
        Bad("tracing:\n  sampler: always\n", path: "tracing.sampler", "unknown field \"sampler\"", "tracing takes enabled, endpoint"),
    ])
    func refused(_ bad: Bad) throws {
        let error = try #require(Self.failure(bad.yaml), "\(bad.yaml) should be refused")
        #expect(error.path == bad.path, "\(error)")
        for fragment in bad.message {
            #expect(error.message.contains(fragment), "\(error) should contain \(fragment)")
        }
        if let line = bad.line { #expect(error.line == line, "\(error)") }
        #expect(error.file == "test.yaml")
    }

    /// `store.cluster`: seed URLs instead of `store.url`; keys from Redis share the cluster.
    @Test func clusterStore() throws {
        let yaml = "store:\n  backend: redis\n  cluster: [redis://10.0.0.1:7000, \"redis://10.0.0.2:7000\"]\nkeys:\n  source: redis\n"
        let settings = try Self.parse(yaml)
        #expect(settings.store.cluster == ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
        #expect(settings.store.url == nil)
        #expect(settings.keys.source == .redis && settings.keys.url == nil)
    }

    /// `store.sentinel`: the primary's name, the sentinels, the primary's credentials; keys share it.
    @Test func sentinelStore() throws {
        let yaml = "store:\n  backend: redis\n  sentinel: { master: tg, nodes: [redis://10.0.0.5:26379], password: s3cret }\nkeys:\n  source: redis\n"
        let settings = try Self.parse(yaml)
        #expect(settings.store.sentinel?.master == "tg" && settings.store.sentinel?.nodes == ["redis://10.0.0.5:26379"])
        #expect(settings.store.sentinel?.password == "s3cret" && settings.store.sentinel?.username == nil)
        #expect(settings.store.url == nil && settings.keys.url == nil)
    }

    /// A Redis URL may hold a password: errors never repeat it.
    @Test func redisURLIsNeverEchoed() throws {
        let error = try #require(Self.failure("store:\n  backend: redis\n  url: http://:hunter2@host\n"))
        #expect(error.path == "store.url")
        #expect(!error.description.contains("hunter2"))
    }
}
