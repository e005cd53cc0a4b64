import AsyncHTTPClient
import Foundation
import NIOCore
import Testing
import TollgateSidecar

extension EndToEnd {
    /// Request bodies are the connection's inbound stream, which allows one reader at a time: the forwarder
    /// must be done reading a body before the server reads on, however early the upstream answers.
    @Suite struct ConcurrentBodyTests {
        /// A body that arrives in two parts, `pause` apart.
        struct SlowBody: AsyncSequence, Sendable {
            typealias Element = ByteBuffer
            let first: ByteBuffer
            let second: ByteBuffer
            let pause: Duration

            struct AsyncIterator: AsyncIteratorProtocol {
                var step = 0
                let body: SlowBody
                mutating func next() async throws -> ByteBuffer? {
                    step += 1
                    switch step {
                    case 1: return body.first
                    case 2:
                        try await Task.sleep(for: body.pause)
                        return body.second
                    default: return nil
                    }
                }
            }

            func makeAsyncIterator() -> AsyncIterator { AsyncIterator(body: self) }
        }

        static func post(_ client: HTTPClient, _ url: String, body: some AsyncSequence<ByteBuffer, any Error> & Sendable, length: Int)
            async throws -> (Int, String)
        {
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(TestKey.roomy.text)")
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .stream(body, length: .known(Int64(length)))
            let response = try await client.execute(request, timeout: .seconds(30))
            let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
            return (Int(response.status.code), text)
        }

        /// The upstream answers while the rest of the body is still on its way from the client: the
        /// sidecar answers, and the same connection serves the next request.
        @Test func upstreamAnsweringBeforeTheBodyArrives() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url, upstreamOptions: "response_timeout: 10s")) { sidecar in
                    try await withHTTPClient { client in
                        for _ in 0..<3 {
                            let body = SlowBody(
                                first: ByteBuffer(string: "{\"to\":\"+1555\","), second: ByteBuffer(string: "\"text\":\"hi\"}"),
                                pause: .milliseconds(200))
                            let (status, text) = try await Self.post(client, sidecar.base + "/early", body: body, length: 26)
                            #expect(status == 200)
                            #expect(text == "{\"ok\":1}")
                        }
                        let echo = try await client.send(.POST, sidecar.base + "/echo", key: .roomy, body: ByteBuffer(string: "after"))
                        #expect(echo.status == 200)
                        #expect(echo.text == "after")
                    }
                }
            }
        }

        /// 200 concurrent POSTs with bodies over several keep-alive connections, half to an upstream route
        /// that answers before reading the body: every one is answered 200 (it used to crash the process:
        /// "only allow a single Iterator to be created").
        @Test func concurrentPostsWithBodies() async throws {
            try await withUpstream { upstream in
                try await withSidecar(configuration(upstream: upstream.url, upstreamOptions: "response_timeout: 10s")) { sidecar in
                    try await withHTTPClient { client in
                        let statuses = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
                            for index in 0..<200 {
                                group.addTask {
                                    let early = index % 2 == 0
                                    let text = "{\"to\":\"+1555\(index)\",\"text\":\"hello \(index)\"}"
                                    let half = text.utf8.count / 2
                                    let body = SlowBody(
                                        first: ByteBuffer(string: String(text.prefix(half))),
                                        second: ByteBuffer(string: String(text.dropFirst(half))),
                                        pause: .milliseconds(index % 4 < 2 ? 0 : 5))
                                    let url = sidecar.base + (early ? "/early" : "/echo")
                                    let (status, answer) = try await Self.post(client, url, body: body, length: text.utf8.count)
                                    return (status, early ? answer == "{\"ok\":1}" : answer == text)
                                }
                            }
                            var all: [(Int, Bool)] = []
                            for try await result in group { all.append(result) }
                            return all
                        }
                        #expect(statuses.count == 200)
                        #expect(statuses.allSatisfy { $0.0 == 200 })
                        #expect(statuses.allSatisfy { $0.1 })
                    }
                }
            }
        }
    }
}
