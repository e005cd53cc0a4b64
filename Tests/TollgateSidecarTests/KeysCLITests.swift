import AsyncHTTPClient
import Foundation
import Testing
import TollgateSidecar
import TollgateTestSupport

@testable import TollgateRedis

/// What a finished `tollgate` process wrote.
struct CommandResult {
    let status: Int32
    let output: String
    let errors: String
}

/// Runs the `tollgate` executable with `arguments` and waits for it to exit.
func runTollgate(_ arguments: [String]) async throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try tollgateExecutable())
    process.arguments = arguments
    let output = Pipe(), errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = FileHandle.nullDevice
    let out = LogBuffer(), err = LogBuffer()
    output.fileHandleForReading.readabilityHandler = { out.append($0.availableData) }
    errors.fileHandleForReading.readabilityHandler = { err.append($0.availableData) }
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        process.terminationHandler = { _ in done.resume() }
        do { try process.run() } catch { done.resume() }
    }
    output.fileHandleForReading.readabilityHandler = nil
    errors.fileHandleForReading.readabilityHandler = nil
    out.append(output.fileHandleForReading.readDataToEndOfFile())
    err.append(errors.fileHandleForReading.readDataToEndOfFile())
    return CommandResult(status: process.terminationStatus, output: out.text, errors: err.text)
}

extension EndToEnd {
    /// `tollgate keys`, `usage` and `reset` as an operator runs them, against a key file and a real
    /// `redis-server`, with the keys they print used through a running sidecar.
    @Suite struct KeysCLITests {
        func json(_ text: String) -> [String: Any]? {
            try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        }

        /// Creates a key with the CLI; returns the key and its id.
        func create(_ common: [String], scopes: [String] = ["messages:send"]) async throws -> (key: String, id: String) {
            let result = try await runTollgate(
                ["keys", "create"] + common + ["--org", "org_1", "--plan", "basic", "--scopes"] + scopes + ["--expires", "30d", "--test", "--format", "json"])
            #expect(result.status == 0, "\(result.errors)")
            let fields = json(result.output)
            let key = fields?["key"] as? String ?? ""
            #expect(key.hasPrefix("wz_test_"))
            // 32 random bytes in base64url: 43 characters after the prefix, nothing outside the alphabet.
            #expect(key.count == 8 + 43)
            #expect(key.dropFirst(8).allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })
            #expect(fields?["sha256"] as? String == KeyDigest(ofKeyText: key).hex)
            #expect(!result.errors.contains(key))
            return (key, fields?["key_id"] as? String ?? "")
        }

        /// Polls until a request with `key` answers `status` (a reload or the registry cache's TTL).
        func waitForStatus(_ client: HTTPClient, _ url: String, key: String, status: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(30)
            while try await client.send(.POST, url, key: TestKey(text: key)).status != status {
                guard ContinuousClock.now < deadline else { throw TestSetupError(description: "the key did not get \(status) within 30 s") }
                try await Task.sleep(for: .milliseconds(20))
            }
        }

        func start(_ configPath: String) async throws -> (Sidecar, Task<Void, any Error>, base: String, admin: String) {
            let sidecar = try Sidecar(configurationFile: configPath, logger: quietLogger)
            let task = Task { try await sidecar.run() }
            let ports = try await sidecar.listeningPorts(timeout: startupTimeout)
            return (sidecar, task, "http://127.0.0.1:\(ports.proxy)", "http://127.0.0.1:\(ports.admin)")
        }

