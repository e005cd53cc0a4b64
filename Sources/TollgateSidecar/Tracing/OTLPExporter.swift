import AsyncHTTPClient
import Foundation
import Logging
import Metrics
import NIOCore
import ServiceLifecycle
import Synchronization
import Tracing

/// Sends finished spans to an OTLP/HTTP collector as JSON (`POST <endpoint>/v1/traces`,
/// `application/json`), in batches, from a task of its own: the data path only appends a span to a
/// bounded queue under a lock and never waits. A span that finds the queue full is dropped, and so is a
/// batch the collector refuses or does not take in time (it is not sent again: a collector that is down
/// must not make the sidecar hold spans without bound); both are counted in
/// `tollgate_trace_spans_dropped_total{reason}` (`queue_full`, `export_failed`), the spans delivered in
/// `tollgate_trace_spans_exported_total`.
///
/// A batch goes when `batchSize` spans wait, or `interval` after the last one went; on graceful
/// shutdown, the batch on its way is let arrive and what waits is sent once more.
final class OTLPExporter: SpanSink, Service {
    /// The exporter's bounds.
    struct Limits: Sendable {
        /// The most spans waiting; more are dropped.
        var queueCapacity = 2_048
        /// The most spans in one request to the collector.
        var batchSize = 512
        /// The longest a span waits for a batch to fill.
        var interval: Duration = .seconds(1)
        /// How long the collector has to answer one request.
        var timeout: Duration = .seconds(5)
    }

    /// Spans delivered and dropped so far.
    struct Counts: Sendable, Equatable {
        var exported = 0
        var droppedQueueFull = 0
        var droppedExportFailed = 0
    }

    let url: String
    let serviceName: String
    let limits: Limits
    private let logger: Logger
    private let state = Mutex(State())
    private let exported: Counter
    private let droppedQueueFull: Counter
    private let droppedExportFailed: Counter

    private struct State {
        var queue: [FinishedSpan] = []
        /// The sending task, waiting for a batch to fill.
        var waiter: CheckedContinuation<Void, Never>?
        var counts = Counts()
        /// Graceful shutdown began: the sending loop ends.
        var stopping = false
        /// Why the last request to the collector failed; nil when it succeeded (a failure is logged
        /// once, until a request succeeds).
        var failure: String?
    }

    /// - Parameter endpoint: the collector's base URL; `/v1/traces` is appended unless it is there.
    init(endpoint: String, serviceName: String, limits: Limits = Limits(), logger: Logger, metricsFactory: any MetricsFactory) {
        var base = endpoint
        while base.hasSuffix("/") { base.removeLast() }
        url = base.hasSuffix("/v1/traces") ? base : base + "/v1/traces"
        self.serviceName = serviceName
        self.limits = limits
        self.logger = logger
        exported = Counter(label: "tollgate_trace_spans_exported_total", dimensions: [], factory: metricsFactory)
        droppedQueueFull = Counter(label: "tollgate_trace_spans_dropped_total", dimensions: [("reason", "queue_full")], factory: metricsFactory)
        droppedExportFailed = Counter(
            label: "tollgate_trace_spans_dropped_total", dimensions: [("reason", "export_failed")], factory: metricsFactory)
    }

    var counts: Counts { state.withLock { $0.counts } }

    /// Why the last request to the collector failed, nil when it succeeded.
    var failure: String? { state.withLock { $0.failure } }

    /// Queues `span`, or drops it when the queue is full. Never waits.
    func export(_ span: FinishedSpan) {
        enum Taken { case queued, full, batchReady(CheckedContinuation<Void, Never>) }
        let taken = state.withLock { state -> Taken in
            guard state.queue.count < limits.queueCapacity else {
                state.counts.droppedQueueFull += 1
                return .full
            }
            state.queue.append(span)
            if state.queue.count >= limits.batchSize, let waiter = state.waiter {
                state.waiter = nil
                return .batchReady(waiter)
            }
            return .queued
        }
        switch taken {
        case .queued: break
        case .full: droppedQueueFull.increment()
        case .batchReady(let waiter): waiter.resume()
        }
    }

