import Logging
import Metrics
import NIOCore
import NIOPosix
import Synchronization

/// The way into a Redis Cluster: which primary serves a key, and a `RedisClient` (its own pipelined
/// connections, reconnect and backoff) per primary.
///
/// The slot map comes from `CLUSTER SHARDS` (or `CLUSTER SLOTS` on servers without it), asked of a known
/// primary or else a seed. It is read again every `refreshInterval`, and sooner (at most once per
/// `minimumRefreshInterval`) after a `MOVED`, a lost connection (also an idle one the server closed) or a
/// slot no primary serves.
///
/// - `MOVED` (the command did not run): that slot's owner is updated at once and the command goes to it.
/// - `ASK` (the slot is migrating and the keys are on the target): `ASKING` and the command on the target,
///   with no change to the map.
/// - `TRYAGAIN` (the keys are split across a migration): a few short waits and retries.
/// - `NOSCRIPT`: the script is loaded on the node that answered, and the call made once more.
/// - `CLUSTERDOWN`, a timeout, a dropped connection: the error reaches the caller and nothing is sent
///   again (the command may have run).
///
/// Metrics per node (`node` label, `host:port`): `tollgate_redis_redirects_total{node, kind}` (`moved`,
/// `ask`, `tryagain`), `tollgate_redis_node_errors_total{node, kind}`; and
/// `tollgate_redis_cluster_refreshes_total{outcome}` (`changed`, `unchanged`, `failed`).
public final class RedisClusterClient: Sendable {
    public let configuration: RedisClusterConfiguration
    let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let metricsFactory: any MetricsFactory
    private let state: Mutex<State>
    /// The slot of each organization's hash tag, computed once (bounded: cleared when it grows past 100,000).
    private let slotOfTag = Mutex<[String: Int]>([:])
    private let refreshWanted = Atomic<Bool>(false)
    private let refreshCounters: [String: Counter]

    private struct State {
        /// The primary of each slot; nil while no primary serves it.
        var owners: [ClusterNode?] = Array(repeating: nil, count: HashSlot.count)
        var nodes: [ClusterAddress: ClusterNode] = [:]
        var lifecycle: Lifecycle = .idle
        /// Starts a node's connections in `run()`'s task group.
        var starter: AsyncStream<ClusterNode>.Continuation?
        /// Refreshes that installed a map.
        var refreshes = 0
    }

    private enum Lifecycle { case idle, running, finished }

    /// - Parameters:
    ///   - configuration: the seeds and the nodes' settings; validated here (TLS files are read here).
    ///   - eventLoopGroup: the loops every node's connections run on.
    ///   - logger: where topology events go; commands and their arguments are never logged.
    public init(
        configuration: RedisClusterConfiguration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) throws(RedisClientError) {
        try configuration.validate()
        if let first = configuration.seeds.first {
            // Reads the TLS files once, so that a bad one fails here rather than at the first node.
            _ = try RedisTLSContext.make(for: configuration.configuration(of: first))
        }
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.metricsFactory = metricsFactory
        var logger = logger
        logger[metadataKey: "redis.cluster"] = "\(configuration.seeds.map(\.description).joined(separator: ","))"
        self.logger = logger
        state = Mutex(State())
        var counters: [String: Counter] = [:]
        for outcome in ["changed", "unchanged", "failed"] {
            counters[outcome] = Counter(
                label: "tollgate_redis_cluster_refreshes_total", dimensions: [("outcome", outcome)], factory: metricsFactory)
        }
        refreshCounters = counters
    }

    /// Where the cluster is, for logs and errors.
    public var endpointDescription: String {
        "cluster(\(configuration.seeds.map(\.description).joined(separator: ", ")))"
    }

    // MARK: Running

    /// Reads the slot map, opens connections to every primary and keeps both current until the task that
    /// runs this is cancelled; then closes every connection and returns. Call it once.
    public func run() async {
        let (starts, starter) = AsyncStream.makeStream(of: ClusterNode.self)
        let pending = state.withLock { state -> [ClusterNode]? in
            guard case .idle = state.lifecycle else { return nil }
            state.lifecycle = .running
            state.starter = starter
            return Array(state.nodes.values)
        }
        guard let pending else {
            logger.error("RedisClusterClient.run() was called more than once; the extra call does nothing")
            return
        }
        await withDiscardingTaskGroup { group in
            for node in pending { group.addTask { await node.run() } }
            group.addTask { await self.maintainMap() }
            for await node in starts { group.addTask { await node.run() } }
        }
        let nodes = state.withLock { state in
            state.lifecycle = .finished
            state.starter = nil
            return Array(state.nodes.values)
        }
        for node in nodes { node.stop() }
        logger.debug("Redis Cluster client stopped")
    }

