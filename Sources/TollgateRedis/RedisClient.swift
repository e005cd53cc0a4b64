import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The shared way into Redis: a small fixed set of connections, used by every caller at once.
///
/// Commands are spread over the connections round-robin and pipelined on each. `run()` keeps the
/// connections open: it connects them, and when one drops it reconnects with exponential backoff and
/// jitter. While a connection is down its share of commands goes to the others; when none is up, callers
/// fail at once with `.notConnected` rather than wait. A connection with
/// `maximumPendingCommands` commands in flight refuses more with `.overloaded`.
///
/// ```swift
/// let client = try RedisClient(configuration: RedisConfiguration(host: "127.0.0.1"), logger: logger)
/// try await withThrowingDiscardingTaskGroup { group in
///     group.addTask { await client.run() }
///     let reply = try await client.send(["GET", "key"])
///     group.cancelAll()
/// }
/// ```
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    let logger: Logger
    let slots: [ConnectionSlot]
    private let nextSlot = Atomic<UInt>(0)
    private let lifecycle = Mutex<Lifecycle>(.idle)
    /// Scripts loaded through `scriptLoad`, by SHA1, so that `evalSHA` can load them again.
    let scripts = Mutex<[String: String]>([:])

    private enum Lifecycle {
        case idle, running, finished
    }

    /// - Parameters:
    ///   - configuration: where Redis is and how patient to be; validated here.
    ///   - eventLoopGroup: the loops the connections run on (each connection stays on one loop).
    ///   - logger: where connection events go; commands and their arguments are never logged.
    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger
    ) throws(RedisClientError) {
        try configuration.validate()
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "redis.endpoint"] = "\(configuration.endpointDescription)"
        self.logger = logger
        self.slots = (0..<configuration.connections).map { index in
            ConnectionSlot(index: index, eventLoop: eventLoopGroup.next())
        }
    }

    // MARK: Running

    /// Opens the connections and keeps them open until the task that runs this is cancelled; then closes
    /// them (pending commands fail with `.connectionClosed`) and returns. Call it once.
    public func run() async {
        let start = lifecycle.withLock { state -> Bool in
            guard case .idle = state else { return false }
            state = .running
            return true
        }
        guard start else {
            logger.error("RedisClient.run() was called more than once; the extra call does nothing")
            return
        }
        await withDiscardingTaskGroup { group in
            for slot in slots {
                group.addTask { await self.maintain(slot) }
            }
        }
        lifecycle.withLock { $0 = .finished }
        for slot in slots {
            slot.state.withLock { $0 = .shutdown }
        }
        logger.debug("Redis client stopped")
    }

    /// Keeps one connection open, reconnecting with backoff, until cancelled.
    private func maintain(_ slot: ConnectionSlot) async {
        var logger = self.logger
        logger[metadataKey: "redis.connection"] = "\(slot.index)"
        let backoff = ReconnectBackoff(
            minimum: configuration.reconnectBackoffMinimum,
            maximum: configuration.reconnectBackoffMaximum
        )
        var failures = 0
        while !Task.isCancelled {
            let delay: Duration
            do {
                let connection = try await RedisConnection.connect(
                    configuration: configuration,
                    eventLoop: slot.eventLoop,
                    logger: logger
                )
                slot.state.withLock { $0 = .connected(connection) }
                if failures > 0 {
                    logger.info("Reconnected to Redis", metadata: ["attempts": "\(failures + 1)"])
                } else {
                    logger.debug("Connected to Redis")
                }
                failures = 0
                await withTaskCancellationHandler {
                    try? await connection.closeFuture.get()
                } onCancel: {
                    connection.channel.close(mode: .all, promise: nil)
                }
                slot.state.withLock {
                    $0 = .disconnected(
                        RedisClientError(
                            .notConnected,
                            message: "the connection to Redis at \(configuration.endpointDescription) was lost; reconnecting"
                        )
                    )
                }
                if Task.isCancelled { break }
                logger.warning("Lost the connection to Redis; reconnecting")
                delay = backoff.delay(attempt: 0)
            } catch {
                slot.state.withLock { $0 = .disconnected(error) }
                delay = backoff.delay(attempt: failures)
                failures += 1
                logger.warning(
                    "Could not connect to Redis; retrying",
                    metadata: ["error": "\(error)", "retryIn": "\(delay)", "attempt": "\(failures)"]
                )
            }
            do {
                try await Task.sleep(for: delay)
            } catch {
                break
            }
        }
    }

    /// Waits until every connection is up, checking every few milliseconds; a startup helper.
    /// Throws `.notConnected` (with the last connection error) when `timeout` passes first.
    public func waitUntilConnected(timeout: Duration) async throws(RedisClientError) {
        let deadline = ContinuousClock.now + timeout
        while true {
            var lastError: RedisClientError?
            var up = 0
            for slot in slots {
                switch slot.state.withLock({ $0 }) {
                case .connected(let connection) where !connection.isClosed: up += 1
                case .disconnected(let error): lastError = error
                case .shutdown: throw Self.shutdownError
                default: break
                }
            }
            if up == slots.count { return }
            if ContinuousClock.now >= deadline {
                throw RedisClientError(
                    .notConnected,
                    message: "\(up) of \(slots.count) connections to Redis at \(configuration.endpointDescription) are up after \(timeout)",
                    underlying: lastError
                )
            }
            do {
                try await Task.sleep(for: .milliseconds(5))
            } catch {
                throw RedisClientError(.notConnected, message: "cancelled while waiting for Redis connections")
            }
        }
    }

    // MARK: Commands

    /// Sends one command and waits for its reply, within `configuration.commandTimeout`.
    ///
    /// Throws `.notConnected` or `.overloaded` at once when the command cannot be sent (it was not);
    /// `.serverError` for an error reply; `.timeout` or `.connectionClosed` when the command may have run
    /// (it is never sent again).
    public func send(_ arguments: [RedisArgument]) async throws(RedisClientError) -> RedisReply {
        try await pickConnection().send(arguments, timeout: configuration.commandTimeout)
    }

    /// Sends one command and waits at most `timeout` for its reply.
    public func send(_ arguments: [RedisArgument], timeout: Duration) async throws(RedisClientError) -> RedisReply {
        try await pickConnection().send(arguments, timeout: timeout)
    }

    /// Sends one command given as text arguments.
    public func send(_ arguments: [String]) async throws(RedisClientError) -> RedisReply {
        try await send(arguments.map { RedisArgument($0) })
    }

    /// Sends one command given as binary arguments.
    public func send(_ arguments: [ByteBuffer]) async throws(RedisClientError) -> RedisReply {
        try await send(arguments.map { RedisArgument($0) })
    }

    /// The next connection that is up, round-robin.
    func pickConnection() throws(RedisClientError) -> RedisConnection {
        let count = UInt(slots.count)
        let first = nextSlot.wrappingAdd(1, ordering: .relaxed).oldValue
        var lastError: RedisClientError?
        for offset in 0..<count {
            let slot = slots[Int((first &+ offset) % count)]
            switch slot.state.withLock({ $0 }) {
            case .connected(let connection):
                if !connection.isClosed { return connection }
            case .disconnected(let error):
                lastError = error
            case .idle:
                break
            case .shutdown:
                throw Self.shutdownError
            }
        }
        if lifecycle.withLock({ if case .idle = $0 { true } else { false } }) {
            throw RedisClientError(.notConnected, message: "the Redis client is not running: call run() first; the command was not sent")
        }
        throw RedisClientError(
            .notConnected,
            message: "no connection to Redis at \(configuration.endpointDescription) is up; the command was not sent",
            underlying: lastError
        )
    }

    private static var shutdownError: RedisClientError {
        RedisClientError(.shutdown, message: "the Redis client has been shut down; the command was not sent")
    }
}

/// One of the client's connections, as seen by callers: up, down (and why), or not yet tried.
final class ConnectionSlot: Sendable {
    enum State: Sendable {
        case idle
        case connected(RedisConnection)
        case disconnected(RedisClientError)
        case shutdown
    }

    let index: Int
    let eventLoop: any EventLoop
    let state = Mutex<State>(.idle)

    init(index: Int, eventLoop: any EventLoop) {
        self.index = index
        self.eventLoop = eventLoop
    }
}
