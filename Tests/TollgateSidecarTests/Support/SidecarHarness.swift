import AsyncHTTPClient
import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing
import TollgateSidecar
import TollgateTestSupport

// MARK: Keys and configuration

/// A key of the tests: its plaintext (sent by the client) and what the registry says about it.
struct TestKey: Sendable {
    let text: String
    var org = "org_1"
    var plan = "basic"
    var scopes = ["messages:send", "messages:read"]
    var expiresAt: Int64?
    var revoked = false

    var hash: String { KeyDigest(ofKeyText: text).hex }
    /// The `Authorization` field line carrying this key, CRLF included (for raw requests).
    var authorizationLine: String { "Authorization: Bearer \(text)\r\n" }

    static let sender = TestKey(text: "wz_test_sender_0001")
    static let reader = TestKey(text: "wz_test_reader_0001", scopes: ["messages:read"])
    static let revokedKey = TestKey(text: "wz_test_revoked_0001", revoked: true)
    static let expired = TestKey(text: "wz_test_expired_0001", expiresAt: 1_577_836_800)
    static let roomy = TestKey(text: "wz_test_roomy_0001", plan: "roomy")
    static let otherOrg = TestKey(text: "wz_test_other_0002", org: "org_2")
    static let all = [sender, reader, revokedKey, expired, roomy, otherOrg]
}

/// A key file holding `keys` (hashes only).
func keyFile(_ keys: [TestKey]) -> String {
    var out = "keys:\n"
    for key in keys {
        out += "  - sha256: \(key.hash)\n    org: \(key.org)\n    plan: \(key.plan)\n"
        out += "    scopes: [\(key.scopes.joined(separator: ", "))]\n"
        if let expiresAt = key.expiresAt { out += "    expires_at: \(expiresAt)\n" }
        if key.revoked { out += "    revoked: true\n" }
    }
    return out
}

/// A configuration: two plans (`basic`: a burst of 3, refilled one per 10 s; `roomy`: practically
/// unlimited), the message API's routes, and the given sections.
func configuration(
    upstream: String? = nil, store: String = "store: { backend: memory }", keys: String = "keys: { file: keys.yaml }",
    server: String = "max_body_size: 32MiB, idle_timeout: 1s, watch_files: false", upstreamOptions: String = "response_timeout: 1s",
    basicCapacity: Int = 3, unmatched: String = "pass", extra: String = ""
) -> String {
    """
    plans:
      basic:
        limits:
          - { name: burst, algorithm: token_bucket, capacity: \(basicCapacity), refill: { tokens: 1, per: 10s } }
          - { name: day, algorithm: fixed_window, limit: 1000, window: 1d, scope: organization }
      roomy:
        limits:
          - { name: burst, algorithm: token_bucket, capacity: 1000000, refill: { tokens: 1000000, per: 1s } }
    server: { host: 127.0.0.1, port: 0, admin_port: 0, access_log: off, \(server) }
    upstream: { \(upstream.map { "url: \"\($0)\", " } ?? "")\(upstreamOptions) }
    \(store)
    \(keys)
    routes:
      - { method: POST, path: /api/v1/messages/send, scope: messages:send }
      - { method: POST, path: /api/v1/messages/bulk, scope: messages:send, cost: { per_item: recipients, max_body_size: 4KiB } }
      - { method: GET, path: "/api/v1/orgs/{org}/messages/{id}", scope: messages:read, limits: key }
      - { method: POST, path: /echo, scope: messages:send }
    unmatched: \(unmatched)
    \(extra)
    """
}

/// A folder of its own for a test's files.
final class TestDirectory: Sendable {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-sidecar-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func write(_ name: String, _ text: String) throws -> String {
        let path = url.appendingPathComponent(name).path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func remove() {
        try? FileManager.default.removeItem(at: url)
    }
}

// MARK: A sidecar in process

/// A sidecar running in this process on free ports.
final class RunningSidecar: Sendable {
    let sidecar: Sidecar
    let proxyPort: Int
    let adminPort: Int
    private let task: Task<Void, any Error>

    init(sidecar: Sidecar, proxyPort: Int, adminPort: Int, task: Task<Void, any Error>) {
        self.sidecar = sidecar
        self.proxyPort = proxyPort
        self.adminPort = adminPort
        self.task = task
    }

    var base: String { "http://127.0.0.1:\(proxyPort)" }
    var admin: String { "http://127.0.0.1:\(adminPort)" }