    func run() async throws {
        // Not cancelled on graceful shutdown: a batch on its way is let arrive (within `timeout`).
        await withGracefulShutdownHandler {
            while true {
                await self.waitForBatch()
                if Task.isCancelled || self.state.withLock({ $0.stopping }) { return }
                await self.flush()
            }
        } onGracefulShutdown: {
            self.state.withLock { $0.stopping = true }
            self.wake()
        }
        // What waits goes once more.
        await flush()
    }

    /// Sends every span waiting, a batch at a time.
    func flush() async {
        while true {
            let batch = state.withLock { state -> [FinishedSpan] in
                let count = min(state.queue.count, limits.batchSize)
                let batch = Array(state.queue.prefix(count))
                state.queue.removeFirst(count)
                return batch
            }
            if batch.isEmpty { return }
            await send(batch)
            if batch.count < limits.batchSize { return }
        }
    }

    /// Returns when a batch is full, after `interval`, or when the task is cancelled.
    private func waitForBatch() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                if (try? await Task.sleep(for: self.limits.interval)) != nil { self.wake() }
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                    let now = state.withLock { state -> Bool in
                        if Task.isCancelled || state.stopping || state.queue.count >= limits.batchSize { return true }
                        state.waiter = waiter
                        return false
                    }
                    if now { waiter.resume() }
                }
            } onCancel: {
                self.wake()
            }
            group.cancelAll()
        }
    }

    private func wake() {
        let waiter = state.withLock { state in
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    private func send(_ batch: [FinishedSpan]) async {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        let problem: String?
        do {
            request.body = .bytes(ByteBuffer(data: try OTLPJSON.encode(batch, serviceName: serviceName)))
            let response = try await HTTPClient.shared.execute(request, timeout: TimeAmount(limits.timeout))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            problem = (200..<300).contains(response.status.code) ? nil : "the collector answered \(response.status.code)"
        } catch {
            problem = "\(error)"
        }
        let wasFailing = state.withLock { state in
            defer { state.failure = problem }
            if problem == nil { state.counts.exported += batch.count } else { state.counts.droppedExportFailed += batch.count }
            return state.failure != nil
        }
        if let problem {
            droppedExportFailed.increment(by: batch.count)
            if !wasFailing {
                logger.warning(
                    "trace export failed; spans are dropped until the collector takes them",
                    metadata: ["url": "\(url)", "error": "\(problem)", "spans": "\(batch.count)"])
            }
        } else {
            exported.increment(by: batch.count)
            if wasFailing { logger.info("trace export works again", metadata: ["url": "\(url)"]) }
        }
    }
}

/// OTLP/JSON (the protobuf JSON mapping of `ExportTraceServiceRequest`): ids in hex, 64-bit integers
/// and times as strings, enums as numbers.
enum OTLPJSON {
    static func encode(_ spans: [FinishedSpan], serviceName: String) throws -> Data {
        let request = ExportRequest(resourceSpans: [
            ResourceSpans(
                resource: Resource(attributes: [KeyValue(key: "service.name", value: .string(serviceName))]),
                scopeSpans: [ScopeSpans(scope: Scope(name: "tollgate", version: nil), spans: spans.map(OTLPSpan.init))])
        ])
        return try JSONEncoder().encode(request)
    }

    struct ExportRequest: Codable {
        var resourceSpans: [ResourceSpans]
    }

    struct ResourceSpans: Codable {
        var resource: Resource
        var scopeSpans: [ScopeSpans]
    }

    struct Resource: Codable {
        var attributes: [KeyValue]
    }

    struct ScopeSpans: Codable {
        var scope: Scope
        var spans: [OTLPSpan]
    }

    struct Scope: Codable {
        var name: String
        var version: String?
    }

    struct OTLPSpan: Codable {
        var traceId: String
        var spanId: String
        var traceState: String?
        var parentSpanId: String?
        var name: String
        var kind: Int
        var startTimeUnixNano: String
        var endTimeUnixNano: String
        var attributes: [KeyValue]
        var events: [Event]?
        var status: Status?

        init(_ span: FinishedSpan) {
            traceId = span.context.traceID.hex
            spanId = TraceContext.hex(span.context.spanID)
            traceState = span.context.traceState
            parentSpanId = span.parentSpanID.map(TraceContext.hex)
            name = span.name
            kind = OTLPJSON.kind(span.kind)
            startTimeUnixNano = String(span.startNanoseconds)
            endTimeUnixNano = String(span.endNanoseconds)
            attributes = OTLPJSON.attributes(span.attributes)
            events = span.events.isEmpty
                ? nil
                : span.events.map {
                    Event(timeUnixNano: String($0.nanosecondsSinceEpoch), name: $0.name, attributes: OTLPJSON.attributes($0.attributes))
                }
            status = span.status.map { Status(code: $0.code == .ok ? 1 : 2, message: $0.message) }
        }
    }

    struct Event: Codable {
        var timeUnixNano: String
        var name: String
        var attributes: [KeyValue]
    }

    struct Status: Codable {
        /// 0 unset, 1 ok, 2 error.
        var code: Int
        var message: String?
    }

    struct KeyValue: Codable, Equatable {
        var key: String
        var value: AnyValue
    }

    /// One attribute value: exactly one of its members is set.
    struct AnyValue: Codable, Equatable {
        var stringValue: String?
        var boolValue: Bool?
        var intValue: String?
        var doubleValue: Double?
        var arrayValue: ArrayValue?

        static func string(_ value: String) -> AnyValue { AnyValue(stringValue: value) }
    }

    struct ArrayValue: Codable, Equatable {
        var values: [AnyValue]
    }

    static func kind(_ kind: SpanKind) -> Int {
        switch kind {
        case .internal: 1
        case .server: 2
        case .client: 3
        case .producer: 4
        case .consumer: 5
        }
    }

    static func attributes(_ attributes: SpanAttributes) -> [KeyValue] {
        var values: [KeyValue] = []
        values.reserveCapacity(attributes.count)
        attributes.forEach { key, value in values.append(KeyValue(key: key, value: anyValue(value))) }
        // A stable order, so that equal spans encode equally.
        return values.sorted { $0.key < $1.key }
    }

    static func anyValue(_ attribute: SpanAttribute) -> AnyValue {
        switch attribute {
        case .int32(let value): AnyValue(intValue: String(value))
        case .int64(let value): AnyValue(intValue: String(value))
        case .double(let value): AnyValue(doubleValue: value)
        case .bool(let value): AnyValue(boolValue: value)
        case .string(let value): AnyValue(stringValue: value)
        case .int32Array(let values): AnyValue(arrayValue: ArrayValue(values: values.map { AnyValue(intValue: String($0)) }))
        case .int64Array(let values): AnyValue(arrayValue: ArrayValue(values: values.map { AnyValue(intValue: String($0)) }))
        case .doubleArray(let values): AnyValue(arrayValue: ArrayValue(values: values.map { AnyValue(doubleValue: $0) }))
        case .boolArray(let values): AnyValue(arrayValue: ArrayValue(values: values.map { AnyValue(boolValue: $0) }))
        case .stringArray(let values): AnyValue(arrayValue: ArrayValue(values: values.map { AnyValue(stringValue: $0) }))
        case .stringConvertibleArray(let values): AnyValue(arrayValue: ArrayValue(values: values.map { AnyValue(stringValue: "\($0)") }))
        case .stringConvertible(let value): AnyValue(stringValue: "\(value)")
        default: AnyValue(stringValue: "\(attribute)")
        }
    }
}
