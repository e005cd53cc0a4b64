import HTTPTypes
import NIOCore
import Tracing
import TollgateHTTP

/// Tracing as the byte listener sees it: the tracer, and where the upstream is (for the forward
/// span). `ByteListenerShared.tracing` is nil when tracing is off, and a connection reads it once.
struct ListenerTracing: Sendable {
    let tracer: TollgateTracer
    let upstreamHost: String
    let upstreamPort: Int
}

/// The spans of one request on the byte listener: the request (a server span, child of the client's
/// `traceparent` when it sent one), the check (the key, the route, the plan, the store's decision) and
/// the forward to the upstream (a client span, whose context the upstream gets as `traceparent`). Made
/// only when tracing is on; the handler keeps it with the request and ends it with the request.
struct RequestTrace {
    private let tracing: ListenerTracing
    private let request: TollgateSpan
    private let method: HTTPRequest.Method?
    private var check: TollgateSpan?
    private var forward: TollgateSpan?
    private var upstreamStatus: Int?

    /// Starts the request's span, reading the client's `traceparent` and `tracestate` from the head.
    init(_ tracing: ListenerTracing, head: RequestHead, in bytes: UnsafeRawBufferPointer, method: HTTPRequest.Method?, path: String) {
        self.tracing = tracing
        self.method = method
        var caller = TraceFields()
        bytes.forEachField(in: head.fields) { name, value in
            if name.count == 11, bytes.equalsIgnoringCase(name, "traceparent") {
                // A repeated traceparent is not valid: the trace starts anew.
                caller.traceparent = caller.traceparent == nil ? String(decoding: bytes[value], as: UTF8.self) : ""
            } else if name.count == 10, bytes.equalsIgnoringCase(name, "tracestate") {
                let state = String(decoding: bytes[value], as: UTF8.self)
                caller.tracestate = caller.tracestate.map { $0 + "," + state } ?? state
            }
        }
        var context = ServiceContext.topLevel
        tracing.tracer.extract(caller, into: &context, using: TraceFields.Reader())
        request = tracing.tracer.startSpan(method?.rawValue ?? "HTTP", context: context, ofKind: .server)
        if request.isRecording {
            var attributes = SpanAttributes()
            attributes["http.request.method"] = method?.rawValue ?? "_OTHER"
            let query = path.utf8.firstIndex(of: UInt8(ascii: "?")) ?? path.endIndex
            attributes["url.path"] = String(path[..<query])
            attributes["network.protocol.version"] = head.version == .http10 ? "1.0" : "1.1"
            request.attributes = attributes
        }
    }

    /// The limiter is asked.
    mutating func checkStarted() {
        check = tracing.tracer.startSpan("tollgate.check", context: request.context, ofKind: .internal)
    }

    /// The limiter answered: what it decided and why, and what it learnt on the way. The key appears
    /// only as its fingerprint.
    mutating func checkEnded(_ judgement: RateLimiter.Judgement) {
        guard let check else { return }
        self.check = nil
        let outcome: RateLimitOutcome
        let admitted: Bool
        switch judgement {
        case .admitted(let admittedOutcome):
            outcome = admittedOutcome
            admitted = true
        case .refused(_, let refusedOutcome):
            outcome = refusedOutcome
            admitted = false
        }
        if check.isRecording {
            var attributes = SpanAttributes()
            attributes["tollgate.decision"] = admitted ? "admitted" : "refused"
            if let refusal = outcome.refusal { attributes["tollgate.refusal"] = refusal }
            if let route = outcome.route { attributes["tollgate.route"] = route }
            if let identity = outcome.identity {
                attributes["tollgate.plan"] = identity.plan
                attributes["tollgate.organization"] = identity.organization
            }
            if let fingerprint = outcome.fingerprint { attributes["tollgate.key.fingerprint"] = fingerprint }
            if let cached = outcome.keyFromCache { attributes["tollgate.key.cached"] = cached }
            if let latency = outcome.storeLatency { attributes["tollgate.store.latency_us"] = Self.microseconds(latency) }
            attributes["tollgate.cost"] = outcome.cost
            check.attributes = attributes
            if outcome.refusal == "store_unavailable" || outcome.refusal == "registry_unavailable" {
                check.setStatus(SpanStatus(code: .error, message: outcome.refusal))
            }
        }
        check.end()
        if request.isRecording, let route = outcome.route {
            request.operationName = (method?.rawValue ?? "HTTP") + " " + route
            request.attributes["http.route"] = route
        }
    }

    /// The request goes upstream: the forward span starts, and its context is written into the
    /// upstream's head as `traceparent` (and `tracestate`), in place of the client's.
    mutating func forwardStarted(into head: inout ByteBuffer) {
        let span = tracing.tracer.startSpan("tollgate.forward", context: request.context, ofKind: .client)
        forward = span
        tracing.tracer.inject(span.context, into: &head, using: HeadWriter())
        if span.isRecording {
            var attributes = SpanAttributes()
            attributes["http.request.method"] = method?.rawValue ?? "_OTHER"
            attributes["server.address"] = tracing.upstreamHost
            attributes["server.port"] = tracing.upstreamPort
            span.attributes = attributes
        }
    }

    /// The upstream's answer began: its status, and the time it took to come.
    mutating func upstreamAnswered(status: Int, since sent: ContinuousClock.Instant) {
        upstreamStatus = status
        guard let forward, forward.isRecording else { return }
        forward.attributes["http.response.status_code"] = status
        forward.attributes["tollgate.upstream.latency_us"] = Self.microseconds(.now - sent)
    }

    /// The request's answer is out (or the client left): every span still open ends.
    func finish(status: Int) {
        if let check {
            // The client left before the limiter answered.
            check.end()
        }
        if let forward {
            if upstreamStatus == nil {
                let why = status == 504 ? "the upstream did not answer in time" : status == 499 ? "the client left" : "the upstream failed"
                forward.attributes["error.type"] = status == 504 ? "timeout" : status == 499 ? "cancelled" : "upstream_error"
                forward.setStatus(SpanStatus(code: .error, message: why))
            }
            forward.end()
        }
        if request.isRecording {
            request.attributes["http.response.status_code"] = status
            if status >= 500 { request.setStatus(SpanStatus(code: .error)) }
        }
        request.end()
    }

    private static func microseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000
    }
}

/// The trace fields of a client's request, as the tracer reads them.
struct TraceFields: Sendable {
    var traceparent: String?
    var tracestate: String?

    struct Reader: Extractor {
        func extract(key: String, from carrier: TraceFields) -> String? {
            switch key {
            case "traceparent": carrier.traceparent
            case "tracestate": carrier.tracestate
            default: nil
            }
        }
    }
}

/// Writes trace fields as field lines of a head being built.
struct HeadWriter: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout ByteBuffer) {
        carrier.writeString(key)
        carrier.writeStaticString(": ")
        carrier.writeString(value)
        carrier.writeStaticString("\r\n")
    }
}
