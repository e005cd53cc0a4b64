import Logging
import Metrics
import NIOCore
import NIOPosix
import Synchronization

/// The way to a primary that Redis Sentinel names: asks the sentinels for it by name
/// (`SENTINEL get-master-addr-by-name`), keeps a `RedisClient` (pipelined connections) to it, and follows
/// it when it changes.
///
/// A subscription to a sentinel's `+switch-master` brings a failover's new primary at once; the sentinels
/// are asked again when that subscription drops, when the primary's connection is lost (at most once per
/// `minimumResolveInterval`), and every `resolveInterval`. Commands are never sent again after a timeout
/// or a dropped connection (they may have run); `NOSCRIPT` from a new primary loads the script there.
public final class RedisSentinelClient: Sendable {
    public let configuration: RedisSentinelConfiguration
    let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let metricsFactory: any MetricsFactory
    private let state = Mutex(State())

    private struct State {
        var primary: ClusterNode?
        var lifecycle: Lifecycle = .idle
        var starter: AsyncStream<ClusterNode>.Continuation?
        /// Wakes the watcher (a lost connection asks for the primary again).
        var wake: AsyncStream<WatchEvent>.Continuation?
        var resolutions = 0
    }

    private enum Lifecycle { case idle, running, finished }

    private enum WatchEvent: Sendable {
        case switched(ClusterAddress)
        case resolve
        case sentinelLost
    }

    /// - Parameters:
    ///   - configuration: the sentinels, the primary's name and settings; validated here.
    ///   - eventLoopGroup: the loops the connections run on.
    ///   - logger: where topology events go; commands and their arguments are never logged.
    public init(
        configuration: RedisSentinelConfiguration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) throws(RedisClientError) {
        try configuration.validate()
        if let first = configuration.sentinels.first {
            _ = try RedisTLSContext.make(for: configuration.configuration(ofSentinel: first))
        }
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.metricsFactory = metricsFactory
        var logger = logger
        logger[metadataKey: "redis.sentinel"] = "\(configuration.masterName)"
        self.logger = logger
    }

    /// Where the primary is looked up, for logs and errors.
    public var endpointDescription: String {
        "sentinel(\(configuration.masterName) via \(configuration.sentinels.map(\.description).joined(separator: ", ")))"
    }

    /// The primary's address now, if known.
    public var primaryAddress: ClusterAddress? { state.withLock { $0.primary?.address } }

    /// Resolutions that installed a primary (tests).
    var resolutionCount: Int { state.withLock { $0.resolutions } }

    // MARK: Running

