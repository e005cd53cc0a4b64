import HTTPTypes
import NIOCore
import NIOPosix
import Testing
import TollgateTestSupport

@testable import TollgateSidecar

extension EndToEnd {
    /// A client connection's requests of one kind reuse the limiter's admission (`RequestKind`,
    /// `RateLimiter.Admission`): over a real sidecar, upstream and connection, the reuse never outlives
    /// what it skips.
    @Suite struct KeptAdmissionTests {
        /// One client connection, kept open across requests.
        final class Connection {
            let channel: Channel
            let collector = RawCollector()

            init(port: Int) async throws {
                let collector = collector
                channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
                    }
                    .connect(host: "127.0.0.1", port: port).get()
            }

            /// Sends `request` and waits for the `count`-th whole answer on this connection: its status.
            func send(_ request: String, answer count: Int) async throws -> Int? {
                try await channel.writeAndFlush(ByteBuffer(string: request))
                let deadline = ContinuousClock.now + .seconds(10)
                while ContinuousClock.now < deadline {
                    let statuses = Self.statuses(collector.state.withLock { $0.data })
                    if statuses.count >= count { return statuses[count - 1] }
                    try await Task.sleep(for: .milliseconds(5))
                }
                return nil
            }

            /// The statuses of the whole answers (heads and `Content-Length` bodies) in `bytes`.
            static func statuses(_ bytes: [UInt8]) -> [Int] {
                var statuses: [Int] = []
                var rest = bytes[...]
                let end = Array("\r\n\r\n".utf8)
                while let headEnd = rest.firstRange(of: end) {
                    let head = String(decoding: rest[..<headEnd.lowerBound], as: UTF8.self)
                    let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                        .flatMap { Int($0.dropFirst(15).trimmingPrefix(" ")) } ?? 0
                    guard rest.distance(from: headEnd.upperBound, to: rest.endIndex) >= length, let status = Int(head.dropFirst(9).prefix(3))
                    else { break }
                    statuses.append(status)
                    rest = rest[(headEnd.upperBound + length)...]
                }
                return statuses
            }
        }

        static func send(_ key: TestKey) -> String {
            "POST /api/v1/messages/send HTTP/1.1\r\nHost: api\r\n\(key.authorizationLine)Content-Length: 2\r\n\r\n{}"
        }

        @Test func aKeyRevokedByAReloadIsRefusedOnTheConnectionThatUsedIt() async throws {
            try await revokedOnTheSameConnection(store: "store: { backend: memory }")
        }

        /// The same on the Redis store, whose checks go in a task (`RateLimiter.judge(reusing:)`).
        @Test func onTheRedisStoreToo() async throws {
            try await withRedisServer { redis in
                try await revokedOnTheSameConnection(store: "store: { backend: redis, url: \"\(redis.url)\" }")
            }
        }

        func revokedOnTheSameConnection(store: String) async throws {
            try await withUpstream { upstream in
                let folder = try TestDirectory()
                defer { folder.remove() }
                try await withSidecar(configuration(upstream: upstream.url, store: store), directory: folder) { sidecar in
                    let connection = try await Connection(port: sidecar.proxyPort)
                    defer { connection.channel.close(promise: nil) }
                    #expect(try await connection.send(Self.send(.roomy), answer: 1) == 200)
                    #expect(try await connection.send(Self.send(.roomy), answer: 2) == 200)
                    var revoked = TestKey.roomy
                    revoked.revoked = true
                    _ = try folder.write("keys.yaml", keyFile([revoked]))
                    #expect(sidecar.sidecar.reload())
                    #expect(try await connection.send(Self.send(.roomy), answer: 3) == 401)
                    #expect(upstream.count == 2)
                }
            }
        }

        @Test func anotherKeyOnTheSameConnectionIsJudgedAsItself() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url)) { sidecar in
                    let connection = try await Connection(port: sidecar.proxyPort)
                    defer { connection.channel.close(promise: nil) }
                    #expect(try await connection.send(Self.send(.roomy), answer: 1) == 200)
                    #expect(try await connection.send(Self.send(.revokedKey), answer: 2) == 401)
                    #expect(try await connection.send(Self.send(.reader), answer: 3) == 403)  // a scope it lacks
                    #expect(try await connection.send(Self.send(.roomy), answer: 4) == 200)
                    #expect(upstream.received.map { $0.headers[HTTPField.Name("X-Tollgate-Key-Id")!] } == Array(repeating: KeyDigest(ofKeyText: TestKey.roomy.text).keyID, count: 2))
                }
            }
        }
    }
}
