import Logging
import NIOCore

/// Where the reply to one command goes: a promise (connection set-up, tests) or the continuation of the
/// task that waits for it (the hot path: no future, no callback list, no extra hop).
enum RedisResponder: Sendable {
    case promise(EventLoopPromise<RedisReply>)
    case continuation(UnsafeContinuation<RedisReply, any Error>)

    func succeed(_ reply: RedisReply) {
        switch self {
        case .promise(let promise): promise.succeed(reply)
        case .continuation(let continuation): continuation.resume(returning: reply)
        }
    }

    func fail(_ error: RedisClientError) {
        switch self {
        case .promise(let promise): promise.fail(error)
        case .continuation(let continuation): continuation.resume(throwing: error)
        }
    }
}

/// One command on its way to Redis: its RESP bytes, the time by which its reply must arrive, and where
/// the reply goes.
struct RedisRequest: Sendable {
    var command: ByteBuffer
    var deadline: NIODeadline
    var responder: RedisResponder

    init(command: ByteBuffer, deadline: NIODeadline, responder: RedisResponder) {
        self.command = command
        self.deadline = deadline
        self.responder = responder
    }

    init(command: ByteBuffer, deadline: NIODeadline, promise: EventLoopPromise<RedisReply>) {
        self.init(command: command, deadline: deadline, responder: .promise(promise))
    }
}

