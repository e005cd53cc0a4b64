import DequeModule
import Histogram
import NIOCore
import NIOHTTP1
import NIOPosix

/// The request every connection sends, built once.
struct RequestTemplate: Sendable {
    let head: HTTPRequestHead
    let body: ByteBuffer
}

/// One connection's share of the load, confined to its event loop: keeps the requests that fell due while
/// the connection was busy or down, sends them one at a time and records each answer's latency from the
/// moment it fell due. Reconnects when the connection fails.
final class ConnectionDriver {
    private let eventLoop: any EventLoop
    private let options: Options
    private let request: RequestTemplate
    private let schedule: Schedule
    /// Requests due before this instant are warm-up: sent, not recorded.
    private let measureStart: Int64
    /// No request falls due from this instant on.
    private let measureEnd: Int64
    /// After this instant, what is still unanswered is counted as such and the driver stops.
    private let drainEnd: Int64
    private let finished: EventLoopPromise<Void>

    private var nextIndex = 0
    private var backlog = Deque<Int64>()
    private var inFlight: Int64?
    private var status = 0
    private var channel: (any Channel)?
    private var connecting = false
    private var done = false

    private(set) var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    private(set) var outcomes = Outcomes()
    /// Due time (µs from the measured start), latency (µs) and status of every measured request.
    private(set) var log: [(UInt64, UInt64, Int)] = []

    init(eventLoop: any EventLoop, options: Options, request: RequestTemplate, schedule: Schedule,
         measureStart: Int64, measureEnd: Int64, drainEnd: Int64) {
        self.eventLoop = eventLoop
        self.options = options
        self.request = request
        self.schedule = schedule
        self.measureStart = measureStart
        self.measureEnd = measureEnd
        self.drainEnd = drainEnd
        finished = eventLoop.makePromise()
    }

    var finishedFuture: EventLoopFuture<Void> { finished.futureResult }

    func start() {
        eventLoop.assertInEventLoop()
        connect()
        armTimer()
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        eventLoop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(drainEnd))) { bound.value.finish() }
    }

    private func armTimer() {
        guard !done else { return }
        let due = schedule.due(nextIndex)
        guard due < measureEnd else { return }
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        eventLoop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(due))) {
            let driver = bound.value
            driver.backlog.append(due)
            driver.nextIndex += 1
            driver.armTimer()
            driver.pump()
        }
    }

    private func connect() {
        guard !done, channel == nil, !connecting else { return }
        connecting = true
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseHandler(driver: bound))
                }
            }
            .connect(host: options.host, port: options.port)
            .whenComplete { result in
                let driver = bound.value
                driver.connecting = false
                switch result {
                case .success(let channel):
                    if driver.done {
                        channel.close(promise: nil)
                    } else {
                        driver.channel = channel
                        driver.pump()
                    }
                case .failure:
                    driver.outcomes.connectFailures += 1
                    driver.eventLoop.scheduleTask(in: .milliseconds(20)) { bound.value.connect() }
                }
            }
    }

    private func pump() {
        guard !done, inFlight == nil, let channel, let due = backlog.popFirst() else { return }
        inFlight = due
        status = 0
        channel.write(HTTPClientRequestPart.head(request.head), promise: nil)
        if request.body.readableBytes > 0 {
            channel.write(HTTPClientRequestPart.body(.byteBuffer(request.body)), promise: nil)
        }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
    }

    fileprivate func responseHead(_ head: HTTPResponseHead) { status = Int(head.status.code) }

    fileprivate func responseEnd() {
        guard let due = inFlight else { return }
        inFlight = nil
        record(due: due, status: status)
        pump()
        if nextIndexExhausted, backlog.isEmpty, inFlight == nil { finish() }
    }

    fileprivate func connectionClosed() {
        channel = nil
        if let due = inFlight {
            inFlight = nil
            record(due: due, status: 0)
        }
        guard !done else { return }
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        eventLoop.scheduleTask(in: .milliseconds(5)) { bound.value.connect() }
    }

    private var nextIndexExhausted: Bool { schedule.due(nextIndex) >= measureEnd }

    private func record(due: Int64, status: Int) {
        guard due >= measureStart, !done else { return }
        let now = Int64(NIODeadline.now().uptimeNanoseconds)
        let latency = UInt64(max(1, (now - due) / 1000))
        _ = histogram.record(latency)
        if status == 0 {
            outcomes.unanswered += 1
        } else {
            outcomes.byStatus[String(status), default: 0] += 1
        }
        if options.requestsFile != nil {
            log.append((UInt64((due - measureStart) / 1000), latency, status))
        }
    }

    /// Ends the run for this connection: whatever is still due or in flight is recorded as unanswered.
    private func finish() {
        guard !done else { return }
        for due in backlog + (inFlight.map { [$0] } ?? []) { record(due: due, status: 0) }
        backlog.removeAll()
        inFlight = nil
        done = true
        channel?.close(promise: nil)
        finished.succeed(())
    }
}

/// Hands a connection's answers to its driver.
final class ResponseHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let driver: NIOLoopBound<ConnectionDriver>

    init(driver: NIOLoopBound<ConnectionDriver>) { self.driver = driver }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): driver.value.responseHead(head)
        case .body: break
        case .end: driver.value.responseEnd()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        driver.value.connectionClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