    /// Refreshes the map at once, then whenever asked (at most once per `minimumRefreshInterval`) or
    /// every `refreshInterval`; while refreshes fail, once per `minimumRefreshInterval`. A request is
    /// noticed within `Self.requestPoll` once the interval since the last refresh has passed.
    private func maintainMap() async {
        var last: ContinuousClock.Instant?
        var failures = 0
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let throttled = last.map { now - $0 < configuration.minimumRefreshInterval } ?? false
            let asked = !throttled && refreshWanted.exchange(false, ordering: .relaxed)
            if asked || last.map({ now - $0 >= configuration.refreshInterval }) ?? true {
                last = now
                do {
                    try await refresh()
                    if failures > 0 { logger.info("Read the Redis Cluster's slot map again", metadata: ["attempts": "\(failures + 1)"]) }
                    failures = 0
                } catch {
                    failures += 1
                    refreshWanted.store(true, ordering: .relaxed)
                    refreshCounters["failed"]!.increment()
                    if failures == 1 || failures.isMultiple(of: 40) {
                        logger.warning("Could not read the Redis Cluster's slot map; retrying", metadata: ["error": "\(error)", "attempt": "\(failures)"])
                    }
                }
            }
            do {
                try await Task.sleep(for: min(configuration.minimumRefreshInterval, Self.requestPoll))
            } catch {
                break
            }
        }
    }

    /// How often the map's task looks for a refresh request.
    private static let requestPoll: Duration = .milliseconds(20)

    /// Asks for a refresh of the slot map (done by `run()`'s task, at most once per `minimumRefreshInterval`).
    func requestRefresh() {
        refreshWanted.store(true, ordering: .relaxed)
    }

    /// Reads the slot map from the first node that answers (known primaries, then the seeds) and installs it.
    func refresh() async throws(RedisClientError) {
        let known = state.withLock { state in Array(state.nodes.values) }.filter { $0.client.hasConnection }
        var candidates: [ClusterAddress] = known.map(\.address)
        for seed in configuration.seeds where !candidates.contains(seed) { candidates.append(seed) }
        var lastError: RedisClientError?
        for address in candidates {
            do {
                let ranges = try await readMap(from: address, node: known.first { $0.address == address })
                guard !ranges.isEmpty else {
                    lastError = RedisClientError(.serverError, message: "the node at \(address) knows of no slot served by a primary")
                    continue
                }
                try await install(ranges)
                return
            } catch {
                lastError = error
            }
        }
        throw RedisClientError(
            .notConnected, message: "no node of the Redis Cluster answered for its slot map (asked \(candidates.count))",
            underlying: lastError)
    }

    /// `CLUSTER SHARDS`, or `CLUSTER SLOTS` when the server does not know it, over `node`'s connections
    /// or a connection of its own.
    private func readMap(from address: ClusterAddress, node: ClusterNode?) async throws(RedisClientError) -> [SlotRange] {
        let tls = configuration.node.tls != nil
        let connection: RedisConnection? =
            if node == nil {
                try await RedisConnection.connect(
                    configuration: configuration.configuration(of: address), eventLoop: eventLoopGroup.next(), logger: logger)
            } else {
                nil
            }
        defer { if let connection { connection.channel.close(mode: .all, promise: nil) } }
        func send(_ arguments: [RedisArgument]) async throws(RedisClientError) -> RedisReply {
            if let connection { return try await connection.send(arguments) }
            return try await node!.client.send(arguments)
        }
        do {
            return try ClusterMap.fromShards(try await send(["CLUSTER", "SHARDS"]), answeredBy: address, tls: tls)
        } catch where error.code == .serverError && error.message.lowercased().contains("unknown subcommand") {
            return try ClusterMap.fromSlots(try await send(["CLUSTER", "SLOTS"]), answeredBy: address)
        }
    }

    /// Makes `ranges` the slot map: starts the primaries it names that are new (waiting a moment for
    /// their first connection), and stops those it no longer names.
    private func install(_ ranges: [SlotRange]) async throws(RedisClientError) {
        var owners = [ClusterNode?](repeating: nil, count: HashSlot.count)
        var fresh: [ClusterNode] = []
        for range in ranges {
            let (node, isNew) = try self.node(at: range.primary)
            if isNew { fresh.append(node) }
            for slot in range.first...range.last { owners[slot] = node }
        }
        for node in fresh { await node.waitForConnection(timeout: configuration.node.connectTimeout) }
        let (stale, changed) = state.withLock { state -> ([ClusterNode], Bool) in
            let changed = !zip(state.owners, owners).allSatisfy { $0 === $1 }
            state.owners = owners
            state.refreshes += 1
            let serving = Set(owners.compactMap { $0?.address })
            let stale = state.nodes.values.filter { !serving.contains($0.address) }
            for node in stale { state.nodes[node.address] = nil }
            return (stale, changed)
        }
        for node in stale {
            logger.info("Redis Cluster node no longer serves slots; closing its connections", metadata: ["node": "\(node.address)"])
            node.stop()
        }
        refreshCounters[changed ? "changed" : "unchanged"]!.increment()
        if changed {
            let primaries = Set(ranges.map(\.primary)).map(\.description).sorted()
            logger.info("Redis Cluster slot map", metadata: ["primaries": "\(primaries.joined(separator: " "))"])
        }
    }

    /// The node at `address`, made (and its connections started) when it is new.
    private func node(at address: ClusterAddress) throws(RedisClientError) -> (ClusterNode, isNew: Bool) {
        let made: Result<(ClusterNode, Bool), RedisClientError> = state.withLock { state in
            if let node = state.nodes[address] { return .success((node, false)) }
            if case .finished = state.lifecycle {
                return .failure(RedisClientError(.shutdown, message: "the Redis Cluster client has been shut down; the command was not sent"))
            }
            do throws(RedisClientError) {
                var logger = self.logger
                logger[metadataKey: "redis.node"] = "\(address)"
                let client = try RedisClient(
                    configuration: configuration.configuration(of: address), eventLoopGroup: eventLoopGroup, logger: logger)
                // A dropped connection may mean a node gone or replaced: read the map again (throttled).
                client.observeLosses { [weak self] in self?.requestRefresh() }
                let node = ClusterNode(address: address, client: client, factory: metricsFactory)
                state.nodes[address] = node
                state.starter?.yield(node)
                return .success((node, true))
            } catch {
                return .failure(error)
            }
        }
        return try made.get()
    }

    /// Waits until every slot has a primary and each primary has a connection up; a startup helper.
    public func waitUntilConnected(timeout: Duration) async throws(RedisClientError) {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (owners, unserved) = state.withLock { state in
                (Set(state.owners.compactMap { $0.map(ObjectIdentifier.init) }).count, state.owners.lazy.filter { $0 == nil }.count)
            }
            let nodes = primaries
            if unserved == 0, owners > 0, nodes.allSatisfy({ $0.client.hasConnection }) { return }
            if ContinuousClock.now >= deadline {
                throw RedisClientError(
                    .notConnected,
                    message: "the Redis Cluster at \(endpointDescription) is not ready after \(timeout): \(unserved) slots without a primary, "
                        + "\(nodes.filter { !$0.client.hasConnection }.count) of \(nodes.count) primaries not connected")
            }
            do {
                try await Task.sleep(for: .milliseconds(5))
            } catch {
                throw RedisClientError(.notConnected, message: "cancelled while waiting for the Redis Cluster")
            }
        }
    }

    // MARK: Routing

    /// The slot of keys tagged `{hashTag}`, from the cache after the first time.
    func slot(forHashTag hashTag: String) -> Int {
        if let slot = slotOfTag.withLock({ $0[hashTag] }) { return slot }
        let slot = HashSlot.of(hashTag: hashTag)
        slotOfTag.withLock { cache in
            if cache.count >= 100_000 { cache.removeAll(keepingCapacity: true) }
            cache[hashTag] = slot
        }
        return slot
    }

    /// The primary that serves `slot` now, if any.
    public func primary(ofSlot slot: Int) -> ClusterAddress? {
        state.withLock { $0.owners[slot]?.address }
    }

    /// The primary serving keys tagged `{hashTag}`, if any (the node that `send`/`evalSHA` reach first).
    public func primary(forHashTag hashTag: String) -> ClusterAddress? {
        primary(ofSlot: slot(forHashTag: hashTag))
    }

    /// The primaries of the current map, each once.
    var primaries: [ClusterNode] {
        state.withLock { state in
            var seen = Set<ObjectIdentifier>()
            return state.owners.compactMap { owner in
                guard let owner, seen.insert(ObjectIdentifier(owner)).inserted else { return nil }
                return owner
            }
        }
    }

    /// A task executor on the event loop of connection `index % connections` of the primaries (they
    /// share the loops): a caller with it as executor preference makes its checks without a thread hop,
    /// whichever primary they go to (see `RedisClient.taskExecutor(for:)`).
    public func taskExecutor(for index: Int) -> any TaskExecutor {
        let nodes = state.withLock { Array($0.nodes.values) }
        guard let first = nodes.min(by: { $0.address.description < $1.address.description }) else {
            return EventLoopTaskExecutor(eventLoopGroup.next())
        }
        return first.client.taskExecutor(for: index)
    }

    /// The addresses of the current map's primaries.
    public var primaryAddresses: [ClusterAddress] { primaries.map(\.address) }

    /// Slot-map refreshes installed so far (tests).
    var refreshCount: Int { state.withLock { $0.refreshes } }

    /// Sends one command about `key` to the primary of its slot, following redirections.
    public func send(_ arguments: [RedisArgument], key: String) async throws(RedisClientError) -> RedisReply {
        try RESPCommandEncoder.validate(arguments)
        return try await route(slot: HashSlot.of(key: key)) { (node, asking) async throws(RedisClientError) in
            try await node.client.send(asking: asking) { RESPCommandEncoder.write(arguments, into: &$0) }
        }
    }

    /// Sends one command given as text arguments about `key`.
    public func send(_ arguments: [String], key: String) async throws(RedisClientError) -> RedisReply {
        try await send(arguments.map { RedisArgument($0) }, key: key)
    }

    /// Sends one command to the primary at `address` (one of `primaryAddresses`), with no redirection
    /// followed: for commands about the node itself, such as a `SCAN` of its keys.
    public func send(_ arguments: [RedisArgument], toPrimary address: ClusterAddress) async throws(RedisClientError) -> RedisReply {
        guard let node = state.withLock({ $0.nodes[address] }) else {
            throw RedisClientError(
                .notConnected, message: "\(address) is not a primary of the Redis Cluster's current map; the command was not sent")
        }
        do {
            return try await node.client.send(arguments)
        } catch {
            node.metrics.failed(error.code)
            if error.code == .notConnected || error.code == .connectionClosed || error.code == .timeout { requestRefresh() }
            throw error
        }
    }

    /// Sends `arguments` to every primary; the replies in `primaryAddresses` order (`PING`, `SCRIPT LOAD`, …).
    public func sendToPrimaries(_ arguments: [RedisArgument]) async -> [(ClusterAddress, Result<RedisReply, RedisClientError>)] {
        var replies: [(ClusterAddress, Result<RedisReply, RedisClientError>)] = []
        for node in primaries {
            do {
                replies.append((node.address, .success(try await node.client.send(arguments))))
            } catch {
                replies.append((node.address, .failure(error)))
            }
        }
        return replies
    }

    /// Whether the map has a primary for every slot and each of them answers `PING`.
    public func isReachable() async -> Bool {
        guard state.withLock({ state in !state.owners.contains { $0 == nil } }) else { return false }
        return await sendToPrimaries(["PING"]).allSatisfy { (try? $0.1.get())?.string == "PONG" }
    }

    /// Loads a script on every primary (a node that misses it later loads it on `NOSCRIPT`); its SHA1.
    public func scriptLoad(_ lua: String) async throws(RedisClientError) -> String {
        var lastError: RedisClientError?
        var sha: String?
        for node in primaries {
            do {
                sha = try await node.client.scriptLoad(lua)
            } catch {
                lastError = error
            }
        }
        if let sha { return sha }
        throw lastError ?? RedisClientError(.notConnected, message: "no primary of the Redis Cluster is known yet; the script was not loaded")
    }

    /// An `EVALSHA` that `encode` writes whole, for keys of `slot`, on the primary that serves it:
    /// loaded there on `NOSCRIPT`, following `MOVED` and `ASK`.
    nonisolated(nonsending) func evalSHA(
        _ sha: String, source: String, slot: Int, encode: (inout ByteBuffer) -> Void
    ) async throws(RedisClientError) -> RedisReply {
        try await route(slot: slot) { (node, asking) async throws(RedisClientError) in
            try await node.client.evalSHA(sha, source: source, asking: asking, encode: encode)
        }
    }

    /// Makes `call` on the primary of `slot`, following `MOVED` and `ASK` and retrying `TRYAGAIN`
    /// (none of which ran the command); any other error reaches the caller as it is.
    nonisolated(nonsending) private func route(
        slot: Int, _ call: nonisolated(nonsending) (ClusterNode, _ asking: Bool) async throws(RedisClientError) -> RedisReply
    ) async throws(RedisClientError) -> RedisReply {
        guard var node = state.withLock({ $0.owners[slot] }) else {
            requestRefresh()
            throw RedisClientError(
                .notConnected,
                message: "no primary of the Redis Cluster serves slot \(slot) (a failover may be under way); the command was not sent")
        }
        var asking = false
        var redirects = 0
        var retries = 0
        while true {
            do {
                return try await call(node, asking)
            } catch {
                let prefix = error.serverErrorPrefix
                if prefix == "MOVED" || prefix == "ASK" {
                    node.metrics.redirect(prefix == "MOVED" ? .moved : .ask)
                    guard redirects < configuration.maximumRedirects,
                        let (movedSlot, address) = Self.redirection(error.message, from: node.address)
                    else { throw error }
                    redirects += 1
                    let (target, _) = try self.node(at: address)
                    if prefix == "MOVED" {
                        state.withLock { $0.owners[movedSlot] = target }
                        requestRefresh()
                    }
                    await target.waitForConnection(timeout: configuration.node.connectTimeout)
                    node = target
                    asking = prefix == "ASK"
                    continue
                }
                if prefix == "TRYAGAIN" {
                    node.metrics.redirect(.tryAgain)
                    guard retries < configuration.tryAgainAttempts else { throw error }
                    retries += 1
                    do {
                        try await Task.sleep(for: configuration.tryAgainDelay * retries)
                    } catch {
                        throw RedisClientError(.timeout, message: "cancelled while waiting to retry after TRYAGAIN; the command did not run")
                    }
                    continue
                }
                node.metrics.failed(error.code)
                if error.code == .notConnected || error.code == .connectionClosed || error.code == .timeout
                    || prefix == "CLUSTERDOWN"
                {
                    requestRefresh()
                }
                throw error
            }
        }
    }

    /// The slot and address of a `MOVED <slot> <host>:<port>` or `ASK <slot> <host>:<port>` error.
    static func redirection(_ message: String, from node: ClusterAddress) -> (slot: Int, address: ClusterAddress)? {
        let fields = message.split(separator: " ")
        guard fields.count >= 3, let slot = Int(fields[1]), (0..<HashSlot.count).contains(slot),
            let address = ClusterAddress(redirect: fields[2], fallbackHost: node.host)
        else { return nil }
        return (slot, address)
    }
}