    /// Finds the primary, connects to it and follows it until the task that runs this is cancelled; then
    /// closes every connection and returns. Call it once.
    public func run() async {
        let (starts, starter) = AsyncStream.makeStream(of: ClusterNode.self)
        let started = state.withLock { state -> Bool in
            guard case .idle = state.lifecycle else { return false }
            state.lifecycle = .running
            state.starter = starter
            return true
        }
        guard started else {
            logger.error("RedisSentinelClient.run() was called more than once; the extra call does nothing")
            return
        }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.follow() }
            for await node in starts { group.addTask { await node.run() } }
        }
        let primary = state.withLock { state in
            state.lifecycle = .finished
            state.starter = nil
            return state.primary
        }
        primary?.stop()
    }

    /// Resolves, watches a sentinel until something asks for another resolution, and again.
    private func follow() async {
        var failures = 0
        while !Task.isCancelled {
            let began = ContinuousClock.now
            do {
                let (primary, sentinel) = try await resolve()
                try install(primary)
                if failures > 0 { logger.info("Found the Redis primary again", metadata: ["attempts": "\(failures + 1)"]) }
                failures = 0
                await watch(sentinel)
            } catch {
                failures += 1
                if failures == 1 || failures.isMultiple(of: 40) {
                    logger.warning("Could not find the Redis primary through Sentinel; retrying", metadata: ["error": "\(error)"])
                }
            }
            let wait = configuration.minimumResolveInterval - (ContinuousClock.now - began)
            if wait > .zero {
                do { try await Task.sleep(for: wait) } catch { break }
            }
        }
    }

    /// Asks each sentinel in turn for the primary's address; the address and the sentinel that answered.
    func resolve() async throws(RedisClientError) -> (primary: ClusterAddress, sentinel: ClusterAddress) {
        var lastError: RedisClientError?
        for sentinel in configuration.sentinels {
            do {
                let connection = try await RedisConnection.connect(
                    configuration: configuration.configuration(ofSentinel: sentinel), eventLoop: eventLoopGroup.next(), logger: logger)
                defer { connection.channel.close(mode: .all, promise: nil) }
                let reply = try await connection.send(["SENTINEL", "get-master-addr-by-name", RedisArgument(configuration.masterName)])
                guard let fields = reply.array, fields.count == 2, let host = fields[0].string, let port = fields[1].int64.map(Int.init),
                    (1...65535).contains(port)
                else {
                    lastError = RedisClientError(
                        .serverError,
                        message: "the sentinel at \(sentinel) knows no primary named \(configuration.masterName) (it answered \(reply))")
                    continue
                }
                return (ClusterAddress(host: host, port: port), sentinel)
            } catch {
                lastError = error
            }
        }
        throw RedisClientError(
            .notConnected, message: "no sentinel named the primary \(configuration.masterName) (asked \(configuration.sentinels.count))",
            underlying: lastError)
    }

    /// Makes the primary at `address` the one commands go to (nothing changes when it already is).
    private func install(_ address: ClusterAddress) throws(RedisClientError) {
        let made: Result<ClusterNode?, RedisClientError> = state.withLock { state in
            if state.primary?.address == address { return .success(nil) }
            if case .finished = state.lifecycle {
                return .failure(RedisClientError(.shutdown, message: "the Redis Sentinel client has been shut down"))
            }
            do throws(RedisClientError) {
                var logger = self.logger
                logger[metadataKey: "redis.node"] = "\(address)"
                let client = try RedisClient(
                    configuration: configuration.configuration(ofPrimary: address), eventLoopGroup: eventLoopGroup, logger: logger)
                // A dropped connection may mean a failover under way: ask the sentinels again (throttled).
                client.observeLosses { [weak self] in self?.requestResolve() }
                let previous = state.primary
                state.primary = ClusterNode(address: address, client: client, factory: metricsFactory)
                state.resolutions += 1
                state.starter?.yield(state.primary!)
                return .success(previous)
            } catch {
                return .failure(error)
            }
        }
        if let previous = try made.get() {
            logger.info("Redis primary moved", metadata: ["from": "\(previous.address)", "to": "\(address)"])
            previous.stop()
        } else if state.withLock({ $0.resolutions }) == 1 {
            logger.debug("Redis primary found", metadata: ["primary": "\(address)"])
        }
    }

    /// Subscribes to `+switch-master` on `sentinel` and returns when another resolution is due: the
    /// subscription dropped, a lost connection asked for one, or `resolveInterval` passed. A switch of our
    /// primary is installed at once.
    private func watch(_ sentinel: ClusterAddress) async {
        let (events, emit) = AsyncStream.makeStream(of: WatchEvent.self, bufferingPolicy: .bufferingNewest(16))
        let name = configuration.masterName
        let connection: RedisConnection
        do {
            let settings = configuration.configuration(ofSentinel: sentinel)
            connection = try await RedisConnection.connect(
                configuration: settings, eventLoop: eventLoopGroup.next(), taskExecutor: nil, tls: RedisTLSContext.make(for: settings),
                logger: logger,
                pushes: { reply in
                    if let address = Self.switchedPrimary(reply, name: name) { emit.yield(.switched(address)) }
                })
            _ = try await connection.send(["SUBSCRIBE", "+switch-master"])
        } catch {
            logger.debug("Could not subscribe to a sentinel's +switch-master", metadata: ["error": "\(error)"])
            return
        }
        connection.closeFuture.whenComplete { _ in emit.yield(.sentinelLost) }
        state.withLock { $0.wake = emit }
        let timer = Task { [interval = configuration.resolveInterval] in
            try? await Task.sleep(for: interval)
            emit.yield(.resolve)
        }
        defer {
            timer.cancel()
            state.withLock { $0.wake = nil }
            emit.finish()
            connection.channel.close(mode: .all, promise: nil)
        }
        for await event in events {
            switch event {
            case .switched(let address):
                do {
                    try install(address)
                } catch {
                    logger.warning("Could not follow the new Redis primary", metadata: ["error": "\(error)"])
                    return
                }
            case .resolve, .sentinelLost:
                return
            }
        }
    }

    /// The new address in a `+switch-master` message for `name`: `message`, the channel, then
    /// `<name> <old ip> <old port> <new ip> <new port>`.
    static func switchedPrimary(_ reply: RedisReply, name: String) -> ClusterAddress? {
        guard let items = reply.array, items.count == 3, items[0].string == "message", let payload = items[2].string else { return nil }
        let fields = payload.split(separator: " ")
        guard fields.count == 5, fields[0] == name, let port = Int(fields[4]), (1...65535).contains(port) else { return nil }
        return ClusterAddress(host: String(fields[3]), port: port)
    }

    /// Asks the watcher for a resolution (a connection to the primary was lost).
    func requestResolve() {
        _ = state.withLock { $0.wake }?.yield(.resolve)
    }

    /// Waits until the primary is known and connected; a startup helper.
    public func waitUntilConnected(timeout: Duration) async throws(RedisClientError) {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let primary = state.withLock({ $0.primary }), primary.client.hasConnection { return }
            if ContinuousClock.now >= deadline {
                throw RedisClientError(.notConnected, message: "the Redis primary \(endpointDescription) is not connected after \(timeout)")
            }
            do {
                try await Task.sleep(for: .milliseconds(5))
            } catch {
                throw RedisClientError(.notConnected, message: "cancelled while waiting for the Redis primary")
            }
        }
    }

    // MARK: Commands

    private func primary() throws(RedisClientError) -> ClusterNode {
        guard let primary = state.withLock({ $0.primary }) else {
            throw RedisClientError(
                .notConnected, message: "the Redis primary \(configuration.masterName) is not known yet; the command was not sent")
        }
        return primary
    }

    /// Sends one command to the primary.
    public func send(_ arguments: [RedisArgument]) async throws(RedisClientError) -> RedisReply {
        let node = try primary()
        do {
            return try await node.client.send(arguments)
        } catch {
            noteFailure(error, on: node)
            throw error
        }
    }

    /// Sends one command given as text arguments to the primary.
    public func send(_ arguments: [String]) async throws(RedisClientError) -> RedisReply {
        try await send(arguments.map { RedisArgument($0) })
    }

    /// Loads a script on the primary; its SHA1.
    public func scriptLoad(_ lua: String) async throws(RedisClientError) -> String {
        try await primary().client.scriptLoad(lua)
    }

    /// An `EVALSHA` that `encode` writes whole, on the primary (loaded there on `NOSCRIPT`).
    nonisolated(nonsending) func evalSHA(_ sha: String, source: String, encode: (inout ByteBuffer) -> Void) async throws(RedisClientError) -> RedisReply {
        let node = try primary()
        do {
            return try await node.client.evalSHA(sha, source: source, encode: encode)
        } catch {
            noteFailure(error, on: node)
            throw error
        }
    }

    /// Whether the primary is known and answers `PING`.
    public func isReachable() async -> Bool {
        (try? await send(["PING"]))?.string == "PONG"
    }

    /// A lost connection, or a primary that became a replica (`READONLY`), asks the sentinels again.
    private func noteFailure(_ error: RedisClientError, on node: ClusterNode) {
        node.metrics.failed(error.code)
        if error.code == .notConnected || error.code == .connectionClosed || error.code == .timeout
            || error.serverErrorPrefix == "READONLY"
        {
            requestResolve()
        }
    }
}