    /// Graceful shutdown, waiting until it is done.
    func stop() async {
        await sidecar.shutdown()
        _ = try? await task.value
    }
}

/// Starts a sidecar from `config` (and `keys` as keys.yaml beside it), waits until `/readyz` says its
/// store and key registry answer (its Redis connections are up, when it has any) — as an orchestrator's
/// readiness probe would before sending traffic — runs `body`, stops it.
func withSidecar(
    _ config: String, keys: [TestKey] = TestKey.all, directory: TestDirectory? = nil, _ body: (RunningSidecar) async throws -> Void
) async throws {
    let folder = try directory ?? TestDirectory()
    defer { if directory == nil { folder.remove() } }
    _ = try folder.write("keys.yaml", keyFile(keys))
    let path = try folder.write("tollgate.yaml", config)
    let sidecar = try Sidecar(configurationFile: path, logger: quietLogger)
    let task = Task { try await sidecar.run() }
    let running: RunningSidecar
    do {
        let ports = try await sidecar.listeningPorts(timeout: startupTimeout)
        running = RunningSidecar(sidecar: sidecar, proxyPort: ports.proxy, adminPort: ports.admin, task: task)
        let deadline = ContinuousClock.now + startupTimeout
        while try await rawExchange(port: ports.admin, Array("GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)).status != 200 {
            guard ContinuousClock.now < deadline else { throw TestSetupError(description: "the sidecar did not become ready") }
            try await Task.sleep(for: .milliseconds(20))
        }
    } catch {
        task.cancel()
        throw error
    }
    do {
        try await body(running)
    } catch {
        await running.stop()
        throw error
    }
    await running.stop()
}

// MARK: A real HTTP client

/// A response as the tests look at it.
struct Answer: Sendable {
    let status: Int
    let headers: HTTPHeaders
    let body: ByteBuffer

    var text: String { String(buffer: body) }
    func header(_ name: String) -> String? { headers.first(name: name) }
    var json: [String: Any]? { try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] }
}

/// Runs `body` with an AsyncHTTPClient that does not follow redirects, shut down afterwards.
func withHTTPClient(_ body: (HTTPClient) async throws -> Void) async throws {
    let client = HTTPClient(
        eventLoopGroupProvider: .singleton,
        configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: .seconds(30))))
    do {
        try await body(client)
    } catch {
        try? await client.shutdown()
        throw error
    }
    try await client.shutdown()
}

extension HTTPClient {
    func send(
        _ method: HTTPMethod = .POST, _ url: String, key: TestKey? = nil, headers: [(String, String)] = [], body: ByteBuffer? = nil
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key.text)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(body) }
        let response = try await execute(request, timeout: .seconds(30))
        let collected = try await response.body.collect(upTo: 64 << 20)
        return Answer(status: Int(response.status.code), headers: response.headers, body: collected)
    }
}

// MARK: Raw bytes over TCP

/// What came back on a raw connection, and whether the server closed it.
struct RawAnswer {
    let text: String
    let closedByServer: Bool
    var status: Int? {
        guard text.hasPrefix("HTTP/1.1 ") else { return nil }
        return Int(text.dropFirst(9).prefix(3))
    }
}

/// Sends `bytes` on a fresh connection (then, with `halfClose`, closes the sending side: a FIN) and
/// collects what comes back until the server closes or `timeout`.
func rawExchange(port: Int, _ bytes: [UInt8], halfClose: Bool = false, timeout: Duration = .seconds(5)) async throws -> RawAnswer {
    let collector = RawCollector()
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelOption(.allowRemoteHalfClosure, value: true)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
        }
        .connect(host: "127.0.0.1", port: port).get()
    try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    if halfClose { try await channel.close(mode: .output) }
    let deadline = ContinuousClock.now + timeout
    while !collector.state.withLock({ $0.closed }), ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(10))
    }
    let (data, closed) = collector.state.withLock { ($0.data, $0.closed) }
    try? await channel.close()
    return RawAnswer(text: String(decoding: data, as: UTF8.self), closedByServer: closed)
}

final class RawCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    struct State {
        var data: [UInt8] = []
        var closed = false
    }
    let state = Mutex(State())

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        state.withLock { $0.data += Array(buffer.readableBytesView) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { state.withLock { $0.closed = true } }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.withLock { $0.closed = true }
        context.fireChannelInactive()
    }
}

// MARK: Processes

/// The `tollgate` executable built next to this test binary.
func tollgateExecutable() throws -> String {
    let testBinary = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
    var directory = testBinary.deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = directory.appendingPathComponent("tollgate").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    throw TestSetupError(description: "the tollgate executable was not found near \(testBinary.path); build it with `swift build`")
}

/// Polls `url` until it answers `status` (a listener up, a sidecar ready).
func waitFor(_ client: HTTPClient, _ url: String, status: Int = 200, timeout: Duration = startupTimeout) async throws {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let answer = try? await client.send(.GET, url), answer.status == status { return }
        guard ContinuousClock.now < deadline else { throw TestSetupError(description: "\(url) did not answer \(status) within \(timeout)") }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// Buffers as an async sequence (a request body for AsyncHTTPClient).
struct BufferStream: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let buffers: [ByteBuffer]

    init(_ buffers: [ByteBuffer]) {
        self.buffers = buffers
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        var remaining: ArraySlice<ByteBuffer>
        mutating func next() async -> ByteBuffer? {
            remaining.popFirst()
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(remaining: buffers[...]) }
}

/// The end-to-end suites, one test at a time: each starts servers, clients and processes, and the whole
/// package's tests share two cores; run side by side they would starve each other and everyone else.
@Suite(.serialized) struct EndToEnd {}