        @Test func keyFile() async throws {
            let folder = try TestDirectory()
            defer { folder.remove() }
            let keysPath = try folder.write("keys.yaml", "keys: []\n")
            let config = try folder.write("tollgate.yaml", configuration(server: "watch_interval: 50ms"))
            let common = ["--config", config]
            let (key, id) = try await create(common)
            let stored = try String(contentsOfFile: keysPath, encoding: .utf8)
            #expect(!stored.contains(key))
            #expect(stored.contains(KeyDigest(ofKeyText: key).hex))

            let (sidecar, task, base, _) = try await start(config)
            defer { task.cancel() }
            try await withHTTPClient { client in
                let send = base + "/api/v1/messages/send"
                #expect(try await client.send(.POST, send, key: TestKey(text: key)).status == 200)

                let list = try await runTollgate(["keys", "list"] + common)
                #expect(list.status == 0)
                #expect(list.output.contains(id) && list.output.contains("org_1") && !list.output.contains(key))

                // Rotation: a new key, the old one valid for an hour more.
                let rotated = try await runTollgate(["keys", "rotate", id, "--old-valid-until", "1h", "--format", "json"] + common)
                #expect(rotated.status == 0, "\(rotated.errors)")
                let newKey = json(rotated.output)?["key"] as? String ?? ""
                try await waitForStatus(client, send, key: newKey, status: 200)
                #expect(try await client.send(.POST, send, key: TestKey(text: key)).status == 200)

                // Revoked: refused once the watcher has reloaded the key file.
                let revoked = try await runTollgate(["keys", "revoke", id] + common)
                #expect(revoked.status == 0, "\(revoked.errors)")
                try await waitForStatus(client, send, key: key, status: 401)
                #expect(try await client.send(.POST, send, key: TestKey(text: newKey)).status == 200)

                let final = try String(contentsOfFile: keysPath, encoding: .utf8)
                #expect(!final.contains(key) && !final.contains(newKey))
                #expect(try await runTollgate(["keys", "revoke", "zz"] + common).status != 0)
            }
            await sidecar.shutdown()
            _ = try? await task.value
        }

