import NIOCore
import NIOEmbedded
import Testing
import TollgateTestSupport

@testable import TollgateSidecar

/// `ByteListenerHandler` over `NIOAsyncTestingChannel`: what the proxy answers itself, byte for byte,
/// with no socket and no upstream (the upstream's address is one where nothing listens, and none of
/// these requests gets that far).
@Suite struct ByteListenerHandlerTests {
    /// A handler in a testing channel, with the limiter, keys and settings of the tests' sidecar.
    static func withHandler(standIn: Bool = false, _ body: (NIOAsyncTestingChannel) async throws -> Void) async throws {
        let folder = try TestDirectory()
        defer { folder.remove() }
        _ = try folder.write("keys.yaml", keyFile(TestKey.all))
        let sidecar = try Sidecar(
            configurationFile: try folder.write("tollgate.yaml", configuration(upstream: "http://127.0.0.1:1")), logger: quietLogger)
        let shared = try byteListenerShared(sidecar, upstream: "http://127.0.0.1:1", standIn: standIn)
        let channel = NIOAsyncTestingChannel()
        try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.addHandler(ByteListenerHandler(shared: shared, idleTimeout: .seconds(30)))
        }.get()
        try await channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 9)).get()
        try await body(channel)
        _ = try? await channel.finish()
    }

    /// Everything the handler wrote, as text.
    static func written(_ channel: NIOAsyncTestingChannel) async throws -> String {
        var text = ""
        while let part = try await channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: part) }
        return text
    }

    @Test func aRequestWithoutAKeyIsAnswered401AndTheConnectionServesTheNext() async throws {
        try await Self.withHandler { channel in
            let request = "POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
            try await channel.writeInbound(ByteBuffer(string: request + request))
            let text = try await Self.written(channel)
            #expect(text.components(separatedBy: "HTTP/1.1 401 ").count == 3, "\(text)")
            #expect(text.contains("Content-Type: application/problem+json"))
            #expect(!text.contains("Connection: close"))
            #expect(channel.isActive)
        }
    }

    @Test func aHeadSplitAcrossReadsIsReadWhole() async throws {
        try await Self.withHandler { channel in
            for part in ["GET /api/v1/orgs/o/messages/1 HT", "TP/1.1\r\nHo", "st: x\r\n", "\r\n"] {
                #expect(try await Self.written(channel).isEmpty)
                try await channel.writeInbound(ByteBuffer(string: part))
            }
            let text = try await Self.written(channel)
            #expect(text.hasPrefix("HTTP/1.1 401 "), "\(text)")
        }
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("GET / HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n", 400),
    ])
    func aMalformedHeadIsRefusedAndTheConnectionEnds(request: String, status: Int) async throws {
        try await Self.withHandler { channel in
            try await channel.writeInbound(ByteBuffer(string: request))
            let text = try await Self.written(channel)
            #expect(text.hasPrefix("HTTP/1.1 \(status) "), "\(text)")
            #expect(text.contains("Connection: close"))
            #expect(text.contains("application/problem+json"))
        }
    }

    /// What the handler writes until `answers` whole answers (status lines) are out.
    static func answers(_ count: Int, from channel: NIOAsyncTestingChannel) async throws -> String {
        var text = ""
        while text.components(separatedBy: "HTTP/1.1 ").count - 1 < count || !text.hasSuffix("}") {
            text += String(buffer: try await channel.waitForOutboundWrite(as: ByteBuffer.self))
        }
        return text
    }

    /// With no upstream, the stand-in takes the upstream connection's place: an admitted request gets its
    /// answer with the RateLimit fields, with no socket anywhere.
    @Test(.timeLimit(.minutes(1))) func theStandInAnswersAnAdmittedRequest() async throws {
        try await Self.withHandler(standIn: true) { channel in
            try await channel.writeInbound(
                ByteBuffer(string: "POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\n\(TestKey.roomy.authorizationLine)Content-Length: 2\r\n\r\n{}"))
            let text = try await Self.answers(1, from: channel)
            #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(text)")
            #expect(text.contains("X-Stand-In: tollgate\r\n"))
            #expect(text.contains("RateLimit-Policy: \"burst\""))
            #expect(text.contains("\"status\":\"queued\""))
            #expect(!text.contains("Connection: close"))
            #expect(channel.isActive)
        }
    }

    /// Pipelined requests to the stand-in, one with a chunked body it reads whole (the bulk count), are
    /// answered in order, and the last one's `Connection: close` ends the connection.
    @Test(.timeLimit(.minutes(1))) func theStandInAnswersPipelinedRequestsInOrder() async throws {
        try await Self.withHandler(standIn: true) { channel in
            let key = TestKey.roomy.authorizationLine
            let body = "{\"recipients\":[\"+1\",\"+2\",\"+3\"]}"
            let chunked = String(body.utf8.count, radix: 16) + "\r\n" + body + "\r\n0\r\n\r\n"
            try await channel.writeInbound(
                ByteBuffer(
                    string: "POST /api/v1/messages/bulk HTTP/1.1\r\nHost: x\r\n\(key)Transfer-Encoding: chunked\r\n\r\n\(chunked)"
                        + "GET /api/v1/orgs/org_1/messages/m7 HTTP/1.1\r\nHost: x\r\n\(key)Connection: close\r\n\r\n"))
            let text = try await Self.answers(2, from: channel)
            let answers = text.components(separatedBy: "HTTP/1.1 ").dropFirst()
            #expect(answers.count == 2, "\(text)")
            #expect(answers.first?.contains("\"accepted\":3") == true, "\(text)")
            #expect(answers.last?.contains("\"id\":\"m7\",\"status\":\"delivered\"") == true, "\(text)")
            #expect(answers.last?.contains("Connection: close") == true, "\(text)")
        }
    }
}
