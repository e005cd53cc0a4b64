import Logging
import NIOCore

/// One command on its way to Redis: its RESP bytes, the time by which its reply must arrive, and the
/// promise the reply completes.
struct RedisRequest: Sendable {
    var command: ByteBuffer
    var deadline: NIODeadline
    var promise: EventLoopPromise<RedisReply>
}

/// The channel handler of a Redis connection: it does the I/O and follows `RedisCommandStateMachine`.
///
/// Outbound it takes `RedisRequest`s, writes their bytes and keeps their promises in order; inbound it
/// feeds bytes to hiredis' reader and completes promises in the same order (RESP is strictly FIFO).
///
/// **Flush coalescing.** A write is not flushed at once: the first write of an event-loop tick schedules
/// one flush at the end of the tick, so the commands of concurrent callers that reach the loop together
/// leave in one `writev` system call.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private var stateMachine = RedisCommandStateMachine<EventLoopPromise<RedisReply>>()
    private let decoder: RESPReplyDecoder
    private let logger: Logger
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    private var flushScheduled = false

    init(logger: Logger) throws(RedisClientError) {
        self.decoder = try RESPReplyDecoder()
        self.logger = logger
    }

    /// The number of commands waiting for a reply (for tests and diagnostics).
    var pendingCount: Int { stateMachine.pendingCount }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
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
        failAll(RedisClientError(.connectionClosed, message: "the connection to Redis failed before the reply arrived; the command may have run", underlying: error))
        context.close(promise: nil)
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        switch stateMachine.send(request.promise, deadline: request.deadline) {
        case .fail(let error):
            request.promise.fail(error)
            promise?.fail(error)
        case .write(let armTimer):
            if let armTimer {
                arm(at: armTimer, context: context)
            }
            context.write(wrapOutboundOut(request.command), promise: promise)
            scheduleFlush(context: context)
        }
    }

    private func scheduleFlush(context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            // The handler may have been removed in the meantime; then there is nothing left to flush.
            self.context?.flush()
        }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        do {
            try decoder.feed(bytes)
            while let reply = try decoder.next() {
                switch stateMachine.receivedReply(reply) {
                case .succeed(let promise, let reply):
                    promise.succeed(reply)
                case .fail(let promise, let error):
                    promise.fail(error)
                case .closeConnection(let promises, let error):
                    logger.warning("Redis connection closed", metadata: ["reason": "\(error.message)"])
                    for promise in promises { promise.fail(error) }
                    failAll(RedisClientError(.connectionClosed, message: "the connection was closed after a protocol error; the command may have run", underlying: error))
                    context.close(promise: nil)
                    return
                }
            }
        } catch {
            logger.warning("Redis connection closed", metadata: ["reason": "\(error.message)"])
            // The reader is in an error state: nothing more can be read from this connection.
            failAll(error)
            context.close(promise: nil)
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
            for promise in timedOut { promise.fail(timeout) }
            let closed = RedisClientError(
                .connectionClosed,
                message: "the connection was closed because an earlier command on it timed out; the command may have run"
            )
            for promise in others { promise.fail(closed) }
            context.close(promise: nil)
        }
    }

    private func failAll(_ error: RedisClientError) {
        timer?.cancel()
        timer = nil
        for promise in stateMachine.close() {
            promise.fail(error)
        }
    }
}
