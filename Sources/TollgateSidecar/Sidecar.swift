import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import Metrics
import NIOCore
import NIOSSL
import Prometheus
import ServiceLifecycle
import Synchronization
import Tollgate
import TollgateHTTP
import TollgateRedis
import UnixSignals

/// The sidecar proxy: `tollgate serve`. One listener for the API (key check, route rule, plan limits,
/// forwarding), one admin listener (`/healthz`, `/readyz`, `/metrics`, and with a token the admin API
/// under `/v1`, see `AdminAPI`), run as swift-service-lifecycle services. The API's listener is the
/// byte-level data path (`ByteListenerService`), in front of the upstream URL (`http://` or `https://`)
/// or of the built-in stand-in (`StandInUpstream`).
///
/// Built from a configuration file (see `SidecarSettings` for its sections): an invalid file, key file or
/// Redis URL is refused before anything starts, with the file, line and field. `reload()` (SIGHUP in
/// `tollgate serve`, `POST /v1/reload`, or a change of either file with `server.watch_files`) reads the files again and puts plans, routes, keys and the other live settings in
/// force without losing counters — the store is the same instance, and plans defined as before keep
/// their counters — or refuses an invalid file with a log line and keeps the old configuration. Settings
/// tied to sockets and connections (listen addresses, upstream URL and pool, store, key source) take
/// effect at the next start; a reload that changes them says so in the log.
///
/// Shutdown is graceful: on SIGTERM (or `shutdown()`), the listeners stop accepting, requests in flight
/// finish (for at most `server.shutdown_timeout`) with their upstream connections, then the Redis
/// connections close.
public final class Sidecar: Sendable {
    public let configurationFile: String
    /// Every metric of the sidecar, for `/metrics` (and for tests).
    public let metricsRegistry: PrometheusCollectorRegistry
    let logger: Logger
    let startup: SidecarSettings
    let live: LiveSettings
    let limiter: RateLimiter
    let keyRegistry: KeyRegistry
    let store: any LimitStore
    let redisClients: [RedisClient]
    /// The upstream when one is configured (nil: the built-in stand-in answers), and the TLS context of
    /// an `https://` one.
    let upstreamTarget: UpstreamTarget?
    let upstreamTLS: NIOSSLContext?
    let accessLog: AccessLog
    let metrics: SidecarMetrics
    let storeClient: RedisClient?
    /// The store's Redis Cluster, when `store.cluster` is set (the key registry shares it).
    let storeCluster: RedisClusterClient?
    /// The store's primary found through Sentinel, when `store.sentinel` is set (the key registry shares it).
    let storeSentinel: RedisSentinelClient?
    private let state = Mutex(RunState())
    /// The configuration file in force (for `/v1/config`).
    private let applied: Mutex<ConfigurationSnapshot>
    /// The admin API's token in force; nil: no admin API.
    let adminToken: Mutex<String?>
    /// The spans' exporter when `tracing.enabled`; nil: no span is made.
    let traceExporter: OTLPExporter?
    /// One reload at a time (SIGHUP, the file watcher and the admin API may ask at once).
    private let reloading = Mutex(())

    struct RunState {
        var proxyPort: Int?
        var adminPort: Int?
        var group: ServiceGroup?
        var shutdownRequested = false
    }

    /// Reads and validates `configurationFile` and everything it names, and prepares the sidecar; nothing
    /// listens or connects until `run()`.
    /// - Throws: `ConfigurationError` naming the file, line and field at fault.
    public init(configurationFile: String, logger: Logger) throws(ConfigurationError) {
        self.configurationFile = configurationFile
        self.logger = logger
        let (configuration, snapshot) = try ConfigurationSnapshot.read(configurationFile)
        let settings = configuration.sidecar
        startup = settings
        applied = Mutex(snapshot)
        adminToken = Mutex(AdminAPI.token(settings.server))

        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        let fast: [Duration] = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .seconds(1),
        ]
        factory.durationHistogramBuckets = [
            "tollgate_store_check_duration_seconds": fast, "tollgate_redis_check_duration_seconds": fast,
        ]
        metricsRegistry = registry
        metrics = SidecarMetrics(factory: factory)

