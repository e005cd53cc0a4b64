import Foundation
import NIOCore
import NIOPosix
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Why a live test could not get what it needs.
struct TestSetupError: Error, CustomStringConvertible {
    var description: String
}

/// A `redis-server` on a free loopback port, killed (SIGKILL, never `terminate()`, which a process started
/// from a test worker may ignore) when the test is done or when the test wants Redis gone mid-run.
final class RedisTestServer {
    let port: Int
    private let process: Process
    private let logPath: String

    private init(port: Int, process: Process, logPath: String) {
        self.port = port
        self.process = process
        self.logPath = logPath
    }

    var url: String { "redis://127.0.0.1:\(port)" }

    static func start() async throws -> RedisTestServer {
        guard let executable = locate("redis-server") else {
            throw TestSetupError(description: "redis-server was not found; install it (Debian: apt-get install redis-server)")
        }
        let port = try await freePort()
        let logPath = "/tmp/tollgate-sidecar-redis-\(port).log"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [
            "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", "/tmp", "--logfile", logPath,
        ]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let server = RedisTestServer(port: port, process: process, logPath: logPath)
        let deadline = ContinuousClock.now + startupTimeout
        while !(await acceptsConnections(port: port)) {
            if !process.isRunning || ContinuousClock.now > deadline {
                await server.kill()
                throw TestSetupError(description: "redis-server on port \(port) did not start")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return server
    }

    func kill() async {
        guard process.isRunning else { return }
        _ = Glibc.kill(process.processIdentifier, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        try? FileManager.default.removeItem(atPath: logPath)
    }

    static func locate(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        return directories.lazy.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func acceptsConnections(port: Int) async -> Bool {
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.milliseconds(200))
                .connect(host: "127.0.0.1", port: port).get()
            try? await channel.close()
            return true
        } catch {
            return false
        }
    }
}

/// Runs `body` with a fresh Redis, killed afterwards whatever happens.
func withRedis(_ body: (RedisTestServer) async throws -> Void) async throws {
    let server = try await RedisTestServer.start()
    do {
        try await body(server)
    } catch {
        await server.kill()
        throw error
    }
    await server.kill()
}

/// A loopback port that was free a moment ago.
func freePort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
    let port = try #require(channel.localAddress?.port)
    try await channel.close()
    return port
}
