import Logging
import NIOCore
import NIOPosix
import Synchronization

/// One connection to Redis. Commands from any number of concurrent callers are pipelined on it.
///
/// An actor whose executor is the channel's event loop: its methods run on the loop, so they talk to
/// the channel handler without a further thread hop. The pending-command bound is checked before the
/// hop, so an overloaded caller hears so at once.
public final actor RedisConnection {
    /// The channel; its event loop is this actor's executor.
    nonisolated let channel: any Channel
    nonisolated let configuration: RedisConfiguration
    nonisolated let logger: Logger
    /// Commands accepted but not yet completed, including those still on their way to the event loop.
    nonisolated private let reserved = Atomic<Int>(0)
    nonisolated private let allocator: ByteBufferAllocator

    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        channel.eventLoop.executor.asUnownedSerialExecutor()
    }

    private init(channel: any Channel, configuration: RedisConfiguration, logger: Logger) {
        self.channel = channel
        self.configuration = configuration
        self.logger = logger
        self.allocator = channel.allocator
    }

    /// Connects over TCP or the unix socket of `configuration`, then authenticates and selects the
    /// database, all within `configuration.connectTimeout`.
    public static func connect(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next(),
        logger: Logger
    ) async throws(RedisClientError) -> RedisConnection {
        try configuration.validate()
        let started = ContinuousClock.now
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RedisChannelHandler(logger: logger))
                }
            }
        let channel: any Channel
        do {
            if let path = configuration.unixSocketPath {
                channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
            } else {
                channel = try await bootstrap.connect(host: configuration.host, port: configuration.port).get()
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
        let remaining = configuration.connectTimeout - (ContinuousClock.now - started)
        return try await handshake(channel: channel, configuration: configuration, timeout: remaining, logger: logger)
    }

    /// Wraps a channel whose pipeline already ends in a `RedisChannelHandler` (tests use this with
    /// `NIOAsyncTestingChannel`), then authenticates and selects the database.
    static func handshake(
        channel: any Channel,
        configuration: RedisConfiguration,
        timeout: Duration,
        logger: Logger
    ) async throws(RedisClientError) -> RedisConnection {
        let connection = RedisConnection(channel: channel, configuration: configuration, logger: logger)
        do {
            try await connection.authenticateAndSelect(timeout: max(timeout, .milliseconds(1)))
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

    private func authenticateAndSelect(timeout: Duration) async throws(RedisClientError) {
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
        guard !commands.isEmpty else { return }
        // Pipelined: every reply is awaited so that no command is left behind unobserved.
        let futures = try commands.map { (arguments) throws(RedisClientError) in
            try submit(RESPCommandEncoder.encode(arguments, allocator: allocator), timeout: TimeAmount(timeout))
        }
        for (index, future) in futures.enumerated() {
            do {
                _ = try await future.get()
            } catch {
                let step = commands[index][0] == "AUTH" ? "authenticating" : "selecting database \(configuration.database)"
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
        try await send(arguments, timeout: configuration.commandTimeout)
    }

    /// Sends one command and waits at most `timeout` for its reply.
    public nonisolated func send(
        _ arguments: [RedisArgument],
        timeout: Duration
    ) async throws(RedisClientError) -> RedisReply {
        let command = try RESPCommandEncoder.encode(arguments, allocator: allocator)
        return try await send(encoded: command, timeout: timeout)
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
        do {
            return try await submitAndWait(command, timeout: TimeAmount(timeout))
        } catch let error as RedisClientError {
            throw error
        } catch {
            throw RedisClientError(.connectionClosed, message: "the command failed on the connection; it may have run", underlying: error)
        }
    }

    private func submitAndWait(_ command: ByteBuffer, timeout: TimeAmount) async throws -> RedisReply {
        try await submit(command, timeout: timeout).get()
    }

    /// Hands a command to the channel handler; runs on the event loop.
    private func submit(_ command: ByteBuffer, timeout: TimeAmount) throws(RedisClientError) -> EventLoopFuture<RedisReply> {
        // While the channel is active its handler is in the pipeline, so the request reaches the handler,
        // which completes the promise whatever happens next.
        guard channel.isActive else {
            throw RedisClientError(
                .notConnected,
                message: "the connection to Redis at \(configuration.endpointDescription) is closed; the command was not sent"
            )
        }
        let promise = channel.eventLoop.makePromise(of: RedisReply.self)
        let request = RedisRequest(command: command, deadline: channel.eventLoop.now + timeout, promise: promise)
        channel.write(request, promise: nil)
        return promise.futureResult
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
