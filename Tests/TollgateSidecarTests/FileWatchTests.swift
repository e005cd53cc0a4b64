import AsyncHTTPClient
import Foundation
import Testing
import TollgateSidecar
import TollgateTestSupport

extension EndToEnd {
    /// Reload on file change, with the files laid out as a Kubernetes ConfigMap mounts them: each name a
    /// symlink through `..data`, itself a symlink to a timestamped folder, replaced atomically on update.
    @Suite struct FileWatchTests {
        /// A ConfigMap-style volume in `root`.
        struct ConfigMapVolume {
            let root: URL
            var generation = 0

            /// Writes `files` into a new folder and points `..data` at it with one rename.
            mutating func publish(_ files: [String: String]) throws {
                generation += 1
                let folder = "..2026_12_07_00_00_0\(generation)"
                let target = root.appendingPathComponent(folder)
                try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
                for (name, text) in files {
                    try text.write(to: target.appendingPathComponent(name), atomically: false, encoding: .utf8)
                    let link = root.appendingPathComponent(name).path
                    if (try? FileManager.default.destinationOfSymbolicLink(atPath: link)) == nil {
                        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "..data/\(name)")
                    }
                }
                let temporary = root.appendingPathComponent("..data_tmp").path
                try FileManager.default.createSymbolicLink(atPath: temporary, withDestinationPath: folder)
                guard rename(temporary, root.appendingPathComponent("..data").path) == 0 else {
                    throw TestSetupError(description: "rename of ..data failed: errno \(errno)")
                }
            }
        }

        /// The value of a counter line of `/metrics`, 0 when absent.
        func counter(_ client: HTTPClient, _ admin: String, _ line: String) async throws -> Int {
            let text = try await client.send(.GET, admin + "/metrics").text
            guard let found = text.split(separator: "\n").first(where: { $0.hasPrefix(line + " ") }) else { return 0 }
            return Int(found.split(separator: " ").last ?? "") ?? 0
        }

        /// Polls until the reload counter for `result` reaches `count` (a reload is an observable event).
        func waitForReloads(_ client: HTTPClient, _ admin: String, result: String, count: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(30)
            while try await counter(client, admin, "tollgate_config_reloads_total{result=\"\(result)\"}") < count {
                guard ContinuousClock.now < deadline else {
                    throw TestSetupError(description: "no \(result) reload number \(count) within 30 s")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }

        @Test func configMapSwapReloadsKeepingCounters() async throws {
            let folder = try TestDirectory()
            defer { folder.remove() }
            var volume = ConfigMapVolume(root: folder.url)
            let config = configuration(server: "watch_interval: 50ms", basicCapacity: 3)
            try volume.publish(["tollgate.yaml": config, "keys.yaml": keyFile([.sender])])
            let sidecar = try Sidecar(configurationFile: folder.url.appendingPathComponent("tollgate.yaml").path, logger: quietLogger)
            let task = Task { try await sidecar.run() }
            defer { task.cancel() }
            let ports = try await sidecar.listeningPorts(timeout: startupTimeout)
            let base = "http://127.0.0.1:\(ports.proxy)", admin = "http://127.0.0.1:\(ports.admin)"
            try await withHTTPClient { client in
                try await waitFor(client, admin + "/readyz")
                let send = base + "/api/v1/messages/send"
                let first = try await client.send(.POST, send, key: .sender)
                #expect(first.status == 200)
                #expect(first.header("RateLimit")?.contains("\"burst\";r=2") == true)

                // A new plan capacity and a new key, published as a ConfigMap update.
                let newKey = TestKey(text: "wz_test_newcomer_0001")
                try volume.publish([
                    "tollgate.yaml": config.replacingOccurrences(of: "capacity: 3", with: "capacity: 5"),
                    "keys.yaml": keyFile([.sender, newKey]),
                ])
                try await waitForReloads(client, admin, result: "applied", count: 1)
                let second = try await client.send(.POST, send, key: .sender)
                #expect(second.header("RateLimit-Policy")?.contains("\"burst\";q=5") == true)
                // The plan changed, so its counters start afresh; the organization's day limit is unchanged and kept.
                #expect(second.header("RateLimit")?.contains("\"day\";r=998") == true)
                #expect(try await client.send(.POST, send, key: newKey).status == 200)

                // A broken file is refused; the configuration in force stays.
                try volume.publish(["tollgate.yaml": "plans: [", "keys.yaml": keyFile([.sender, newKey])])
                try await waitForReloads(client, admin, result: "refused", count: 1)
                let third = try await client.send(.POST, send, key: .sender)
                #expect(third.status == 200)
                #expect(third.header("RateLimit-Policy")?.contains("\"burst\";q=5") == true)
                #expect(try await counter(client, admin, "tollgate_config_reloads_total{result=\"applied\"}") == 1)

                // The key file alone changes (the configuration is back to the one in force): the new key is revoked.
                try volume.publish([
                    "tollgate.yaml": config.replacingOccurrences(of: "capacity: 3", with: "capacity: 5"),
                    "keys.yaml": keyFile([.sender, TestKey(text: newKey.text, revoked: true)]),
                ])
                try await waitForReloads(client, admin, result: "applied", count: 2)
                #expect(try await client.send(.POST, send, key: newKey).status == 401)
            }
            await sidecar.shutdown()
            _ = try? await task.value
        }
    }
}