        // Redis: one client per distinct URL, shared by the store and the key registry.
        var clients: [String: RedisClient] = [:]
        func redisClient(_ url: String, field: String) throws(ConfigurationError) -> RedisClient {
            if let client = clients[url] { return client }
            do {
                let redis = try settings.store.redisConfiguration(url: url, configurationFile: configurationFile)
                let client = try RedisClient(configuration: redis, logger: logger)
                clients[url] = client
                return client
            } catch {
                throw ConfigurationError(
                    file: configurationFile, line: nil, path: StoreSettings.field(of: error, urlField: field), message: error.message)
            }
        }

        let store: any LimitStore
        var storeClient: RedisClient?
        var storeCluster: RedisClusterClient?
        var storeSentinel: RedisSentinelClient?
        switch settings.store.backend {
        case .memory:
            store = MemoryStore(configuration: .init(maximumEntries: settings.store.maxEntries))
        case .redis:
            let storeConfiguration = RedisLimitStore.Configuration(
                failurePolicy: settings.store.failurePolicy, unavailableRetryAfter: settings.store.unavailableRetryAfter,
                coalesce: settings.store.coalesce, maximumBatch: settings.store.maxBatch)
            // A client's configuration error, as the configuration file's own (file, field, what to do).
            func made<Client>(_ field: String, _ make: () throws(RedisClientError) -> Client) throws(ConfigurationError) -> Client {
                do {
                    return try make()
                } catch {
                    throw ConfigurationError(
                        file: configurationFile, line: nil, path: StoreSettings.field(of: error, urlField: field), message: error.message)
                }
            }
            let backend: RedisLimitStore.Backend
            if let sentinel = settings.store.sentinel {
                let client = try made("store.sentinel") { () throws(RedisClientError) in
                    try RedisSentinelClient(
                        configuration: settings.store.sentinelConfiguration(sentinel, configurationFile: configurationFile), logger: logger,
                        metricsFactory: factory)
                }
                storeSentinel = client
                backend = .sentinel(client)
            } else if let seeds = settings.store.cluster {
                let cluster = try made("store.cluster") { () throws(RedisClientError) in
                    try RedisClusterClient(
                        configuration: settings.store.clusterConfiguration(urls: seeds, configurationFile: configurationFile), logger: logger,
                        metricsFactory: factory)
                }
                storeCluster = cluster
                backend = .cluster(cluster)
            } else {
                let client = try redisClient(settings.store.url ?? "", field: "store.url")
                storeClient = client
                backend = .server(client)
            }
            store = RedisLimitStore(backend: backend, configuration: storeConfiguration, logger: logger, metricsFactory: factory)
        }
        self.store = store
        self.storeClient = storeClient
        self.storeCluster = storeCluster
        self.storeSentinel = storeSentinel

        let source: any KeySource
        switch settings.keys.source {
        case .file:
            source = FileKeySource(
                file: try KeyFile.load(
                    contentsOfFile: Self.resolve(settings.keys.file, relativeTo: configurationFile),
                    plans: Set(configuration.plans.map(\.name))))
        case .redis:
            if let url = settings.keys.url {
                source = RedisKeySource(client: try redisClient(url, field: "keys.url"), logger: logger)
            } else if let storeCluster {
                source = RedisKeySource(cluster: storeCluster, logger: logger)
            } else if let storeSentinel {
                source = RedisKeySource(sentinel: storeSentinel, logger: logger)
            } else {
                throw ConfigurationError(
                    file: configurationFile, line: nil, path: "keys.url", message: "keys from redis need keys.url or a redis store to share")
            }
        }
        keyRegistry = KeyRegistry(source: source, policy: Self.cachePolicy(settings.keys), logger: logger, metricsFactory: factory)
        redisClients = Array(clients.values)

        limiter = RateLimiter(
            store: store, keys: keyRegistry, policy: RateLimitPolicy(configuration: configuration), logger: logger,
            metricsFactory: factory)
        live = LiveSettings(settings)
        accessLog = AccessLog(live: live, metrics: metrics)
        let tracing = settings.tracing
        traceExporter = tracing.enabled
            ? tracing.endpoint.map { OTLPExporter(endpoint: $0, serviceName: tracing.serviceName, logger: logger, metricsFactory: factory) } : nil
        metrics.storeInfo(
            backend: settings.store.backend.rawValue,
            failurePolicy: settings.store.backend == .redis ? settings.store.failurePolicy.rawValue : "none")

