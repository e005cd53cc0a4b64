import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing
import TollgateSidecar
import TollgateTestSupport

/// How long a server in a test may take to start. Generous: the whole package's tests share two cores
/// and the cooperative thread pool, and CPU-bound suites can hold both threads for many seconds.
let startupTimeout: Duration = .seconds(120)

/// Tests never bootstrap logging; this logger drops everything.
let quietLogger = Logger(label: "tollgate.sidecar.tests", factory: { _ in SwiftLogNoOpLogHandler() })

// MARK: The upstream

/// What the test upstream received.
struct Received: Sendable {
    let method: String
    let path: String
    let headers: HTTPFields
    let authority: String?
}

/// A real HTTP upstream on a free port: a Hummingbird application that records what reaches it.
///
/// - `POST /api/v1/messages/send`: 200 JSON, with hop-by-hop fields of its own to be stripped
///   (`Connection: X-Up-Hop`, `X-Up-Hop`, `Keep-Alive`, `Proxy-Authenticate`) and one to be kept (`X-Up-Plain`).
/// - `POST /echo`: streams the request body back as it arrives.
/// - `GET /slow`: answers after 3 s.
/// - `GET /stall`: 200, streams "part", then nothing for 5 s.
/// - `GET /redirect`: 302 to `/api/v1/messages/send`.
/// - `GET /api/v1/orgs/{org}/messages/{id}`: 200.
final class TestUpstream: Sendable {
    let port: Int
    private let recorder: Recorder
    private let task: Task<Void, any Error>

    private init(port: Int, recorder: Recorder, task: Task<Void, any Error>) {
        self.port = port
        self.recorder = recorder
        self.task = task
    }

    var url: String { "http://127.0.0.1:\(port)" }
    var received: [Received] { recorder.entries.withLock { $0 } }
    var count: Int { recorder.entries.withLock { $0.count } }

    final class Recorder: Sendable {
        let entries = Mutex<[Received]>([])
    }

    static func start() async throws -> TestUpstream {
        let recorder = Recorder()
        let router = Router()
        router.add(middleware: RecordingMiddleware(recorder: recorder))
        router.post("/api/v1/messages/send") { request, _ -> Response in
            _ = try await request.body.collect(upTo: 1 << 20)
            return Response(
                status: .ok,
                headers: [
                    .contentType: "application/json", .connection: "X-Up-Hop", HTTPField.Name("X-Up-Hop")!: "secret",
                    HTTPField.Name("Keep-Alive")!: "timeout=5", .proxyAuthenticate: "Basic", HTTPField.Name("X-Up-Plain")!: "1",
                ],
                body: ResponseBody(byteBuffer: ByteBuffer(string: "{\"queued\":true}")))
        }
        // Answers at once, before the request body has arrived (as nginx's `return 200` does), and
        // leaves the body to be drained.
        router.post("/early") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "application/json", .contentLength: "8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: "{\"ok\":1}")))
        }
        router.post("/echo") { request, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: ResponseBody(asyncSequence: request.body))
        }
        router.get("/slow") { request, _ -> String in
            let milliseconds = request.uri.queryParameters.get("ms").flatMap { Int($0) } ?? 3_000
            try await Task.sleep(for: .milliseconds(milliseconds))
            return "late"
        }
        router.get("/stall") { _, _ -> Response in
            // A part of the answer, then silence longer than the tests' read timeouts.
            Response(
                status: .ok, headers: [.contentType: "text/plain"],
                body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: "part"))
                    try await Task.sleep(for: .seconds(5))
                    try await writer.write(ByteBuffer(string: "rest"))
                    try await writer.finish(nil)
                })
        }
        router.get("/redirect") { _, _ -> Response in
            Response(status: .found, headers: [.location: "/api/v1/messages/send"])
        }
        router.get("/api/v1/orgs/{org}/messages/{id}") { _, context -> String in
            "{\"id\":\"\(context.parameters.get("id") ?? "")\"}"
        }
        let (port, task) = try await startTestServer(router, "the test upstream")
        return TestUpstream(port: port, recorder: recorder, task: task)
    }

    func stop() async {
        task.cancel()
        _ = try? await task.value
    }
}

/// Runs `router` on a free port of loopback: the port once it listens, and the task that runs it
/// (cancel it to stop the server).
func startTestServer(_ router: Router<BasicRequestContext>, _ what: String) async throws -> (port: Int, task: Task<Void, any Error>) {
    let bound = Mutex<Int?>(nil)
    let app = Application(
        router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
        onServerRunning: { channel in bound.withLock { $0 = channel.localAddress?.port } }, logger: quietLogger)
    let task = Task { try await app.run() }
    let deadline = ContinuousClock.now + startupTimeout
    while true {
        if let port = bound.withLock({ $0 }) { return (port, task) }
        guard ContinuousClock.now < deadline else {
            task.cancel()
            throw TestSetupError(description: "\(what) did not start")
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// Runs `body` with a fresh upstream, stopped afterwards.
func withUpstream(_ body: (TestUpstream) async throws -> Void) async throws {
    try await using(try await TestUpstream.start(), stop: { await $0.stop() }, body)
}

/// Runs `body` with `server`, then stops it, whether `body` throws or not.
func using<Server>(_ server: Server, stop: (Server) async -> Void, _ body: (Server) async throws -> Void) async throws {
    do {
        try await body(server)
    } catch {
        await stop(server)
        throw error
    }
    await stop(server)
}

struct RecordingMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let recorder: TestUpstream.Recorder

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        recorder.entries.withLock {
            $0.append(Received(method: request.method.rawValue, path: request.head.path ?? "", headers: request.headers, authority: request.head.authority))
        }
        return try await next(request, context)
    }
}