/// The channel handler of a Redis connection: it does the I/O and follows `RedisCommandStateMachine`.
///
/// Outbound it takes commands — as `RedisRequest`s written through the pipeline, or handed to
/// `enqueue` directly by `RedisConnection` on the event loop — appends their bytes to one outbound buffer
/// and keeps their responders in order; inbound it feeds bytes to hiredis' reader and completes the
/// responders in the same order (RESP is strictly FIFO).
///
/// **Flush coalescing.** A command is not flushed at once: the first command of an event-loop tick
/// schedules one flush at the end of the tick, so the commands of concurrent callers that reach the loop
/// together leave as one buffer in one `write` system call. The exception: a caller running on the loop
/// as the last job its task executor has queued flushes at once, as nobody could join it.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    // Every stored property is used on the event loop only, never with overlapping accesses: the
    // run-time exclusivity checks (a few per command) are left out.
    @exclusivity(unchecked) private var stateMachine = RedisCommandStateMachine<RedisResponder>()
    private let decoder: RESPReplyDecoder
    private let logger: Logger
    @exclusivity(unchecked) private var context: ChannelHandlerContext?
    @exclusivity(unchecked) private var timer: Scheduled<Void>?
    @exclusivity(unchecked) private var flushScheduled = false
    /// The bytes of the commands accepted in this tick, written and flushed together.
    @exclusivity(unchecked) private var outbound: ByteBuffer
    /// Write promises given with `RedisRequest`s in this tick (rare: the client passes none).
    @exclusivity(unchecked) private var writePromises: [EventLoopPromise<Void>] = []

    /// The client's task executor on this channel's loop, when there is one.
    private let taskExecutor: EventLoopTaskExecutor?
    /// Where a subscriber connection's messages go: replies that arrive while no command waits for one.
    /// Nil on an ordinary connection, where such a reply is a protocol error.
    private let pushes: (@Sendable (RedisReply) -> Void)?

    init(logger: Logger, taskExecutor: EventLoopTaskExecutor? = nil, pushes: (@Sendable (RedisReply) -> Void)? = nil) throws(RedisClientError) {
        self.decoder = try RESPReplyDecoder()
        self.logger = logger
        self.taskExecutor = taskExecutor
        self.pushes = pushes
        self.outbound = ByteBufferAllocator().buffer(capacity: 0)
    }

    /// The number of commands waiting for a reply (for tests and diagnostics).
    var pendingCount: Int { stateMachine.pendingCount }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        outbound = context.channel.allocator.buffer(capacity: 4096)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(RedisClientError(.connectionClosed, message: "the Redis connection handler was removed; the command may have run"))
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisClientError(.connectionClosed, message: "the connection to Redis closed before the reply arrived; the command may have run"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("Redis connection error", metadata: ["error": "\(error)"])
        closeAndFailAll(
            RedisClientError(.connectionClosed, message: "the connection to Redis failed before the reply arrived; the command may have run", underlying: error),
            context: context)
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if enqueue(deadline: request.deadline, responder: request.responder, encode: { $0.writeImmutableBuffer(request.command) }) {
            if let promise { writePromises.append(promise) }
        } else {
            promise?.fail(RedisClientError(.notConnected, message: "the connection to Redis is closed; the command was not sent"))
        }
    }

    func flush(context: ChannelHandlerContext) {
        flushOutbound()
    }

    /// Accepts one command on the event loop: `encode` appends its bytes to the outbound buffer, which
    /// leaves at the end of the tick. Returns false (having failed `responder`) when the connection is
    /// closed; the command is then not written.
    @discardableResult
    func enqueue(deadline: NIODeadline, responder: RedisResponder, encode: (inout ByteBuffer) -> Void) -> Bool {
        guard let context else {
            responder.fail(RedisClientError(.notConnected, message: "the connection to Redis is closed; the command was not sent"))
            return false
        }
        switch stateMachine.send(responder, deadline: deadline) {
        case .fail(let error):
            responder.fail(error)
            return false
        case .write(let armTimer):
            if let armTimer {
                arm(at: armTimer, context: context)
            }
            encode(&outbound)
            scheduleFlush(context: context)
            return true
        }
    }

    private func scheduleFlush(context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        if let taskExecutor, taskExecutor.isRunningLastQueuedJob {
            // A caller running on this loop, and no other caller's job queued behind it in this tick:
            // nobody is left to join the write, so it leaves now (no flush task, no extra loop pass).
            flushOutbound()
            return
        }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            // The handler may have been removed in the meantime; then there is nothing left to flush.
            self.flushOutbound()
        }
    }

    private func flushOutbound() {
        flushScheduled = false
        guard let context else { return }
        if outbound.readableBytes > 0 {
            let promise: EventLoopPromise<Void>?
            if writePromises.isEmpty {
                promise = nil
            } else {
                let batch = context.eventLoop.makePromise(of: Void.self)
                for waiting in writePromises { batch.futureResult.cascade(to: waiting) }
                writePromises.removeAll()
                promise = batch
            }
            context.write(wrapOutboundOut(outbound), promise: promise)
            context.flush()
            // Usually written by now and no longer shared, so the buffer is reused without a copy.
            if outbound.capacity > 1 << 20 {
                outbound = context.channel.allocator.buffer(capacity: 4096)
            } else {
                outbound.clear()
            }
        } else {
            context.flush()
        }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        do {
            try decoder.feed(bytes)
            while let reply = try decoder.next() {
                if let pushes, stateMachine.pendingCount == 0, !stateMachine.isClosed {
                    pushes(reply)
                    continue
                }
                switch stateMachine.receivedReply(reply) {
                case .succeed(let responder, let reply):
                    responder.succeed(reply)
                case .fail(let responder, let error):
                    responder.fail(error)
                case .closeConnection(let responders, let error):
                    logger.warning("Redis connection closed", metadata: ["reason": "\(error.message)"])
                    closeAndFailAll(
                        RedisClientError(.connectionClosed, message: "the connection was closed after a protocol error; the command may have run", underlying: error),
                        context: context, first: responders, with: error)
                    return
                }
            }
        } catch {
            logger.warning("Redis connection closed", metadata: ["reason": "\(error.message)"])
            // The reader is in an error state: nothing more can be read from this connection.
            closeAndFailAll(error, context: context)
        }
    }

    // MARK: Timeouts

    private func arm(at deadline: NIODeadline, context: ChannelHandlerContext) {
        timer?.cancel()
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.timerFired()
        }
    }

    private func timerFired() {
        guard let context else { return }
        timer = nil
        switch stateMachine.timerFired(now: context.eventLoop.now) {
        case .none:
            break
        case .rearm(let deadline):
            arm(at: deadline, context: context)
        case .closeConnection(let timedOut, let others):
            logger.warning(
                "Redis command timed out; closing the connection",
                metadata: ["timedOut": "\(timedOut.count)", "alsoFailed": "\(others.count)"]
            )
            let timeout = RedisClientError(
                .timeout,
                message: "no reply from Redis within the command timeout; the command may have run and is not retried"
            )
            let closed = RedisClientError(
                .connectionClosed,
                message: "the connection was closed because an earlier command on it timed out; the command may have run"
            )
            closeAndFailAll(closed, context: context, first: timedOut, with: timeout, others: others)
        }
    }

    /// Closes the channel, then fails `first` with `firstError`, and `others` and every command still
    /// pending with `error`. Closing first: a caller resumed by the failure (possibly on another thread)
    /// must find the connection closed, not pick it again for its next command.
    private func closeAndFailAll(
        _ error: RedisClientError, context: ChannelHandlerContext, first: [RedisResponder] = [],
        with firstError: RedisClientError? = nil, others: [RedisResponder] = []
    ) {
        timer?.cancel()
        timer = nil
        let pending = stateMachine.close()
        let writes = writePromises
        writePromises.removeAll()
        context.close(promise: nil)
        for responder in first { responder.fail(firstError ?? error) }
        for responder in others { responder.fail(error) }
        for responder in pending { responder.fail(error) }
        for promise in writes { promise.fail(error) }
    }

    private func failAll(_ error: RedisClientError) {
        timer?.cancel()
        timer = nil
        for responder in stateMachine.close() {
            responder.fail(error)
        }
        for promise in writePromises { promise.fail(error) }
        writePromises.removeAll()
    }
}
