import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import MetricsTestKit
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing
import Tracing
import TollgateTestSupport

@testable import TollgateSidecar

// MARK: What the tests record

/// A span sink that keeps every span, for the tests to wait for and read.
final class RecordedSpans: SpanSink {
    private let spans = Mutex<[FinishedSpan]>([])

    func export(_ span: FinishedSpan) {
        spans.withLock { $0.append(span) }
    }

    var all: [FinishedSpan] { spans.withLock { $0 } }

    /// The spans once at least `count` have ended (a request's spans end as its answer goes out, which
    /// the client may see first).
    func waitFor(_ count: Int, timeout: Duration = startupTimeout) async throws -> [FinishedSpan] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let now = all
            if now.count >= count { return now }
            guard ContinuousClock.now < deadline else { throw TestSetupError(description: "\(count) spans expected, \(now.count) ended") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }
}

/// A real OTLP/HTTP collector on a free port: a Hummingbird application that keeps every
/// `POST /v1/traces` and answers it with `status`.
final class TestCollector: Sendable {
    struct Post: Sendable {
        let contentType: String?
        let body: Data
    }

    let port: Int
    private let state: State
    private let task: Task<Void, any Error>

    private init(port: Int, state: State, task: Task<Void, any Error>) {
        self.port = port
        self.state = state
        self.task = task
    }

    var posts: [Post] { state.posts.withLock { $0 } }

    /// The status every next request is answered with.
    func answer(_ status: HTTPResponse.Status) {
        state.status.withLock { $0 = status }
    }

    private final class State: Sendable {
        let posts = Mutex<[Post]>([])
        let status = Mutex(HTTPResponse.Status.ok)
    }

    var url: String { "http://127.0.0.1:\(port)" }

