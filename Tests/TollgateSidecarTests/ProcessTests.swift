import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization
import Testing
import TollgateSidecar
import TollgateTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Bytes a process wrote, gathered from its pipe's handler.
final class LogBuffer: Sendable {
    private let data = Mutex<Data>(Data())
    func append(_ more: Data) { data.withLock { $0.append(more) } }
    var text: String { data.withLock { String(decoding: $0, as: UTF8.self) } }
}

extension EndToEnd {
    /// `tollgate serve` as operators run it: separate processes, signals, exit status.
    @Suite struct ProcessTests {
        /// A running `tollgate serve`, its standard error collected.
        final class ServeProcess {
            let process: Process
            let proxyPort: Int
            let adminPort: Int
            private let output = LogBuffer()
            private let pipe: Pipe

            init(config: String, proxyPort: Int, adminPort: Int) throws {
                self.proxyPort = proxyPort
                self.adminPort = adminPort
                let process = Process()
                process.executableURL = URL(fileURLWithPath: try tollgateExecutable())
                process.arguments = ["serve", "--config", config]
                let pipe = Pipe()
                process.standardError = pipe
                process.standardOutput = FileHandle.nullDevice
                process.standardInput = FileHandle.nullDevice
                self.process = process
                self.pipe = pipe
                let output = self.output
                pipe.fileHandleForReading.readabilityHandler = { handle in
                    let data = handle.availableData
                    output.append(data)
                }
                try process.run()
            }

            var log: String { output.text }
            var base: String { "http://127.0.0.1:\(proxyPort)" }
            var admin: String { "http://127.0.0.1:\(adminPort)" }

            func signal(_ number: Int32) {
                _ = Glibc.kill(process.processIdentifier, number)
            }