        /// `keys create` and `keys list` on the configuration's Redis Cluster (`store.cluster`): every key
        /// created is listed (a `SCAN` per primary, the keys being spread over all three), an entry that is
        /// not a hash is skipped, and no key is printed.
        @Test func cluster() async throws {
            let cluster = try await RedisTestCluster.start(replicas: 0)
            do {
                let folder = try TestDirectory()
                defer { folder.remove() }
                let seeds = cluster.urls.map { "\"\($0)\"" }.joined(separator: ", ")
                let config = try folder.write(
                    "tollgate.yaml", configuration(store: "store: { backend: redis, cluster: [\(seeds)] }", keys: "keys: { source: redis }"))
                let common = ["--config", config]
                // Keys are random: made until every primary holds some (six at least; 30 at most, which
                // leaves a primary without one about once in 60,000 runs).
                let (created, primaries) = try await withClusterClient(cluster) { client in
                    var created: [(key: String, id: String)] = []
                    var primaries: Set<ClusterAddress> = []
                    while created.count < 6 || (primaries.count < 3 && created.count < 30) {
                        let made = try await create(common)
                        created.append(made)
                        if let primary = client.primary(ofSlot: HashSlot.of(key: RedisKeySource.redisKey(KeyDigest(ofKeyText: made.key)))) {
                            primaries.insert(primary)
                        }
                    }
                    // Keys of another type under the prefix are not records.
                    let stray = RedisKeySource.keyPrefix + String(repeating: "ab", count: 32)
                    _ = try await client.send(["SET", stray, "not-a-hash"], key: stray)
                    return (created, primaries)
                }
                #expect(primaries.count == 3, "the keys are spread over every primary")

                let list = try await runTollgate(["keys", "list", "--format", "json"] + common)
                #expect(list.status == 0, "\(list.errors)")
                let rows = (try? JSONSerialization.jsonObject(with: Data(list.output.utf8)) as? [[String: Any]]) ?? []
                let listed = rows.compactMap { $0["key_id"] as? String ?? $0["keyId"] as? String }
                #expect(Set(listed) == Set(created.map(\.id)), "\(list.output)")
                for (key, _) in created { #expect(!list.output.contains(key) && !list.errors.contains(key)) }
                let table = try await runTollgate(["keys", "list", "--org", "org_1"] + common)
                #expect(table.status == 0 && created.allSatisfy { table.output.contains($0.id) }, "\(table.output)")
            } catch {
                await cluster.stop()
                throw error
            }
            await cluster.stop()
        }

        /// Runs `body` with a connected client of `cluster`.
        func withClusterClient<T>(_ cluster: RedisTestCluster, _ body: (RedisClusterClient) async throws -> T) async throws -> T {
            let client = try RedisClusterClient(configuration: RedisClusterConfiguration(urls: cluster.urls), logger: quietLogger)
            let runner = Task { await client.run() }
            defer { runner.cancel() }
            try await client.waitUntilConnected(timeout: .seconds(10))
            return try await body(client)
        }

        @Test func redis() async throws {
            try await withRedisServer { redis in
                let folder = try TestDirectory()
                defer { folder.remove() }
                let token = "admin-token-0123456789abcdef"
                let config = try folder.write(
                    "tollgate.yaml",
                    configuration(
                        store: "store: { backend: redis, url: \"\(redis.url)\" }",
                        keys: "keys: { source: redis, cache_ttl: 200ms, negative_cache_ttl: 200ms }",
                        server: "admin_token: \(token)"))
                let common = ["--config", config]
                let (key, id) = try await create(common + ["--redis", redis.url])

                let (sidecar, task, base, admin) = try await start(config)
                defer { task.cancel() }
                try await withHTTPClient { client in
                    try await waitFor(client, admin + "/readyz")
                    let send = base + "/api/v1/messages/send"
                    #expect(try await client.send(.POST, send, key: TestKey(text: key)).status == 200)
                    #expect(try await client.send(.POST, send, key: TestKey(text: key)).status == 200)

                    // Straight against Redis, and through the admin API: the same counts.
                    let direct = try await runTollgate(["usage", id, "--format", "json"] + common)
                    #expect(direct.status == 0, "\(direct.errors)")
                    let viaAdmin = try await runTollgate(["usage", id, "--admin", admin, "--token", token, "--format", "json"] + common)
                    #expect(viaAdmin.status == 0, "\(viaAdmin.errors)")
                    let keys = json(direct.output)?["keys"] as? [[String: Any]]
                    let burst = (keys?.first?["limits"] as? [[String: Any]])?.first { $0["name"] as? String == "burst" }
                    #expect(burst?["used"] as? Int == 2)
                    func counts(_ output: String) -> [String] {
                        let keys = json(output)?["keys"] as? [[String: Any]] ?? []
                        return keys.flatMap { ($0["limits"] as? [[String: Any]] ?? []).map { "\($0["name"] ?? "")=\($0["used"] ?? "")/\($0["remaining"] ?? "")" } }
                    }
                    #expect(!counts(direct.output).isEmpty)
                    #expect(counts(direct.output) == counts(viaAdmin.output))
                    let table = try await runTollgate(["usage", "--org", "org_1"] + common)
                    #expect(table.output.contains("REMAINING") && table.output.contains(id))

                    #expect(try await client.send(.POST, send, key: TestKey(text: key)).status == 200)
                    #expect(try await client.send(.POST, send, key: TestKey(text: key)).status == 429)
                    // Straight against Redis: the counters are full again.
                    let reset = try await runTollgate(["reset", id] + common)
                    #expect(reset.status == 0, "\(reset.errors)")
                    let after = try await runTollgate(["usage", id, "--format", "json"] + common)
                    #expect(counts(after.output).first == "burst=0/3")
                    // Through the admin API: the sidecar also forgets the refusal it remembers (a sidecar
                    // not told remembers it for at most its Retry-After).
                    let viaAdminReset = try await runTollgate(["reset", id, "--admin", admin, "--token", token] + common)
                    #expect(viaAdminReset.status == 0, "\(viaAdminReset.errors)")
                    #expect(try await client.send(.POST, send, key: TestKey(text: key)).status == 200)
                    let wrongToken = try await runTollgate(["reset", id, "--admin", admin, "--token", token + "x"] + common)
                    #expect(wrongToken.status != 0 && wrongToken.errors.contains("401"))

                    // Nothing in Redis holds the key: names and values.
                    let client2 = try RedisClient(configuration: RedisConfiguration(url: redis.url), logger: quietLogger)
                    let runner = Task { await client2.run() }
                    defer { runner.cancel() }
                    try await client2.waitUntilConnected(timeout: .seconds(5))
                    let names = try await client2.send(["KEYS", "*"]).array?.compactMap(\.string) ?? []
                    #expect(names.contains(RedisKeySource.redisKey(KeyDigest(ofKeyText: key))))
                    for name in names {
                        #expect(!name.contains(key))
                        if name.hasPrefix("tg:key:") {
                            let values = try await client2.send(["HGETALL", name]).array?.compactMap(\.string) ?? []
                            #expect(!values.contains { $0.contains(key) })
                        }
                    }

                    let revoked = try await runTollgate(["keys", "revoke", id, "--redis", redis.url] + common)
                    #expect(revoked.status == 0, "\(revoked.errors)")
                    try await waitForStatus(client, send, key: key, status: 401)
                }
                await sidecar.shutdown()
                _ = try? await task.value
            }
        }
    }
}