        if let url = settings.upstream.url {
            let trustRoots = try settings.upstream.caFile.map { file throws(ConfigurationError) in
                try Self.certificates(Self.resolve(file, relativeTo: configurationFile), configurationFile: configurationFile)
            }
            guard let target = UpstreamTarget(url: url) else {
                throw ConfigurationError(
                    file: configurationFile, line: nil, path: "upstream.url", message: "expected an http:// or https:// URL, found \(url)")
            }
            upstreamTarget = target
            upstreamTLS = try Self.tlsContext(for: target, trustRoots: trustRoots, configurationFile: configurationFile)
        } else {
            upstreamTarget = nil
            upstreamTLS = nil
        }
    }

    /// The TLS context of an `https://` upstream (nil for `http://`): it trusts `trustRoots`, or the
    /// system's roots when nil.
    static func tlsContext(
        for target: UpstreamTarget, trustRoots: [NIOSSLCertificate]?, configurationFile: String
    ) throws(ConfigurationError) -> NIOSSLContext? {
        guard target.tls else { return nil }
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let trustRoots { configuration.trustRoots = .certificates(trustRoots) }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ConfigurationError(
                file: configurationFile, line: nil, path: "upstream.url", message: "the upstream's TLS context could not be made: \(error)")
        }
    }

    /// The certificates of the PEM file `upstream.ca_file` names.
    static func certificates(_ path: String, configurationFile: String) throws(ConfigurationError) -> [NIOSSLCertificate] {
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw ConfigurationError(
                file: configurationFile, line: nil, path: "upstream.ca_file",
                message: "expected a readable PEM file of certificates, could not load \(path): \(error)")
        }
        guard !certificates.isEmpty else {
            throw ConfigurationError(
                file: configurationFile, line: nil, path: "upstream.ca_file",
                message: "expected a PEM file of certificates, found none in \(path)")
        }
        return certificates
    }

    static func resolve(_ path: String, relativeTo configurationFile: String) -> String {
        if path.hasPrefix("/") { return path }
        return URL(fileURLWithPath: configurationFile).deletingLastPathComponent().appendingPathComponent(path).path
    }

    static func cachePolicy(_ keys: KeySourceSettings) -> KeyRegistry.CachePolicy {
        KeyRegistry.CachePolicy(
            ttl: keys.cacheTTL, negativeTTL: keys.negativeCacheTTL, capacity: keys.cacheSize, staleIfError: keys.staleIfError)
    }

    // MARK: Running

    /// Runs until cancelled, or until a graceful shutdown (`shutdown()`, or one of
    /// `gracefulShutdownSignals`). With `reloadOnHangup`, SIGHUP calls `reload()`.
    public func run(gracefulShutdownSignals: [UnixSignal] = [], reloadOnHangup: Bool = false) async throws {
        let server = startup.server
        let storeClient = self.storeClient
        let storeCluster = self.storeCluster
        let storeSentinel = self.storeSentinel
        let keyRegistry = self.keyRegistry
        let admin = Application(
            router: AdminRoutes.router(
                registry: metricsRegistry,
                storeReady: {
                    if let storeCluster { return await storeCluster.isReachable() }
                    if let storeSentinel { return await storeSentinel.isReachable() }
                    guard let storeClient else { return true }
                    return (try? await storeClient.send(["PING"]))?.string == "PONG"
                },
                keysReady: { await keyRegistry.isReachable() }, api: AdminAPI(sidecar: self)),
            configuration: ApplicationConfiguration(address: .hostname(server.adminHost, port: server.adminPort)),
            onServerRunning: { [weak self] channel in self?.listening(admin: channel.localAddress?.port) },
            logger: logger)

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = redisClients.map {
            .init(service: RedisClientService(client: $0), serviceName: "redis")
        }
        if let storeCluster {
            services.append(.init(service: RedisClusterService(cluster: storeCluster), serviceName: "redis-cluster"))
        }
        if let storeSentinel {
            services.append(.init(service: RedisSentinelService(sentinel: storeSentinel), serviceName: "redis-sentinel"))
        }
        let target = upstreamTarget ?? StandInUpstream.target
        if let traceExporter {
            // Before the listener: services stop in reverse order, so the spans of the last requests
            // are sent after the listener has finished them.
            services.append(.init(service: traceExporter, serviceName: "trace-exporter"))
        }
        services.append(.init(service: admin, serviceName: "admin"))
        // The byte-level data path is the listener, in front of the upstream or of the built-in stand-in.
        let shared = ByteListenerShared(
            limiter: limiter, live: live, target: target, tls: upstreamTLS, accessLog: accessLog,
            logger: logger, maxHeadSize: server.maxHeaderSize, connectTimeout: startup.upstream.connectTimeout,
            standIn: upstreamTarget == nil ? StandInUpstream() : nil,
            tracing: traceExporter.map {
                ListenerTracing(
                    tracer: TollgateTracer(sampleRatio: startup.tracing.sampleRatio, sink: $0), upstreamHost: target.host,
                    upstreamPort: target.port)
            })
        services.append(
            .init(
                service: ByteListenerService(
                    host: server.host, port: server.port, shared: shared, idleTimeout: server.idleTimeout,
                    onRunning: { [weak self] port in self?.listening(proxy: port) }),
                serviceName: "proxy"))
        if reloadOnHangup {
            services.append(.init(service: HangupReloader(sidecar: self), serviceName: "reload"))
        }
        if server.watchFiles {
            services.append(.init(service: FileWatcher(sidecar: self, interval: server.watchInterval), serviceName: "file-watcher"))
        }
        var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: gracefulShutdownSignals, logger: logger)
        configuration.maximumGracefulShutdownDuration = server.shutdownTimeout
        let group = ServiceGroup(configuration: configuration)
        let shutdownFirst = state.withLock { state -> Bool in
            state.group = group
            return state.shutdownRequested
        }
        logger.info(
            "tollgate sidecar starting",
            metadata: [
                "listen": "\(server.host):\(server.port)", "admin": "\(server.adminHost):\(server.adminPort)",
                "store": "\(startup.store.backend.rawValue)", "keys": "\(startup.keys.source.rawValue)",
                "upstream": "\(startup.upstream.url ?? "built-in stand-in")",
            ])
        if shutdownFirst { return }
        try await group.run()
        logger.info("tollgate sidecar stopped")
    }

    /// Stops accepting, lets requests in flight finish, then stops (graceful shutdown).
    public func shutdown() async {
        let group = state.withLock { state -> ServiceGroup? in
            state.shutdownRequested = true
            return state.group
        }
        await group?.triggerGracefulShutdown()
    }

    private func listening(proxy: Int? = nil, admin: Int? = nil) {
        state.withLock { state in
            if let proxy { state.proxyPort = proxy }
            if let admin { state.adminPort = admin }
        }
        if let proxy { logger.info("proxy listening", metadata: ["port": "\(proxy)"]) }
        if let admin { logger.info("admin listening", metadata: ["port": "\(admin)"]) }
    }

    /// The ports both listeners are bound to, once they are (useful with port 0).
    public func listeningPorts(timeout: Duration = .seconds(10)) async throws -> (proxy: Int, admin: Int) {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (proxy, admin) = state.withLock { ($0.proxyPort, $0.adminPort) }
            if let proxy, let admin { return (proxy, admin) }
            guard ContinuousClock.now < deadline else {
                throw ConfigurationError(file: configurationFile, line: nil, path: "server", message: "the listeners did not start within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    // MARK: Reloading

    /// The files a change of which reloads the sidecar: the configuration file, and the key file when
    /// keys come from one (as the configuration in force names it).
    func watchedFiles() -> [String] {
        var files = [configurationFile]
        if startup.keys.source == .file, let source = keyRegistry.source as? FileKeySource { files.append(source.file.path) }
        return files
    }

    /// The configuration file in force: its text and hash.
    public var snapshot: ConfigurationSnapshot { applied.withLock { $0 } }

    /// Reads the configuration file (and key file) again and puts them in force; on any error, logs it
    /// and keeps the configuration in force. Returns whether the new configuration was applied.
    @discardableResult
    public func reload() -> Bool {
        (try? reloadOrThrow()) != nil
    }

    /// `reload()`, answering the new file's snapshot, or throwing the error that refused it.
    @discardableResult
    public func reloadOrThrow() throws(ConfigurationError) -> ConfigurationSnapshot {
        try reloading.withLock { _ in Result { () throws(ConfigurationError) in try reloadLocked() } }.get()
    }

    private func reloadLocked() throws(ConfigurationError) -> ConfigurationSnapshot {
        do {
            let (configuration, snapshot) = try ConfigurationSnapshot.read(configurationFile)
            let settings = configuration.sidecar
            var source = keyRegistry.source
            if startup.keys.source == .file, settings.keys.source == .file {
                source = FileKeySource(
                    file: try KeyFile.load(
                        contentsOfFile: Self.resolve(settings.keys.file, relativeTo: configurationFile),
                        plans: Set(configuration.plans.map(\.name))))
            }
            let pending = Self.restartOnlyChanges(from: startup, to: settings)
            limiter.update(RateLimitPolicy(configuration: configuration))
            keyRegistry.replace(source: source, policy: Self.cachePolicy(settings.keys))
            live.update(settings)
            applied.withLock { $0 = snapshot }
            adminToken.withLock { $0 = AdminAPI.token(settings.server) }
            metrics.reload("applied")
            logger.info(
                "configuration reloaded",
                metadata: ["file": "\(configurationFile)", "plans": "\(configuration.plans.map(\.name).joined(separator: ","))"])
            if !pending.isEmpty {
                logger.warning(
                    "configuration changes that take effect only at the next start were not applied",
                    metadata: ["fields": "\(pending.joined(separator: ", "))"])
            }
            return snapshot
        } catch {
            metrics.reload("refused")
            logger.error(
                "configuration reload refused; the previous configuration stays in force",
                metadata: ["error": "\(error.description)"])
            throw error
        }
    }

    /// The fields of `new` that differ from `old` and need a restart.
    static func restartOnlyChanges(from old: SidecarSettings, to new: SidecarSettings) -> [String] {
        var changed: [String] = []
        func check<T: Equatable>(_ name: String, _ a: T, _ b: T) { if a != b { changed.append(name) } }
        check("server.host", old.server.host, new.server.host)
        check("server.port", old.server.port, new.server.port)
        check("server.admin_host", old.server.adminHost, new.server.adminHost)
        check("server.admin_port", old.server.adminPort, new.server.adminPort)
        check("server.max_header_size", old.server.maxHeaderSize, new.server.maxHeaderSize)
        check("server.idle_timeout", old.server.idleTimeout, new.server.idleTimeout)
        check("server.shutdown_timeout", old.server.shutdownTimeout, new.server.shutdownTimeout)
        check("upstream.url", old.upstream.url, new.upstream.url)
        check("upstream.pool_size", old.upstream.poolSize, new.upstream.poolSize)
        check("upstream.connect_timeout", old.upstream.connectTimeout, new.upstream.connectTimeout)
        check("upstream.ca_file", old.upstream.caFile, new.upstream.caFile)
        check("store", old.store, new.store)
        check("keys.source", old.keys.source, new.keys.source)
        check("keys.url", old.keys.url, new.keys.url)
        check("server.watch_files", old.server.watchFiles, new.server.watchFiles)
        check("server.watch_interval", old.server.watchInterval, new.server.watchInterval)
        check("tracing", old.tracing, new.tracing)
        return changed
    }
}

/// Keeps a Redis client's connections open until graceful shutdown.
struct RedisClientService: Service {
    let client: RedisClient

    func run() async throws {
        await cancelWhenGracefulShutdown { await client.run() }
    }
}

/// Keeps the store's Redis Cluster connections and slot map until graceful shutdown.
struct RedisClusterService: Service {
    let cluster: RedisClusterClient

    func run() async throws {
        await cancelWhenGracefulShutdown { await cluster.run() }
    }
}

/// Keeps the connections to the primary that Sentinel names, and follows it, until graceful shutdown.
struct RedisSentinelService: Service {
    let sentinel: RedisSentinelClient

    func run() async throws {
        await cancelWhenGracefulShutdown { await sentinel.run() }
    }
}

/// Reloads the configuration on every SIGHUP.
struct HangupReloader: Service {
    let sidecar: Sidecar

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            sidecar.logger.info("SIGHUP: reloading the configuration")
            sidecar.reload()
        }
    }
}