/// One primary (of a cluster, or the one Sentinel names): its client (connections), and its metrics.
final class ClusterNode: Sendable {
    let address: ClusterAddress
    let client: RedisClient
    let metrics: NodeMetrics
    private let stopped: AsyncStream<Void>
    private let stopper: AsyncStream<Void>.Continuation

    init(address: ClusterAddress, client: RedisClient, factory: any MetricsFactory) {
        self.address = address
        self.client = client
        metrics = NodeMetrics(node: address.description, factory: factory)
        (stopped, stopper) = AsyncStream.makeStream(of: Void.self)
    }

    /// Runs the node's client until `stop()` or cancellation.
    func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.client.run() }
            for await _ in stopped {}
            group.cancelAll()
        }
    }

    func stop() {
        stopper.finish()
    }

    /// Waits until a connection is up, or `timeout` passes.
    func waitForConnection(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while !client.hasConnection, ContinuousClock.now < deadline {
            do { try await Task.sleep(for: .milliseconds(2)) } catch { return }
        }
    }
}

/// A cluster node's metrics, labelled with its address.
struct NodeMetrics: Sendable {
    enum Redirect: String { case moved, ask, tryAgain = "tryagain" }

    private let redirects: [String: Counter]
    private let errors: [String: Counter]

    init(node: String, factory: any MetricsFactory) {
        var redirects: [String: Counter] = [:]
        for kind in ["moved", "ask", "tryagain"] {
            redirects[kind] = Counter(label: "tollgate_redis_redirects_total", dimensions: [("node", node), ("kind", kind)], factory: factory)
        }
        self.redirects = redirects
        var errors: [String: Counter] = [:]
        for kind in ["timeout", "connection", "overloaded", "server", "other"] {
            errors[kind] = Counter(label: "tollgate_redis_node_errors_total", dimensions: [("node", node), ("kind", kind)], factory: factory)
        }
        self.errors = errors
    }

    func redirect(_ kind: Redirect) {
        redirects[kind.rawValue]!.increment()
    }

    func failed(_ code: RedisClientError.Code) {
        let kind =
            switch code {
            case .timeout: "timeout"
            case .notConnected, .connectionClosed, .connectFailed: "connection"
            case .overloaded: "overloaded"
            case .serverError: "server"
            default: "other"
            }
        errors[kind]!.increment()
    }
}
