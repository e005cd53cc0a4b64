import AsyncHTTPClient
import Foundation
import NIOCore
import Testing
import Tollgate
import TollgateRedis
import TollgateSidecar
import TollgateTestSupport

extension EndToEnd {
    /// The sidecar on a real `redis-server`: counters, failure policies, and keys from Redis hashes.
    @Suite struct RedisSidecarTests {
        /// Runs `body` with a connected client to `url` (for writing key hashes).
        func withRedisClient(_ url: String, _ body: (RedisClient) async throws -> Void) async throws {
            let client = try RedisClient(configuration: RedisConfiguration(url: url), logger: quietLogger)
            let runner = Task { await client.run() }
            defer { runner.cancel() }
            try await client.waitUntilConnected(timeout: .seconds(5))
            try await body(client)
        }

        func store(_ key: TestKey, in client: RedisClient) async throws {
            var command = ["HSET", RedisKeySource.redisKey(KeyDigest(ofKeyText: key.text)), "org", key.org, "plan", key.plan]
            command += ["scopes", key.scopes.joined(separator: " "), "revoked", key.revoked ? "1" : "0"]
            if let expiresAt = key.expiresAt { command += ["expires_at", String(expiresAt)] }
            _ = try await client.send(command)
        }

        @Test(arguments: ["deny", "allow", "local"])
        func redisStoppedMidRun(policy: String) async throws {
            try await withRedisServer { redis in
                let store = "store: { backend: redis, url: \"\(redis.url)\", failure_policy: \(policy), timeout: 200ms, unavailable_retry_after: 2s }"
                try await withSidecar(configuration(upstream: nil, store: store)) { sidecar in
                    try await withHTTPClient { client in
                        try await waitFor(client, sidecar.admin + "/readyz")
                        let url = sidecar.base + "/api/v1/messages/send"
                        let first = try await client.send(.POST, url, key: .sender)
                        #expect(first.status == 200)
                        #expect(first.header("RateLimit") != nil)

                        await redis.kill()
                        let ready = try await client.send(.GET, sidecar.admin + "/readyz")
                        #expect(ready.status == 503)
                        #expect(ready.json?["store"] as? String == "unreachable")

                        var statuses: [Int] = []
                        for _ in 0..<4 {
                            let answer = try await client.send(.POST, url, key: .sender)
                            statuses.append(answer.status)
                            switch policy {
                            case "deny":
                                #expect(answer.status == 503)
                                #expect(answer.header("Retry-After") == "2")
                                #expect(answer.json?["retry_after"] as? Int == 2)
                            case "allow":
                                #expect(answer.status == 200)
                                #expect(answer.header("RateLimit") == nil)  // nothing was checked, nothing to report
                            default:
                                #expect(answer.header("RateLimit") != nil)
                            }
                        }
                        if policy == "local" {
                            // The in-process limiter holds the same plan: a fresh burst of 3, then 429.
                            #expect(statuses == [200, 200, 200, 429])
                        }
                        let metrics = try await client.send(.GET, sidecar.admin + "/metrics")
                        #expect(metrics.text.contains("tollgate_redis_errors_total"))
                        #expect(metrics.text.contains("tollgate_store_info{backend=\"redis\",failure_policy=\"\(policy)\"} 1"))
                    }
                }
            }
        }

        @Test func countersLiveInRedis() async throws {
            try await withRedisServer { redis in
                let store = "store: { backend: redis, url: \"\(redis.url)\" }"
                // Two sidecars on one Redis share one view of each key's usage.
                try await withSidecar(configuration(upstream: nil, store: store)) { first in
                    try await withSidecar(configuration(upstream: nil, store: store)) { second in
                        try await withHTTPClient { client in
                            try await waitFor(client, first.admin + "/readyz")
                            try await waitFor(client, second.admin + "/readyz")
                            var statuses: [Int] = []
                            for sidecar in [first, second, first, second] {
                                statuses.append(try await client.send(.POST, sidecar.base + "/api/v1/messages/send", key: .sender).status)
                            }
                            #expect(statuses == [200, 200, 200, 429])
                            // The refusal is remembered in process: the next one is answered without Redis.
                            #expect(try await client.send(.POST, second.base + "/api/v1/messages/send", key: .sender).status == 429)
                            let metrics = try await client.send(.GET, second.admin + "/metrics").text
                            #expect(metrics.contains("tollgate_deny_cache_hits_total 1"))
                            #expect(metrics.contains("tollgate_checks_total{plan=\"basic\",outcome=\"limited\",origin=\"denyCache\"} 1"))
                            #expect(metrics.contains("tollgate_redis_check_duration_seconds_count"))
                        }
                    }
                }
            }
        }

