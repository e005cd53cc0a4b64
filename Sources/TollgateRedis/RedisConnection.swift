import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Synchronization

/// One connection to Redis. Commands from any number of concurrent callers are pipelined on it.
///
/// A caller hands its command to the channel handler on the channel's event loop: directly when it
/// already runs there (a task whose executor preference is the loop, see
/// `RedisClient.taskExecutor(for:)`), else with one `execute` on the loop. The reply resumes the
/// caller's continuation from the loop, so a caller running on the loop never changes thread. The
/// pending-command bound is checked before anything is handed over, so an overloaded caller hears so at once.
public final actor RedisConnection {
    /// The channel; its event loop is this actor's executor.
    nonisolated let channel: any Channel
    nonisolated let configuration: RedisConfiguration
    nonisolated let logger: Logger
    /// Commands accepted but not yet completed, including those still on their way to the event loop.
    nonisolated private let reserved = Atomic<Int>(0)
    nonisolated private let allocator: ByteBufferAllocator
    /// The channel's Redis handler, used only on the event loop.
    nonisolated private let handler: NIOLoopBound<RedisChannelHandler>
    /// `configuration.commandTimeout`, converted once.
    nonisolated let commandTimeout: TimeAmount

    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        channel.eventLoop.executor.asUnownedSerialExecutor()
    }

    private init(channel: any Channel, handler: NIOLoopBound<RedisChannelHandler>, configuration: RedisConfiguration, logger: Logger) {
        self.channel = channel
        self.handler = handler
        self.configuration = configuration
        self.logger = logger
        self.allocator = channel.allocator
        self.commandTimeout = TimeAmount(configuration.commandTimeout)
    }

    /// Connects over TCP (with TLS when `configuration.tls` is set) or the unix socket of
    /// `configuration`, then authenticates and selects the database, all within
    /// `configuration.connectTimeout`.
    public static func connect(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next(),
        logger: Logger
    ) async throws(RedisClientError) -> RedisConnection {
        try configuration.validate()
        return try await connect(
            configuration: configuration, eventLoop: eventLoop, taskExecutor: nil,
            tls: RedisTLSContext.make(for: configuration), logger: logger)
    }

    /// A new channel and, with TLS, the outcome of its handshake.
    private struct NewChannel: Sendable {
        var channel: any Channel
        var handshake: EventLoopFuture<Void>?
        /// The first TLS error after the handshake (`TLSHandshakeHandler.laterError`).
        var tlsError: NIOLockedValueBox<(any Error)?>?
    }

    /// Connects; `taskExecutor`, when given, is the client's executor on `eventLoop`, whose jobs the
    /// handler can flush after (see `RedisChannelHandler.scheduleFlush`); `tls` is the client's TLS
    /// context, made once from `configuration.tls`.
    ///
    /// `pushes`, when given, receives the replies that arrive while no command waits (a subscriber's messages).
    static func connect(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        taskExecutor: EventLoopTaskExecutor?,
        tls: RedisTLSContext?,
        logger: Logger,
        pushes: (@Sendable (RedisReply) -> Void)? = nil
    ) async throws(RedisClientError) -> RedisConnection {
        try configuration.validate()
        let started = ContinuousClock.now
        let deadline = NIODeadline.now() + TimeAmount(configuration.connectTimeout)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
        // Called for every address tried; each channel returns its own handshake, and only the channel
        // that connected comes back.
        let initialize: @Sendable (any Channel) -> EventLoopFuture<NewChannel> = { channel in
            channel.eventLoop.makeCompletedFuture {
                let pipeline = channel.pipeline.syncOperations
                var handshake: EventLoopFuture<Void>?
                var tlsError: NIOLockedValueBox<(any Error)?>?
                if let tls {
                    let waiter = TLSHandshakeHandler(eventLoop: channel.eventLoop, deadline: deadline)
                    do {
                        try pipeline.addHandlers([tls.makeHandler(), waiter])
                    } catch {
                        waiter.abandon(error)
                        throw error
                    }
                    handshake = waiter.handshake
                    tlsError = waiter.laterError
                }
                try pipeline.addHandler(RedisChannelHandler(logger: logger, taskExecutor: taskExecutor, pushes: pushes))
                return NewChannel(channel: channel, handshake: handshake, tlsError: tlsError)
            }
        }
        let connected: NewChannel
        do {
            if let path = configuration.unixSocketPath {
                connected = try await bootstrap.connect(unixDomainSocketPath: path, channelInitializer: initialize)
            } else {
                connected = try await bootstrap.connect(host: configuration.host, port: configuration.port, channelInitializer: initialize)
            }
        } catch let error as RedisClientError {
            throw error
        } catch {
            let why: String
            if case ChannelError.connectTimeout = error {
                why = "timed out after \(configuration.connectTimeout)"
            } else {
                why = "failed"
            }
            throw RedisClientError(
                .connectFailed,
                message: "connecting to Redis at \(configuration.endpointDescription) \(why)",
                underlying: error
            )
        }
        let channel = connected.channel
        if let handshake = connected.handshake, let tls {
            do {
                try await handshake.get()
            } catch {
                channel.close(promise: nil)
                throw tls.failure(error, endpoint: configuration.endpointDescription)
                    ?? RedisClientError(
                        .connectFailed,
                        message: "the TLS handshake with Redis at \(configuration.endpointDescription) failed",
                        underlying: error)
            }
        }
        let remaining = configuration.connectTimeout - (ContinuousClock.now - started)
        do {
            return try await handshake(channel: channel, configuration: configuration, tls: tls, timeout: remaining, logger: logger)
        } catch {
            // A refusal after the TLS handshake (no client certificate) may close the connection before
            // AUTH, SELECT or PING can report it: the TLS error kept for that says why.
            if let tls, let later = connected.tlsError?.withLockedValue({ $0 }),
                let failure = tls.failure(later, endpoint: configuration.endpointDescription)
            {
                throw failure
            }
            throw error
        }
    }

    /// Wraps a channel whose pipeline already ends in a `RedisChannelHandler` (tests use this with
    /// `NIOAsyncTestingChannel`), then authenticates and selects the database.
    static func handshake(
        channel: any Channel,
        configuration: RedisConfiguration,
        tls: RedisTLSContext? = nil,
        timeout: Duration,
        logger: Logger
    ) async throws(RedisClientError) -> RedisConnection {
        let handler: NIOLoopBound<RedisChannelHandler>
        do {
            handler = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: RedisChannelHandler.self), eventLoop: channel.eventLoop)
            }.get()
        } catch {
            channel.close(promise: nil)
            throw RedisClientError(.connectFailed, message: "the channel has no Redis handler", underlying: error)
        }
        let connection = RedisConnection(channel: channel, handler: handler, configuration: configuration, logger: logger)
        do {
            try await connection.authenticateAndSelect(tls: tls, timeout: max(timeout, .milliseconds(1)))
        } catch {
            channel.close(promise: nil)
            throw error
        }
        logger.debug("Connected to Redis", metadata: ["redis.endpoint": "\(configuration.endpointDescription)"])
        return connection
    }

    /// Adds the Redis handler to a channel (for tests over `NIOAsyncTestingChannel`).
    static func addHandler(to channel: any Channel, logger: Logger) async throws {
        try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.addHandler(RedisChannelHandler(logger: logger))
        }.get()
    }

    private nonisolated func authenticateAndSelect(tls: RedisTLSContext?, timeout: Duration) async throws(RedisClientError) {
        var commands: [[RedisArgument]] = []
        if let password = configuration.password {
            if let username = configuration.username {
                commands.append(["AUTH", RedisArgument(username), RedisArgument(password)])
            } else {
                commands.append(["AUTH", RedisArgument(password)])
            }
        }
        if configuration.database != 0 {
            commands.append(["SELECT", RedisArgument(configuration.database)])
        }
        if commands.isEmpty, tls != nil {
            // Under TLS 1.3 a server that requires a client certificate refuses it only after the
            // client's handshake has completed: one round trip shows the refusal here, not on a check.
            commands.append(["PING"])
        }
        guard !commands.isEmpty else { return }
        // Pipelined: every reply is awaited so that no command is left behind unobserved.
        let futures = try commands.map { (arguments) throws(RedisClientError) in
            try submit(RESPCommandEncoder.encode(arguments, allocator: allocator), timeout: TimeAmount(timeout))
        }
        for (index, future) in futures.enumerated() {
            do {
                _ = try await future.get()
            } catch {
                if let tls, let failure = tls.failure(error, endpoint: configuration.endpointDescription) {
                    throw failure
                }
                let step = switch commands[index][0] {
                case "AUTH": "authenticating"
                case "SELECT": "selecting database \(configuration.database)"
                default: "the first command"
                }
                var failure = RedisClientError(
                    .connectFailed,
                    message: "\(step) on Redis at \(configuration.endpointDescription) failed",
                    underlying: error
                )
                if let error = error as? RedisClientError {
                    failure.message += ": \(error.message)"
                }
                throw failure
            }
        }
    }

    /// Sends one command and waits for its reply, within `configuration.commandTimeout`.
    ///
    /// A top-level error reply throws `.serverError`. A command that times out or whose connection drops
    /// throws `.timeout` or `.connectionClosed`: it may have run, and it is never sent again.
    public nonisolated func send(_ arguments: [RedisArgument]) async throws(RedisClientError) -> RedisReply {
        try RESPCommandEncoder.validate(arguments)
        return try await send(timeout: commandTimeout) { RESPCommandEncoder.write(arguments, into: &$0) }
    }

    /// Sends one command and waits at most `timeout` for its reply.
    public nonisolated func send(
        _ arguments: [RedisArgument],
        timeout: Duration
    ) async throws(RedisClientError) -> RedisReply {
        try RESPCommandEncoder.validate(arguments)
        return try await send(timeout: TimeAmount(timeout)) { RESPCommandEncoder.write(arguments, into: &$0) }
    }

    /// Sends one command given as text arguments.
    public nonisolated func send(_ arguments: [String]) async throws(RedisClientError) -> RedisReply {
        try await send(arguments.map { RedisArgument($0) })
    }

    /// Sends one command given as binary arguments.
    public nonisolated func send(_ arguments: [ByteBuffer]) async throws(RedisClientError) -> RedisReply {
        try await send(arguments.map { RedisArgument($0) })
    }

    /// Sends an already encoded command.
    nonisolated func send(encoded command: ByteBuffer, timeout: Duration) async throws(RedisClientError) -> RedisReply {
        try await send(timeout: TimeAmount(timeout)) { $0.writeImmutableBuffer(command) }
    }

    /// Sends one command that `encode` writes as RESP, and waits at most `timeout` for its reply.
    ///
    /// On the event loop, `encode` writes straight into the handler's outbound buffer; elsewhere into a
    /// buffer of the caller's that the loop then takes. `encode` must write exactly one whole command.
    ///
    /// With `asking`, an `ASKING` goes just before the command, in the same event-loop turn so that no
    /// other caller's command comes between them (a Redis Cluster `ASK` redirection); its reply is dropped.
    nonisolated(nonsending) func send(
        timeout: TimeAmount,
        asking: Bool = false,
        encode: (inout ByteBuffer) -> Void
    ) async throws(RedisClientError) -> RedisReply {
        guard timeout > .zero else {
            // A spent budget must not reach the handler: its timer would close the connection for everyone.
            throw RedisClientError(.timeout, message: "the time allowed for the command was already spent; the command was not sent")
        }
        let limit = configuration.maximumPendingCommands
        let pending = reserved.add(1, ordering: .relaxed).newValue
        defer { reserved.subtract(1, ordering: .relaxed) }
        guard pending <= limit else {
            throw RedisClientError(
                .overloaded,
                message: "\(limit) commands are already waiting on this Redis connection (maximumPendingCommands); the command was not sent"
            )
        }
        // While the channel is active its handler is in the pipeline, so the command reaches the handler,
        // which resumes the continuation whatever happens next.
        guard channel.isActive else { throw closedError }
        do {
            return try await withUnsafeThrowingContinuation { continuation in
                let eventLoop = channel.eventLoop
                let deadline = eventLoop.now + timeout
                if eventLoop.inEventLoop {
                    if asking { enqueueAsking(deadline: deadline) }
                    handler.value.enqueue(deadline: deadline, responder: .continuation(continuation), encode: encode)
                } else {
                    var command = allocator.buffer(capacity: 256)
                    encode(&command)
                    let request = RedisRequest(command: command, deadline: deadline, responder: .continuation(continuation))
                    eventLoop.execute { [handler] in
                        if asking { self.enqueueAsking(deadline: request.deadline) }
                        handler.value.enqueue(deadline: request.deadline, responder: request.responder) {
                            $0.writeImmutableBuffer(request.command)
                        }
                    }
                }
            }
        } catch let error as RedisClientError {
            throw error
        } catch {
            throw RedisClientError(.connectionClosed, message: "the command failed on the connection; it may have run", underlying: error)
        }
    }

    /// Queues an `ASKING` whose reply nobody reads (on the event loop, right before the command it is for).
    private nonisolated func enqueueAsking(deadline: NIODeadline) {
        let ignored = channel.eventLoop.makePromise(of: RedisReply.self)
        handler.value.enqueue(deadline: deadline, responder: .promise(ignored)) {
            RESPCommandEncoder.write(["ASKING"], into: &$0)
        }
    }

    /// Hands a command to the channel handler, for a future of its reply (connection set-up).
    private nonisolated func submit(_ command: ByteBuffer, timeout: TimeAmount) throws(RedisClientError) -> EventLoopFuture<RedisReply> {
        guard channel.isActive else { throw closedError }
        let eventLoop = channel.eventLoop
        let promise = eventLoop.makePromise(of: RedisReply.self)
        let deadline = eventLoop.now + timeout
        eventLoop.execute { [handler] in
            handler.value.enqueue(deadline: deadline, responder: .promise(promise)) { $0.writeImmutableBuffer(command) }
        }
        return promise.futureResult
    }

    private nonisolated var closedError: RedisClientError {
        RedisClientError(
            .notConnected,
            message: "the connection to Redis at \(configuration.endpointDescription) is closed; the command was not sent"
        )
    }

    /// The event loop the connection's I/O runs on.
    public nonisolated var eventLoop: any EventLoop {
        channel.eventLoop
    }

    /// Commands accepted by this connection and not yet completed.
    public nonisolated var pendingCommands: Int {
        reserved.load(ordering: .relaxed)
    }

    /// Whether the connection is closed (by either side).
    public nonisolated var isClosed: Bool {
        !channel.isActive
    }

    /// Completes when the connection has closed.
    public nonisolated var closeFuture: EventLoopFuture<Void> {
        channel.closeFuture
    }

    /// Closes the connection; pending commands fail with `.connectionClosed`.
    public nonisolated func close() async {
        channel.close(mode: .all, promise: nil)
        try? await channel.closeFuture.get()
    }
}
