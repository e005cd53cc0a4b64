import Synchronization
import Tracing

/// A finished span as an exporter gets it: a value, so that it can wait in a queue and cross threads.
struct FinishedSpan: Sendable {
    var name: String
    var kind: SpanKind
    var context: TraceContext
    var parentSpanID: UInt64?
    var startNanoseconds: UInt64
    var endNanoseconds: UInt64
    var attributes: SpanAttributes
    var status: SpanStatus?
    var events: [SpanEvent]
}

/// Where finished spans go: the OTLP exporter, or a recorder in tests. Called on the data path, so it
/// must not block.
protocol SpanSink: Sendable {
    func export(_ span: FinishedSpan)
}

/// The sidecar's tracer: W3C Trace Context in and out (`traceparent`, `tracestate`), new traces
/// sampled at `sampleRatio`, a caller's trace sampled as the caller says (parent-based sampling), and
/// each sampled span handed to `sink` when it ends. A span that is not sampled still has ids (its
/// children and the upstream learn them) but records nothing.
struct TollgateTracer: Tracer {
    typealias Span = TollgateSpan

    let sampleRatio: Double
    let sink: any SpanSink

    init(sampleRatio: Double, sink: any SpanSink) {
        self.sampleRatio = sampleRatio
        self.sink = sink
    }

    func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> ServiceContext, ofKind kind: SpanKind,
        at instant: @autoclosure () -> Instant, function: String, file fileID: String, line: UInt
    ) -> TollgateSpan {
        var context = context()
        let parent = context.traceContext
        let own: TraceContext
        if let parent {
            own = TraceContext(traceID: parent.traceID, spanID: TraceIDs.next(), sampled: parent.sampled, traceState: parent.traceState)
        } else {
            let traceID = TraceContext.TraceID(high: TraceIDs.next(), low: TraceIDs.next())
            own = TraceContext(traceID: traceID, spanID: TraceIDs.next(), sampled: sampled(traceID), traceState: nil)
        }
        context.traceContext = own
        return TollgateSpan(
            operationName, kind: kind, context: context, trace: own, parentSpanID: parent?.spanID,
            start: instant().nanosecondsSinceEpoch, sink: own.sampled ? sink : nil)
    }

    /// Whether a new trace is recorded: its id's low 53 bits as a fraction, below the ratio.
    private func sampled(_ traceID: TraceContext.TraceID) -> Bool {
        if sampleRatio >= 1 { return true }
        if sampleRatio <= 0 { return false }
        return Double(traceID.low >> 11) * 0x1p-53 < sampleRatio
    }

    func activeSpan(identifiedBy context: ServiceContext) -> TollgateSpan? {
        nil
    }

    func forceFlush() {}

    func extract<Carrier, Extract: Extractor>(_ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract)
    where Extract.Carrier == Carrier {
        guard let traceparent = extractor.extract(key: "traceparent", from: carrier) else { return }
        if let remote = TraceContext(traceparent: traceparent, tracestate: extractor.extract(key: "tracestate", from: carrier)) {
            context.traceContext = remote
        }
    }

    func inject<Carrier, Inject: Injector>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject)
    where Inject.Carrier == Carrier {
        guard let trace = context.traceContext else { return }
        injector.inject(trace.traceparent, forKey: "traceparent", into: &carrier)
        if let state = trace.traceState { injector.inject(state, forKey: "tracestate", into: &carrier) }
    }
}

/// A span of `TollgateTracer`. Its fields are set by one connection's event loop, but a span is a
/// `Sendable` reference, so they sit behind a lock.
final class TollgateSpan: Span {
    let context: ServiceContext
    let trace: TraceContext
    let parentSpanID: UInt64?
    let kind: SpanKind
    let start: UInt64
    /// Nil when the span is not sampled: it records nothing.
    private let sink: (any SpanSink)?
    private let state: Mutex<State>

    private struct State {
        var name: String
        var attributes = SpanAttributes()
        var status: SpanStatus?
        var events: [SpanEvent] = []
        var ended = false
    }

    init(
        _ name: String, kind: SpanKind, context: ServiceContext, trace: TraceContext, parentSpanID: UInt64?, start: UInt64,
        sink: (any SpanSink)?
    ) {
        self.context = context
        self.trace = trace
        self.parentSpanID = parentSpanID
        self.kind = kind
        self.start = start
        self.sink = sink
        state = Mutex(State(name: name))
    }

    var isRecording: Bool { sink != nil }

    var operationName: String {
        get { state.withLock { $0.name } }
        set { state.withLock { $0.name = newValue } }
    }

    var attributes: SpanAttributes {
        get { state.withLock { $0.attributes } }
        set { state.withLock { $0.attributes = newValue } }
    }

    func setStatus(_ status: SpanStatus) {
        state.withLock { $0.status = status }
    }

    func addEvent(_ event: SpanEvent) {
        guard isRecording else { return }
        state.withLock { $0.events.append(event) }
    }

    func recordError<Instant: TracerInstant>(_ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant) {
        guard isRecording else { return }
        var attributes = attributes
        attributes["exception.type"] = "\(type(of: error))"
        attributes["exception.message"] = "\(error)"
        addEvent(SpanEvent(name: "exception", at: instant(), attributes: attributes))
    }

    /// Links to other traces are not exported.
    func addLink(_ link: SpanLink) {}

    func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) {
        guard let sink else { return }
        let finished = state.withLock { state -> FinishedSpan? in
            if state.ended { return nil }
            state.ended = true
            return FinishedSpan(
                name: state.name, kind: kind, context: trace, parentSpanID: parentSpanID, startNanoseconds: start,
                endNanoseconds: instant().nanosecondsSinceEpoch, attributes: state.attributes, status: state.status, events: state.events)
        }
        if let finished { sink.export(finished) }
    }
}
