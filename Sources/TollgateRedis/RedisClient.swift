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
    /// The connections grouped by event loop, each group with a task executor on its loop.
    let loops: [LoopSlots]
    private let nextSlot = Atomic<UInt>(0)
    private let lifecycle = Mutex<Lifecycle>(.idle)
    /// Scripts loaded through `scriptLoad`, by SHA1, so that `evalSHA` can load them again.
    let scripts = Mutex<[String: String]>([:])
    /// Made once from `configuration.tls` and shared by every connection.
    let tls: RedisTLSContext?
    /// Connections that dropped and whose first reconnection has not finished yet.
    private let recovering = Atomic<Int>(0)
    /// Established connections that dropped while the client ran (not counting its own shutdown).
    private let losses = Atomic<Int>(0)
    /// Told of each lost connection (a cluster refreshes its map, Sentinel asks for the primary again).
    private let lossObserver = Mutex<(@Sendable () -> Void)?>(nil)

    private enum Lifecycle {
        case idle, running, finished
    }

    /// - Parameters:
    ///   - configuration: where Redis is and how patient to be; validated here, and the TLS files it
    ///     names are read here (an unreadable or invalid file throws `.invalidConfiguration` naming it).
    ///   - eventLoopGroup: the loops the connections run on (each connection stays on one loop).
    ///   - logger: where connection events go; commands and their arguments are never logged.
    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger
    ) throws(RedisClientError) {
        try configuration.validate()
        self.configuration = configuration
        tls = try RedisTLSContext.make(for: configuration)
        var logger = logger
        logger[metadataKey: "redis.endpoint"] = "\(configuration.endpointDescription)"
        self.logger = logger
        let slots = (0..<configuration.connections).map { index in
            ConnectionSlot(index: index, eventLoop: eventLoopGroup.next())
        }
        self.slots = slots
        var distinct: [any EventLoop] = []
        for slot in slots where !distinct.contains(where: { $0 === slot.eventLoop }) {
            distinct.append(slot.eventLoop)
        }
        self.loops = distinct.map { loop in LoopSlots(eventLoop: loop, slots: slots.filter { $0.eventLoop === loop }) }
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
        // From a lost connection until the attempt that follows it has finished: commands that find no
        // connection up wait for that attempt (see `withConnection`).
        var recoveringFromLoss = false
        func recovered() {
            if recoveringFromLoss {
                recoveringFromLoss = false
                recovering.subtract(1, ordering: .relaxed)
            }
        }
        defer { recovered() }
        while !Task.isCancelled {
            let delay: Duration
            do {
                let connection = try await RedisConnection.connect(
                    configuration: configuration,
                    eventLoop: slot.eventLoop,
                    taskExecutor: loops.first { $0.eventLoop === slot.eventLoop }?.executor,
                    tls: tls,
                    logger: logger
                )
                slot.state.withLock { $0 = .connected(connection) }
                recovered()
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
                recoveringFromLoss = true
                recovering.add(1, ordering: .relaxed)
                losses.add(1, ordering: .relaxed)
                lossObserver.withLock { $0 }?()
                delay = backoff.delay(attempt: 0)
            } catch {
                slot.state.withLock { $0 = .disconnected(error) }
                recovered()
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

    /// Calls `observer` on each lost connection (from the task that keeps the connection; keep it short).
    func observeLosses(_ observer: @escaping @Sendable () -> Void) {
        lossObserver.withLock { $0 = observer }
    }

    /// Established connections lost so far (not counting the client's own shutdown).
    var lostConnections: Int { losses.load(ordering: .relaxed) }

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
        try await withConnection { (connection) async throws(RedisClientError) in try await connection.send(arguments) }
    }

    /// Sends one command and waits at most `timeout` for its reply.
    public func send(_ arguments: [RedisArgument], timeout: Duration) async throws(RedisClientError) -> RedisReply {
        try await withConnection { (connection) async throws(RedisClientError) in try await connection.send(arguments, timeout: timeout) }
    }

    /// Sends one command given as text arguments.
    public func send(_ arguments: [String]) async throws(RedisClientError) -> RedisReply {
        try await send(arguments.map { RedisArgument($0) })
    }

    /// Sends one command given as binary arguments.
    public func send(_ arguments: [ByteBuffer]) async throws(RedisClientError) -> RedisReply {
        try await send(arguments.map { RedisArgument($0) })
    }

    /// Sends one command that `encode` writes as RESP (exactly one whole command), within
    /// `configuration.commandTimeout`: the hot path of the limit store, with no argument array.
    /// With `asking`, an `ASKING` precedes it on the same connection (a Redis Cluster `ASK` redirection).
    nonisolated(nonsending) func send(asking: Bool = false, encode: (inout ByteBuffer) -> Void) async throws(RedisClientError) -> RedisReply {
        try await withConnection { (connection) async throws(RedisClientError) in
            try await connection.send(timeout: connection.commandTimeout, asking: asking, encode: encode)
        }
    }

    /// Runs `body` (one command) on a connection that is up. When the command was not sent for want of a
    /// connection (`.notConnected`) while a lost connection's first reconnection is under way, waits for
    /// a connection (at most `commandTimeout`) and runs `body` once more: a server that dropped idle
    /// connections costs the next command a reconnection, not a failure. A command that was sent is
    /// never sent again.
    nonisolated(nonsending) private func withConnection(
        _ body: nonisolated(nonsending) (RedisConnection) async throws(RedisClientError) -> RedisReply
    ) async throws(RedisClientError) -> RedisReply {
        do {
            return try await body(try pickConnection())
        } catch where error.code == .notConnected && recovering.load(ordering: .relaxed) > 0 {
            let notSent = error
            let deadline = ContinuousClock.now + configuration.commandTimeout
            while !hasConnection, recovering.load(ordering: .relaxed) > 0, ContinuousClock.now < deadline {
                do { try await Task.sleep(for: .milliseconds(1)) } catch { throw notSent }
            }
            return try await body(try pickConnection())
        }
    }

    /// Whether at least one connection is up.
    var hasConnection: Bool {
        slots.contains { slot in
            if case .connected(let connection) = slot.state.withLock({ $0 }) { return !connection.isClosed }
            return false
        }
    }

    // MARK: Event loops

    /// A task executor that runs tasks on the event loop of connection `index % connections`.
    ///
    /// A caller that runs with it as its executor preference
    /// (`group.addTask(executorPreference: client.taskExecutor(for: i)) { … }` or
    /// `withTaskExecutorPreference`) is sent over a connection of that loop, writes its commands straight
    /// into the connection's buffer and is resumed on the loop by the reply: no thread hop per command,
    /// and the commands of all such callers of a loop leave together on one connection. Everything the
    /// caller does between commands then runs on the loop too, so keep that work short.
    public func taskExecutor(for index: Int) -> any TaskExecutor {
        let loop = slots[index % slots.count].eventLoop
        return loops.first { $0.eventLoop === loop }!.executor
    }

    /// One task executor per event loop the connections use.
    public var taskExecutors: [any TaskExecutor] {
        loops.map(\.executor)
    }

    /// Commands pending on a connection beyond which a caller on its loop moves on to the loop's next one.
    private var spillThreshold: Int { max(1, configuration.maximumPendingCommands / 2) }

    /// The next connection that is up: for a caller running on one of the client's event loops, a
    /// connection of that loop (see `LoopSlots.pick`); for any other caller, round-robin over all.
    func pickConnection() throws(RedisClientError) -> RedisConnection {
        if loops.count > 0 {
            for group in loops where group.eventLoop.inEventLoop {
                if let connection = group.pick(spillAt: spillThreshold) { return connection }
                break
            }
        }
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

/// The connections of a client that share one event loop, and a task executor on that loop.
final class LoopSlots: Sendable {
    let eventLoop: any EventLoop
    let executor: EventLoopTaskExecutor
    let slots: [ConnectionSlot]

    init(eventLoop: any EventLoop, slots: [ConnectionSlot]) {
        self.eventLoop = eventLoop
        self.executor = EventLoopTaskExecutor(eventLoop)
        self.slots = slots
    }

    /// The first connection of this loop that is up and has fewer than `spillAt` commands pending, else
    /// the least busy one that is up; nil when none is up.
    ///
    /// Sticking to one connection while it keeps up is what Redis serves best: the commands of all the
    /// loop's callers leave in one write per tick and Redis reads them as one batch. The others take
    /// over when it is down or backed up.
    func pick(spillAt: Int) -> RedisConnection? {
        var leastBusy: RedisConnection?
        for slot in slots {
            guard case .connected(let connection) = slot.state.withLock({ $0 }), !connection.isClosed else { continue }
            let pending = connection.pendingCommands
            if pending < spillAt { return connection }
            if let best = leastBusy, best.pendingCommands <= pending { continue }
            leastBusy = connection
        }
        return leastBusy
    }
}

/// Runs tasks on one NIO event loop: a task with this executor preference runs its nonisolated code on
/// the loop's thread, where the Redis connections of that loop do their I/O.
public final class EventLoopTaskExecutor: TaskExecutor {
    public let eventLoop: any EventLoop
    /// Jobs handed to the loop and not yet started.
    private let queued = Atomic<Int>(0)
    /// Whether one of this executor's jobs is running (changed and read on the loop only).
    private let running = Atomic<Bool>(false)

    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queued.add(1, ordering: .relaxed)
        eventLoop.execute {
            self.queued.subtract(1, ordering: .relaxed)
            self.running.store(true, ordering: .relaxed)
            job.runSynchronously(on: self.asUnownedTaskExecutor())
            self.running.store(false, ordering: .relaxed)
        }
    }

    /// True on the loop while the running job is the last one queued: nothing this executor runs later
    /// in the tick can add to a write, so a connection may flush now rather than schedule a flush.
    var isRunningLastQueuedJob: Bool {
        running.load(ordering: .relaxed) && queued.load(ordering: .relaxed) == 0
    }
}