        /// A reload that leaves a plan as it was keeps its counters in Redis; one that changes a limit
        /// brings the plan's new script, whose keys start afresh.
        @Test func reloadBringsChangedPlansScripts() async throws {
            try await withRedisServer { redis in
                let store = "store: { backend: redis, url: \"\(redis.url)\" }"
                let folder = try TestDirectory()
                defer { folder.remove() }
                try await withSidecar(configuration(upstream: nil, store: store), directory: folder) { sidecar in
                    try await withRedisClient(redis.url) { redisClient in
                        try await withHTTPClient { client in
                            let url = sidecar.base + "/api/v1/messages/send"
                            func statuses(_ count: Int) async throws -> [Int] {
                                var seen: [Int] = []
                                for _ in 0..<count { seen.append(try await client.send(.POST, url, key: .sender).status) }
                                return seen
                            }
                            func scripts() async throws -> Int {
                                let info = try await redisClient.send(["INFO", "memory"]).string ?? ""
                                let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("number_of_cached_scripts:") }
                                return Int(line?.split(separator: ":").last ?? "") ?? -1
                            }
                            #expect(try await statuses(2) == [200, 200])
                            let before = try await scripts()
                            // The same plans, another unmatched policy: the burst goes on where it was.
                            _ = try folder.write("tollgate.yaml", configuration(upstream: nil, store: store, unmatched: "not_found"))
                            #expect(sidecar.sidecar.reload())
                            #expect(try await statuses(2) == [200, 429])
                            #expect(try await scripts() == before)
                            // A burst of 5 instead of 3: a new script, and the burst's counters start afresh.
                            _ = try folder.write("tollgate.yaml", configuration(upstream: nil, store: store, basicCapacity: 5))
                            #expect(sidecar.sidecar.reload())
                            #expect(try await statuses(6) == [200, 200, 200, 200, 200, 429])
                            #expect(try await scripts() == before + 1)
                        }
                    }
                }
            }
        }

        /// Old and new key both work until the old one is revoked; a revoked key stops within the cache TTL.
        @Test func keyRotationAndCacheExpiry() async throws {
            try await withRedisServer { redis in
                let old = TestKey(text: "wz_live_rotation_old_0001", plan: "roomy")
                let new = TestKey(text: "wz_live_rotation_new_0001", plan: "roomy")
                try await withRedisClient(redis.url) { redisClient in
                    try await store(old, in: redisClient)
                    let keys = "keys: { source: redis, url: \"\(redis.url)\", cache_ttl: 300ms, negative_cache_ttl: 300ms }"
                    try await withSidecar(configuration(upstream: nil, keys: keys)) { sidecar in
                        try await withHTTPClient { client in
                            let url = sidecar.base + "/api/v1/messages/send"
                            #expect(try await client.send(.POST, url, key: old).status == 200)
                            // Not issued yet, and remembered as unknown for the negative TTL.
                            #expect(try await client.send(.POST, url, key: new).status == 401)
                            try await store(new, in: redisClient)
                            #expect(try await client.send(.POST, url, key: new).status == 401)
                            try await eventually(within: .seconds(10)) { try await client.send(.POST, url, key: new).status == 200 }
                            // Both valid during the rotation.
                            #expect(try await client.send(.POST, url, key: old).status == 200)
                            #expect(try await client.send(.POST, url, key: new).status == 200)

                            // Revoke the old key: cached as valid for at most the TTL, then refused.
                            _ = try await redisClient.send(["HSET", RedisKeySource.redisKey(KeyDigest(ofKeyText: old.text)), "revoked", "1"])
                            let revokedAt = ContinuousClock.now
                            try await eventually(within: .seconds(10)) { try await client.send(.POST, url, key: old).status == 401 }
                            // Within the TTL (300 ms), give or take a loaded machine (KeyRegistryTests pins it exactly).
                            #expect(ContinuousClock.now - revokedAt < .seconds(5))
                            #expect(try await client.send(.POST, url, key: new).status == 200)

                            // Expiry is checked on every request, cached or not.
                            _ = try await redisClient.send([
                                "HSET", RedisKeySource.redisKey(KeyDigest(ofKeyText: new.text)), "expires_at", String(Int(Date().timeIntervalSince1970) + 1),
                            ])
                            try await eventually(within: .seconds(10)) { try await client.send(.POST, url, key: new).status == 401 }
                            let expired = try await client.send(.POST, url, key: new)
                            #expect(expired.json?["detail"] as? String == "the API key has expired")
                        }
                    }
                }
            }
        }

        /// A registry outage: keys seen recently still work (stale-if-error), unknown ones get 503.
        @Test func registryOutage() async throws {
            try await withRedisServer { redis in
                try await withRedisClient(redis.url) { redisClient in
                    try await store(TestKey.roomy, in: redisClient)
                }
                let keys = "keys: { source: redis, url: \"\(redis.url)\", cache_ttl: 100ms, stale_if_error: 1m }"
                try await withSidecar(configuration(upstream: nil, keys: keys)) { sidecar in
                    try await withHTTPClient { client in
                        let url = sidecar.base + "/api/v1/messages/send"
                        #expect(try await client.send(.POST, url, key: .roomy).status == 200)
                        await redis.kill()
                        try await Task.sleep(for: .milliseconds(150))
                        #expect(try await client.send(.POST, url, key: .roomy).status == 200)
                        let unknown = try await client.send(.POST, url, key: .sender)
                        #expect(unknown.status == 503)
                        #expect(unknown.header("Retry-After") == "1")
                        let ready = try await client.send(.GET, sidecar.admin + "/readyz")
                        #expect(ready.status == 503)
                        #expect(ready.json?["keys"] as? String == "unreachable")
                    }
                }
            }
        }
    }
}

/// Polls `condition` until it holds, failing after `within`.
func eventually(within timeout: Duration, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while true {
        if try await condition() { return }
        guard ContinuousClock.now < deadline else {
            Issue.record("condition did not hold within \(timeout)")
            return
        }
        try await Task.sleep(for: .milliseconds(25))
    }
}