            /// SIGTERM, then SIGKILL if it does not exit within `grace`; returns whether SIGTERM sufficed.
            @discardableResult
            func stop(grace: Duration = .seconds(10)) async -> Bool {
                guard process.isRunning else { return true }
                signal(SIGTERM)
                let deadline = ContinuousClock.now + grace
                while process.isRunning, ContinuousClock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(20))
                }
                let graceful = !process.isRunning
                if !graceful { signal(SIGKILL) }
                while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
                pipe.fileHandleForReading.readabilityHandler = nil
                return graceful
            }
        }

        static func serve(
            _ config: (Int, Int) -> String, in folder: TestDirectory, name: String = "tollgate.yaml"
        ) async throws -> ServeProcess {
            let proxy = try await freePort()
            let admin = try await freePort()
            let path = try folder.write(name, config(proxy, admin))
            return try ServeProcess(config: path, proxyPort: proxy, adminPort: admin)
        }

        /// Two sidecar processes on one Redis, 32 concurrent clients: exactly the limit is admitted.
        @Test func twoProcessesAdmitExactlyTheLimit() async throws {
            try await withRedisServer { redis in
                let folder = try TestDirectory()
                defer { folder.remove() }
                _ = try folder.write("keys.yaml", keyFile([.sender, .reader]))
                func config(_ proxy: Int, _ admin: Int) -> String {
                    """
                    plans:
                      basic:
                        limits:
                          - { name: hour, algorithm: fixed_window, limit: 100, window: 1h, scope: organization }
                    server: { port: \(proxy), admin_port: \(admin), access_log: off }
                    store: { backend: redis, url: "\(redis.url)", connections: 4 }
                    keys: { file: keys.yaml }
                    """
                }
                let first = try await Self.serve(config, in: folder, name: "a.yaml")
                let second = try await Self.serve(config, in: folder, name: "b.yaml")
                do {
                    try await withHTTPClient { client in
                        try await waitFor(client, first.admin + "/readyz")
                        try await waitFor(client, second.admin + "/readyz")
                        let statuses = try await withThrowingTaskGroup(of: [Int].self) { group in
                            for caller in 0..<32 {
                                let target = caller % 2 == 0 ? first.base : second.base
                                group.addTask {
                                    var seen: [Int] = []
                                    for _ in 0..<10 {
                                        seen.append(try await client.send(.POST, target + "/api/v1/messages/send", key: .sender).status)
                                    }
                                    return seen
                                }
                            }
                            return try await group.reduce(into: [Int]()) { $0 += $1 }
                        }
                        #expect(statuses.count == 320)
                        #expect(statuses.filter { $0 == 200 }.count == 100)
                        #expect(statuses.filter { $0 == 429 }.count == 220)
                    }
                } catch {
                    await first.stop()
                    await second.stop()
                    throw error
                }
                #expect(await first.stop())
                #expect(await second.stop())
            }
        }

        /// `server.threads` sets the number of event-loop threads the process runs (NIO names them
        /// `NIO-SGLTN-…`), as nginx's `worker_processes` does.
        @Test func threadsSetsTheEventLoopThreads() async throws {
            let folder = try TestDirectory()
            defer { folder.remove() }
            _ = try folder.write("keys.yaml", keyFile([.sender]))
            let serve = try await Self.serve(
                { proxy, admin in
                    """
                    plans:
                      basic:
                        limits:
                          - { name: burst, algorithm: token_bucket, capacity: 3, refill: { tokens: 1, per: 10s } }
                    server: { port: \(proxy), admin_port: \(admin), access_log: off, threads: 3 }
                    keys: { file: keys.yaml }
                    """
                }, in: folder)
            do {
                try await withHTTPClient { client in
                    try await waitFor(client, serve.admin + "/readyz")
                    #expect(try await client.send(.POST, serve.base + "/api/v1/messages/send", key: .sender).status == 200)
                }
                let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(serve.process.processIdentifier)/task")
                let names = tasks.compactMap { try? String(contentsOfFile: "/proc/\(serve.process.processIdentifier)/task/\($0)/comm", encoding: .utf8) }
                #expect(names.filter { $0.hasPrefix("NIO-SGLTN-") }.count == 3, "threads: \(names.sorted())")
            } catch {
                await serve.stop()
                throw error
            }
            #expect(await serve.stop())
        }

        /// SIGHUP with a good file applies it, counters kept; with a bad file, the old configuration stays.
        @Test func hangupReloadsGoodFilesAndRefusesBadOnes() async throws {
            let folder = try TestDirectory()
            defer { folder.remove() }
            _ = try folder.write("keys.yaml", keyFile([.sender, .reader]))
            let proxy = try await freePort()
            let admin = try await freePort()
            func config(routeScope: String, extraPlan: String = "") -> String {
                """
                plans:
                  basic:
                    limits:
                      - { name: burst, algorithm: token_bucket, capacity: 3, refill: { tokens: 1, per: 1h } }
                \(extraPlan)
                server: { port: \(proxy), admin_port: \(admin), watch_files: false }
                keys: { file: keys.yaml }
                routes:
                  - { method: POST, path: /api/v1/messages/send, scope: \(routeScope) }
                """
            }
            let path = try folder.write("tollgate.yaml", config(routeScope: "messages:send"))
            let serve = try ServeProcess(config: path, proxyPort: proxy, adminPort: admin)
            do {
                try await withHTTPClient { client in
                    try await waitFor(client, serve.admin + "/readyz")
                    let url = serve.base + "/api/v1/messages/send"
                    #expect(try await client.send(.POST, url, key: .sender).status == 200)
                    #expect(try await client.send(.POST, url, key: .sender).status == 200)
                    #expect(try await client.send(.POST, url, key: .reader).status == 403)

                    // A good file: the reader's scope now suffices; the sender's burst continues where it was.
                    _ = try folder.write("tollgate.yaml", config(routeScope: "messages:read", extraPlan: "  spare:\n    limits:\n      - { name: m, algorithm: fixed_window, limit: 1, window: 1m }"))
                    serve.signal(SIGHUP)
                    try await eventually(within: .seconds(30)) { serve.log.contains("configuration reloaded") }
                    #expect(try await client.send(.POST, url, key: .reader).status == 200)
                    #expect(try await client.send(.POST, url, key: .sender).status == 200)  // the third of three
                    #expect(try await client.send(.POST, url, key: .sender).status == 429)

                    // A bad file: refused, logged with the field, and the configuration in force stays.
                    _ = try folder.write("tollgate.yaml", config(routeScope: "two words"))
                    serve.signal(SIGHUP)
                    try await eventually(within: .seconds(30)) { serve.log.contains("configuration reload refused") }
                    #expect(serve.log.contains("routes[0].scope"))
                    #expect(try await client.send(.POST, url, key: .reader).status == 200)  // the good file's scope is still in force
                    #expect(serve.process.isRunning)
                    let metrics = try await client.send(.GET, serve.admin + "/metrics")
                    #expect(metrics.text.contains("tollgate_config_reloads_total{result=\"applied\"} 1"))
                    #expect(metrics.text.contains("tollgate_config_reloads_total{result=\"refused\"} 1"))
                }
            } catch {
                await serve.stop()
                throw error
            }
            #expect(await serve.stop(), "SIGTERM stops the sidecar gracefully")
            #expect(!serve.log.contains(TestKey.sender.text), "no key in the log")
            #expect(serve.log.contains("key=\(TestKey.sender.hash.prefix(8))"))
        }

        @Test func invalidConfigurationRefusesToStartNamingTheField() async throws {
            let folder = try TestDirectory()
            defer { folder.remove() }
            _ = try folder.write("keys.yaml", keyFile(TestKey.all))
            let path = try folder.write("tollgate.yaml", configuration(extra: "").replacingOccurrences(of: "limits: key", with: "limits: some"))
            let serve = try ServeProcess(config: path, proxyPort: 0, adminPort: 0)
            let deadline = ContinuousClock.now + startupTimeout
            while serve.process.isRunning, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(!serve.process.isRunning)
            #expect(serve.process.terminationStatus == 1)
            try await eventually(within: .seconds(10)) { serve.log.contains("routes[2].limits") }
            #expect(serve.log.contains("tollgate.yaml:"))
            #expect(serve.log.contains("expected one of all, key, organization or none"))
            await serve.stop()
        }
    }
}