    static func start() async throws -> TestCollector {
        let state = State()
        let router = Router()
        router.post("/v1/traces") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 16 << 20)
            state.posts.withLock { $0.append(Post(contentType: request.headers[.contentType], body: Data(body.readableBytesView))) }
            return Response(status: state.status.withLock { $0 }, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: "{}")))
        }
        let (port, task) = try await startTestServer(router, "the test collector")
        return TestCollector(port: port, state: state, task: task)
    }

    /// The spans of every request received, decoded from their JSON: `resourceSpans[].scopeSpans[].spans[]`,
    /// each with its resource's `service.name`.
    func spans() throws -> [(service: String?, span: [String: Any])] {
        var spans: [(String?, [String: Any])] = []
        for post in posts {
            let root = try #require(try JSONSerialization.jsonObject(with: post.body) as? [String: Any])
            for resource in root["resourceSpans"] as? [[String: Any]] ?? [] {
                let attributes = (resource["resource"] as? [String: Any])?["attributes"] as? [[String: Any]] ?? []
                let service = attributes.first { $0["key"] as? String == "service.name" }
                    .flatMap { ($0["value"] as? [String: Any])?["stringValue"] as? String }
                for scope in resource["scopeSpans"] as? [[String: Any]] ?? [] {
                    for span in scope["spans"] as? [[String: Any]] ?? [] { spans.append((service, span)) }
                }
            }
        }
        return spans
    }

    /// Waits until the spans received number at least `count`.
    func waitForSpans(_ count: Int) async throws -> [(service: String?, span: [String: Any])] {
        let deadline = ContinuousClock.now + startupTimeout
        while true {
            let spans = try spans()
            if spans.count >= count { return spans }
            guard ContinuousClock.now < deadline else { throw TestSetupError(description: "\(count) spans expected, \(spans.count) received") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    func stop() async {
        task.cancel()
        _ = try? await task.value
    }
}

/// An OTLP attribute's value as a string: `stringValue`, `intValue`, or `boolValue` written out.
func otlpAttribute(_ span: [String: Any], _ key: String) -> String? {
    let attributes = span["attributes"] as? [[String: Any]] ?? []
    guard let value = attributes.first(where: { $0["key"] as? String == key })?["value"] as? [String: Any] else { return nil }
    if let string = value["stringValue"] as? String { return string }
    if let int = value["intValue"] as? String { return int }
    if let bool = value["boolValue"] as? Bool { return String(bool) }
    return nil
}

extension FinishedSpan {
    func string(_ key: String) -> String? {
        if case .string(let value)? = attributes.get(key) { return value }
        return nil
    }

    func int(_ key: String) -> Int64? {
        switch attributes.get(key) {
        case .int64(let value)?: value
        case .int32(let value)?: Int64(value)
        default: nil
        }
    }

    func bool(_ key: String) -> Bool? {
        if case .bool(let value)? = attributes.get(key) { return value }
        return nil
    }
}

extension EndToEnd {
    /// Spans of the byte listener's requests, W3C trace context in and out, and the OTLP exporter
    /// against a real collector; tracing off adds nothing.
    @Suite struct TracingTests {
        static let clientTrace = "0af7651916cd43dd8448eb211c80319c"
        static let clientSpan = "b7ad6b7169203331"

        static func listenerTracing(_ sink: any SpanSink, ratio: Double = 1, upstream: TestUpstream) -> ListenerTracing {
            ListenerTracing(tracer: TollgateTracer(sampleRatio: ratio, sink: sink), upstreamHost: "127.0.0.1", upstreamPort: upstream.port)
        }

        /// A client's traced request: the request span is the client span's child, the check and the
        /// forward are the request's, and the upstream gets the forward span's context (the client's
        /// `tracestate` with it) in place of the client's.
        @Test func admittedRequestMakesThreeSpansAndPropagatesTheForwardSpan() async throws {
            let recorded = RecordedSpans()
            try await withUpstream { upstream in
                try await withByteListener(upstream: upstream.url, tracing: Self.listenerTracing(recorded, upstream: upstream)) { port in
                    try await withHTTPClient { client in
                        let answer = try await client.send(
                            .POST, "http://127.0.0.1:\(port)/api/v1/messages/send", key: .sender,
                            headers: [("traceparent", "00-\(Self.clientTrace)-\(Self.clientSpan)-01"), ("tracestate", "vendor=abc")],
                            body: ByteBuffer(string: "{\"to\":\"+1\"}"))
                        #expect(answer.status == 200, "\(answer.text)")
                    }
                }
                let spans = try await recorded.waitFor(3)
                #expect(spans.count == 3)
                let request = try #require(spans.first { $0.kind == .server })
                let check = try #require(spans.first { $0.name == "tollgate.check" })
                let forward = try #require(spans.first { $0.name == "tollgate.forward" })

                // One trace, the client's; the request under the client's span, the others under the request.
                for span in spans { #expect(span.context.traceID.hex == Self.clientTrace) }
                #expect(request.parentSpanID.map(TraceContext.hex) == Self.clientSpan)
                #expect(check.parentSpanID == request.context.spanID)
                #expect(forward.parentSpanID == request.context.spanID)
                #expect(Set(spans.map(\.context.spanID)).count == 3)
                #expect(forward.kind == .client && check.kind == .internal)

                // The upstream got the forward span's context, not the client's.
                let received = try #require(upstream.received.first)
                #expect(received.headers[values: HTTPField.Name("traceparent")!] == [forward.context.traceparent])
                #expect(forward.context.traceparent == "00-\(Self.clientTrace)-\(TraceContext.hex(forward.context.spanID))-01")
                #expect(received.headers[values: HTTPField.Name("tracestate")!] == ["vendor=abc"])

                #expect(request.name == "POST /api/v1/messages/send")
                #expect(request.string("http.route") == "/api/v1/messages/send")
                #expect(request.int("http.response.status_code") == 200)
                #expect(check.string("tollgate.decision") == "admitted")
                #expect(check.string("tollgate.refusal") == nil)
                #expect(check.string("tollgate.route") == "/api/v1/messages/send")
                #expect(check.string("tollgate.plan") == "basic")
                #expect(check.string("tollgate.organization") == "org_1")
                #expect(check.string("tollgate.key.fingerprint") == String(TestKey.sender.hash.prefix(8)))
                // The listener's first lookup of this key: from the key file, not from the cache.
                #expect(check.bool("tollgate.key.cached") == false)
                #expect((check.int("tollgate.store.latency_us") ?? -1) >= 0)
                #expect(check.int("tollgate.cost") == 1)
                #expect(forward.int("http.response.status_code") == 200)
                #expect((forward.int("tollgate.upstream.latency_us") ?? -1) >= 0)
                #expect(forward.int("server.port") == Int64(upstream.port))
                #expect(forward.status == nil)
                // The key itself is nowhere in any span.
                for span in spans {
                    span.attributes.forEach { _, value in #expect(!"\(value)".contains(TestKey.sender.text)) }
                }
                #expect(check.startNanoseconds >= request.startNanoseconds && forward.startNanoseconds >= check.startNanoseconds)
            }
        }

        /// A second request of the same key on the listener is decided from the key cache; a refusal
        /// has no forward span, says why, and never reaches the upstream.
        @Test func cachedKeyAndRefusal() async throws {
            let recorded = RecordedSpans()
            try await withUpstream { upstream in
                try await withByteListener(upstream: upstream.url, tracing: Self.listenerTracing(recorded, upstream: upstream)) { port in
                    try await withHTTPClient { client in
                        for _ in 0..<2 {
                            let answer = try await client.send(.GET, "http://127.0.0.1:\(port)/api/v1/orgs/org_1/messages/m1", key: .roomy)
                            #expect(answer.status == 200, "\(answer.text)")
                        }
                        let refused = try await client.send(.POST, "http://127.0.0.1:\(port)/api/v1/messages/send")
                        #expect(refused.status == 401)
                    }
                }
                let spans = try await recorded.waitFor(8)
                let checks = spans.filter { $0.name == "tollgate.check" }
                #expect(checks.count == 3)
                #expect(checks.filter { $0.bool("tollgate.key.cached") == true }.count == 1)
                let refusedCheck = try #require(checks.first { $0.string("tollgate.decision") == "refused" })
                #expect(refusedCheck.string("tollgate.refusal") == "missing_key")
                #expect(refusedCheck.string("tollgate.key.fingerprint") == nil)
                let refusedRequest = try #require(spans.first { $0.kind == .server && $0.int("http.response.status_code") == 401 })
                #expect(refusedCheck.parentSpanID == refusedRequest.context.spanID)
                #expect(!spans.contains { $0.name == "tollgate.forward" && $0.context.traceID == refusedRequest.context.traceID })
                // Without a traceparent, each request starts its own trace.
                #expect(Set(spans.filter { $0.kind == .server }.map(\.context.traceID)).count == 3)
                #expect(spans.filter { $0.kind == .server }.allSatisfy { $0.parentSpanID == nil })
                #expect(upstream.count == 2)
            }
        }

        /// A new trace the ratio does not sample records nothing, yet the upstream learns its ids (not
        /// sampled); a caller's sampled trace is recorded whatever the ratio; a malformed traceparent
        /// starts a new trace.
        @Test func samplingFollowsTheRatioAndTheCaller() async throws {
            let recorded = RecordedSpans()
            try await withUpstream { upstream in
                try await withByteListener(upstream: upstream.url, tracing: Self.listenerTracing(recorded, ratio: 0, upstream: upstream)) { port in
                    try await withHTTPClient { client in
                        let url = "http://127.0.0.1:\(port)/api/v1/orgs/org_1/messages/m1"
                        let answer1 = try await client.send(.GET, url, key: .roomy)
                        #expect(answer1.status == 200, "\(answer1.text)")
                        let answer2 = try await client.send(.GET, url, key: .roomy, headers: [("traceparent", "00-\(Self.clientTrace)-\(Self.clientSpan)-01")])
                        #expect(answer2.status == 200, "\(answer2.text)")
                        let answer3 = try await client.send(.GET, url, key: .roomy, headers: [("traceparent", "00-\(Self.clientTrace.uppercased())-\(Self.clientSpan)-01")])
                        #expect(answer3.status == 200, "\(answer3.text)")
                    }
                }
                let spans = try await recorded.waitFor(3)
                let received = upstream.received.map { $0.headers[HTTPField.Name("traceparent")!] ?? "" }
                #expect(received.count == 3)
                // Not sampled: ids all the same, flag 00.
                let unsampled = try #require(TraceContext(traceparent: received[0], tracestate: nil))
                #expect(!unsampled.sampled && unsampled.traceID.hex != Self.clientTrace)
                // The caller's sampled trace, recorded.
                #expect(received[1].hasPrefix("00-\(Self.clientTrace)-") && received[1].hasSuffix("-01"))
                #expect(spans.allSatisfy { $0.context.traceID.hex == Self.clientTrace })
                // Uppercase hex is not a valid traceparent: a new trace, not sampled at ratio 0.
                #expect(!received[2].contains(Self.clientTrace) && received[2].hasSuffix("-00"))
                #expect(recorded.all.count == 3)
            }
        }

        /// Tracing off: the client's trace fields go upstream as they came, none is added, and the
        /// sidecar made no tracer (so no span).
        @Test func offAddsNothing() async throws {
            try await withUpstream { upstream in
                try await withByteListener(upstream: upstream.url) { port in
                    try await withHTTPClient { client in
                        let url = "http://127.0.0.1:\(port)/api/v1/orgs/org_1/messages/m1"
                        let answer4 = try await client.send(.GET, url, key: .roomy)
                        #expect(answer4.status == 200, "\(answer4.text)")
                        let answer5 = try await client.send(.GET, url, key: .roomy, headers: [("traceparent", "client-value"), ("tracestate", "a=1")])
                        #expect(answer5.status == 200, "\(answer5.text)")
                    }
                }
                let received = upstream.received
                #expect(received.count == 2)
                #expect(received[0].headers[HTTPField.Name("traceparent")!] == nil)
                #expect(received[0].headers[HTTPField.Name("tracestate")!] == nil)
                #expect(received[1].headers[values: HTTPField.Name("traceparent")!] == ["client-value"])
                #expect(received[1].headers[values: HTTPField.Name("tracestate")!] == ["a=1"])
            }
            let folder = try TestDirectory()
            defer { folder.remove() }
            _ = try folder.write("keys.yaml", keyFile(TestKey.all))
            let off = try Sidecar(
                configurationFile: try folder.write(
                    "tollgate.yaml", configuration(upstream: "http://127.0.0.1:1", extra: "tracing: { enabled: false, endpoint: http://127.0.0.1:1 }")),
                logger: quietLogger)
            #expect(off.traceExporter == nil)
        }

        /// `tollgate serve` with `tracing` in its file: the spans of a request reach a real collector
        /// as OTLP JSON, under the configured service name.
        @Test func sidecarExportsToACollector() async throws {
            try await using(try await TestCollector.start(), stop: { await $0.stop() }) { collector in
                try await withUpstream { upstream in
                    let config = configuration(
                        upstream: upstream.url,
                        extra: "tracing: { enabled: true, endpoint: \"\(collector.url)\", service_name: tollgate-test }")
                    try await withSidecar(config) { sidecar in
                        try await withHTTPClient { client in
                            let answer = try await client.send(
                                .POST, sidecar.base + "/api/v1/messages/send", key: .sender,
                                headers: [("traceparent", "00-\(Self.clientTrace)-\(Self.clientSpan)-01")])
                            #expect(answer.status == 200, "\(answer.text)")
                        }
                        let spans = try await collector.waitForSpans(3)
                        #expect(spans.allSatisfy { $0.service == "tollgate-test" })
                        #expect(spans.allSatisfy { $0.span["traceId"] as? String == Self.clientTrace })
                        let forward = try #require(spans.first { $0.span["name"] as? String == "tollgate.forward" }?.span)
                        let forwardID = try #require(forward["spanId"] as? String)
                        #expect(upstream.received.first?.headers[HTTPField.Name("traceparent")!] == "00-\(Self.clientTrace)-\(forwardID)-01")
                        let check = try #require(spans.first { $0.span["name"] as? String == "tollgate.check" }?.span)
                        #expect(otlpAttribute(check, "tollgate.decision") == "admitted")
                        #expect(otlpAttribute(check, "tollgate.plan") == "basic")
                        let metrics = try await rawExchange(
                            port: sidecar.adminPort, Array("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
                        #expect(metrics.text.contains("tollgate_trace_spans_exported_total"))
                    }
                }
            }
        }
    }

    /// The OTLP/HTTP JSON exporter against a real collector on loopback: what it posts, batches,
    /// and what it drops when the queue is full or the collector fails.
    @Suite struct OTLPExporterTests {
        static func span(_ name: String, parent: UInt64? = 7, attributes: SpanAttributes = [:]) -> FinishedSpan {
            FinishedSpan(
                name: name, kind: .client,
                context: TraceContext(traceID: .init(high: 0x0af7_6519_16cd_43dd, low: 0x8448_eb21_1c80_319c), spanID: 0xb7ad_6b71_6920_3331, sampled: true, traceState: "v=1"),
                parentSpanID: parent, startNanoseconds: 1_700_000_000_000_000_000, endNanoseconds: 1_700_000_000_000_250_000,
                attributes: attributes, status: SpanStatus(code: .error, message: "timeout"), events: [])
        }

        static func exporter(_ endpoint: String, _ limits: OTLPExporter.Limits = .init()) -> OTLPExporter {
            OTLPExporter(endpoint: endpoint, serviceName: "svc", limits: limits, logger: quietLogger, metricsFactory: TestMetrics())
        }

        @Test func postsOTLPJSON() async throws {
            try await using(try await TestCollector.start(), stop: { await $0.stop() }) { collector in
                let exporter = Self.exporter(collector.url)
                var attributes = SpanAttributes()
                attributes["http.response.status_code"] = 504
                attributes["tollgate.key.cached"] = true
                attributes["tollgate.route"] = "/a"
                attributes["ratio"] = 0.5
                exporter.export(Self.span("tollgate.forward", attributes: attributes))
                exporter.export(Self.span("root", parent: nil))
                await exporter.flush()
                #expect(exporter.counts == .init(exported: 2))
                let posts = collector.posts
                #expect(posts.count == 1)
                #expect(posts.first?.contentType == "application/json")
                let spans = try collector.spans()
                #expect(spans.count == 2)
                #expect(spans.allSatisfy { $0.service == "svc" })
                let forward = try #require(spans.first?.span)
                #expect(forward["traceId"] as? String == "0af7651916cd43dd8448eb211c80319c")
                #expect(forward["spanId"] as? String == "b7ad6b7169203331")
                #expect(forward["parentSpanId"] as? String == "0000000000000007")
                #expect(forward["traceState"] as? String == "v=1")
                #expect(forward["name"] as? String == "tollgate.forward")
                #expect(forward["kind"] as? Int == 3)
                #expect(forward["startTimeUnixNano"] as? String == "1700000000000000000")
                #expect(forward["endTimeUnixNano"] as? String == "1700000000000250000")
                #expect((forward["status"] as? [String: Any])?["code"] as? Int == 2)
                #expect(otlpAttribute(forward, "http.response.status_code") == "504")
                #expect(otlpAttribute(forward, "tollgate.key.cached") == "true")
                #expect(otlpAttribute(forward, "tollgate.route") == "/a")
                let ratio = (forward["attributes"] as? [[String: Any]])?.first { $0["key"] as? String == "ratio" }?["value"] as? [String: Any]
                #expect(ratio?["doubleValue"] as? Double == 0.5)
                #expect(spans.last?.span["parentSpanId"] == nil)
            }
        }

        /// A full batch goes without waiting for the interval; on shutdown, what waits goes.
        @Test func aFullBatchGoesAtOnceAndShutdownSendsTheRest() async throws {
            try await using(try await TestCollector.start(), stop: { await $0.stop() }) { collector in
                let exporter = Self.exporter(collector.url, .init(queueCapacity: 100, batchSize: 3, interval: .seconds(3_600)))
                let group = ServiceGroup(configuration: .init(services: [exporter], logger: quietLogger))
                let running = Task { try await group.run() }
                for index in 0..<3 { exporter.export(Self.span("s\(index)")) }
                #expect(try await collector.waitForSpans(3).count == 3)
                exporter.export(Self.span("last"))
                await group.triggerGracefulShutdown()
                try await running.value
                #expect(try collector.spans().count == 4)
                #expect(exporter.counts == .init(exported: 4), "\(exporter.failure ?? "")")
            }
        }

        /// A full queue drops the newest spans; a collector that refuses a batch, or is not there, costs
        /// that batch; both are counted by reason, and nothing waits for the collector.
        @Test func dropsAreCounted() async throws {
            try await using(try await TestCollector.start(), stop: { await $0.stop() }) { collector in
                let factory = TestMetrics()
                let exporter = OTLPExporter(
                    endpoint: collector.url + "/", serviceName: "svc", limits: .init(queueCapacity: 2), logger: quietLogger, metricsFactory: factory)
                #expect(exporter.url == collector.url + "/v1/traces")
                for index in 0..<5 { exporter.export(Self.span("s\(index)")) }
                #expect(exporter.counts.droppedQueueFull == 3)
                collector.answer(.serviceUnavailable)
                await exporter.flush()
                #expect(exporter.counts == .init(exported: 0, droppedQueueFull: 3, droppedExportFailed: 2))
                collector.answer(.ok)
                exporter.export(Self.span("again"))
                await exporter.flush()
                #expect(exporter.counts.exported == 1)
                let queueFull = try factory.expectCounter("tollgate_trace_spans_dropped_total", [("reason", "queue_full")])
                let exportFailed = try factory.expectCounter("tollgate_trace_spans_dropped_total", [("reason", "export_failed")])
                let exported = try factory.expectCounter("tollgate_trace_spans_exported_total")
                #expect(queueFull.totalValue == 3 && exportFailed.totalValue == 2 && exported.totalValue == 1)
            }
            // Nothing listens: the client tries to connect until the request's time is up.
            let down = Self.exporter("http://127.0.0.1:1", .init(timeout: .milliseconds(200)))
            down.export(Self.span("lost"))
            await down.flush()
            #expect(down.counts.droppedExportFailed == 1)
        }

        @Test(arguments: [
            ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", true),
            ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", true),
            ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later", true),
            ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later", false),
            ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", false),
            ("00-00000000000000000000000000000000-b7ad6b7169203331-01", false),
            ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", false),
            ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", false),
            ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01", false),
            ("", false),
        ])
        func traceparentIsParsedStrictly(value: String, valid: Bool) {
            let context = TraceContext(traceparent: value, tracestate: "a=1")
            #expect((context != nil) == valid)
            if let context, value.hasPrefix("00-"), value.count == 55 {
                #expect(context.traceparent == value)
                #expect(context.traceState == "a=1")
            }
        }
    }
}
