import Foundation

/// How `tollgate serve` runs: the sections `server`, `upstream`, `store`, `keys`, `routes`, `unmatched` and `tracing`
/// of a configuration file, read and validated with the plans. Every section is optional: a file with only
/// `plans` runs the sidecar on its defaults (in-memory store, the built-in stand-in upstream, no routes).
///
/// - `server` (mapping, optional): the client-facing listener and the admin listener.
///   - `host` (string, default `127.0.0.1`): address the proxy listens on (`0.0.0.0` for every interface).
///   - `port` (int 0-65535, default 8080): its TCP port; 0 picks a free port (tests).
///   - `admin_host` (string, default `127.0.0.1`): address of `/healthz`, `/readyz` and `/metrics`.
///   - `admin_port` (int 0-65535, default 9090): their port; must differ from `port` unless either is 0.
///   - `admin_token` (string, optional, at least 16 characters): the bearer token of the admin API
///     (`/v1/usage`, `/v1/config`, `/v1/reload`); the environment variable `TOLLGATE_ADMIN_TOKEN`, when
///     set, takes its place (a Kubernetes Secret). Without either, the admin listener answers only
///     `/healthz`, `/readyz` and `/metrics`. Never returned by `/v1/config`.
///   - `watch_files` (bool, default true): reload, as SIGHUP does, when the configuration file or the key
///     file changes (their contents are compared, so an edit, a rename over the file and a Kubernetes
///     ConfigMap's symlink swap all count); a broken file is refused and logged, the old one stays.
///   - `watch_interval` (duration, default 2s): how often the files are compared.
///   - `max_header_size` (size, default 32KiB): the request target and header fields (names and
///     values) together; larger → 431.
///   - `max_body_size` (size, default 16MiB): request body; larger → 413 (by `Content-Length` before
///     anything is forwarded, or while streaming a chunked body).
///   - `idle_timeout` (duration, default 30s): a connection that sends nothing for this long while a
///     request is being read, or between requests, is closed.
///   - `legacy_headers` (bool, default false): also send `X-RateLimit-Limit/-Remaining/-Reset`.
///   - `access_log` (string, default `info`): the level of the one line logged per request: `info`,
///     `debug` or `off`. Refusals (4xx other than 404) and errors (5xx) are logged at `info` whatever
///     the sampling, unless `off`.
///   - `access_log_sample` (int, default 1): log one admitted request in this many.
///   - `shutdown_timeout` (duration, default 30s): on SIGTERM, how long in-flight requests may take
///     to finish before the process exits anyway.
///   - `threads` (int 1-1024, default one per core): the event-loop threads that serve connections
///     (and the Redis store's connections), as nginx's `worker_processes` and HAProxy's `nbthread`;
///     read when the process starts (a reload keeps the number it started with).
///
/// - `upstream` (mapping, optional): where admitted requests go.
///   - `url` (string, optional): `http://host:port` of the message API, optionally with a path prefix.
///     Without it, a built-in stand-in answers `POST /api/v1/messages/send` (for trying Tollgate out).
///     An `https://` URL is verified against the system's roots, or against `ca_file`.
///   - `ca_file` (string, optional, https only): a PEM file of the certificates to trust for the upstream
///     instead of the system's roots (a private CA); relative to the configuration file.
///   - `pool_size` (int, default 64): accepted for older files, with no effect: each client connection
///     keeps its own upstream connection, on its own event loop.
///   - `connect_timeout` (duration, default 1s): a connection not made in time → 504.
///   - `response_timeout` (duration, default 30s): the response head must arrive within this → 504.
///   - `read_timeout` (duration, default 30s): the longest silence while streaming a response body.
///   - `forward_credentials` (bool, default true): pass the client's `Authorization` or
///     `wazzapi-api-key` header on to the upstream (the sidecar always adds `X-Tollgate-Organization`,
///     `X-Tollgate-Plan` and `X-Tollgate-Key-Id`, and drops such headers sent by clients).
///
/// - `store` (mapping, optional): where counters live.
///   - `backend` (string, default `memory`): `memory` (in process) or `redis` (shared by every replica).
///   - `max_entries` (int, default 1_000_000, memory only): the in-memory store's bound.
///   - `url` (string, required for redis unless `cluster` is set): `redis://[[user]:password@]host[:port][/db]`,
///     the same with `rediss://` for TLS, or `unix:///path`.
///   - `cluster` (list of strings, redis only, instead of `url`): seed nodes of a Redis Cluster, such as
///     `[redis://10.0.0.1:6379, redis://10.0.0.2:6379]` (all `redis://` or all `rediss://`; the first one's
///     user and password serve every node). Each check goes to the primary of its organization's slot;
///     `connections` is per primary.
///   - `sentinel` (mapping, redis only, instead of `url` and `cluster`): the primary that Redis Sentinel
///     names, followed through failovers.
///     - `master` (string, required): the name the sentinels monitor it under.
///     - `nodes` (list of strings, required): sentinel URLs, `redis://[[user]:password@]host:port` (all
///       `redis://` or all `rediss://`); the first one's user and password authenticate to every sentinel.
///     - `username`, `password` (strings, optional): the primary's own credentials.
///   - `failure_policy` (string, default `deny`, redis only): when Redis fails or is too slow: `deny`
///     (503 with Retry-After), `allow` (pass unchecked) or `local` (limit in process meanwhile).
///   - `timeout` (duration, default 250ms, redis only): each check's time budget.
///   - `connections` (int, default 4, redis only): connections to Redis.
///   - `unavailable_retry_after` (duration, default 1s, redis only): the Retry-After of a 503.
///   - `coalesce` (bool, default true, redis only): checks of a key that arrive while a call for it is in
///     flight go together as one call when it returns (hot keys cost Redis a fraction of a call each).
///   - `max_batch` (int, default 64, redis only): the most checks one such call decides.
///   - `tls` (mapping, optional, redis only, needs a `rediss://` URL): TLS to Redis, for every `rediss://`
///     connection the sidecar makes (the key registry's too). Paths are relative to the configuration file.
///     The server's certificate is always verified, its name included.
///     - `ca_file` (string, optional): PEM file of the CA certificates that sign the server's certificate;
///       without it, the system's roots.
///     - `cert_file` (string, optional, with `key_file`): PEM file of the client certificate (mutual TLS).
///     - `key_file` (string, optional, with `cert_file`): PEM file of its unencrypted private key.
///     - `server_name` (string, optional): the name sent as SNI and verified in the server's certificate,
///       when it is not the URL's host (a DNS name, not an address).
///
/// - `keys` (mapping, optional): where API keys are looked up, by the SHA-256 of the key.
///   - `source` (string, default `file`): `file` or `redis`.
///   - `file` (string, default `keys.yaml`, file only): the key file, relative to this file's folder.
///   - `url` (string, redis only, default: `store.url`, or the store's cluster): the Redis holding
///     `tg:key:<sha256 hex>` hashes.
///   - `cache_ttl` (duration, default 5s): how long a lookup is reused; a revoked key stops working
///     within this time.
///   - `negative_cache_ttl` (duration, default 5s): how long an unknown key is remembered as unknown.
///   - `cache_size` (int, default 100_000): the most lookups cached.
///   - `stale_if_error` (duration, default 60s): when the registry cannot be reached, a key looked up
///     successfully within this time is still accepted (an unknown key is refused with 503).
///
/// - `routes` (list, optional): what each endpoint requires and costs, first match wins. Each route:
///   - `path` (string, required): a pattern such as `/api/v1/orgs/{org}/messages/{id}`: literal segments,
///     `{name}` for any one segment, a final `*` for any rest; `{org}` must equal the key's organization.
///   - `method` (string, default `*`): an HTTP method such as `POST`, or `*` for any.
///   - `scope` (string, optional): the scope the key must hold (403 otherwise).
///   - `cost` (int ≥ 0 or mapping, default 1): a fixed cost, or `{ per_item: FIELD, max_body_size: SIZE }`:
///     one per element of the JSON array at `FIELD` (dotted for nested objects) of the request body,
///     at least 1; the body is read up to `max_body_size` (default 1MiB; 413 above, 400 when it is not
///     JSON or has no such array).
///   - `limits` (string, default `all`): which of the plan's limits apply: `all`, `key` (the per-key ones),
///     `organization` (the organization-wide ones) or `none`.
///
/// - `unmatched` (string, default `pass`): requests no route matches: `pass` (cost 1, no scope needed)
///   or `not_found` (404).
///
/// - `tracing` (mapping, optional): spans of the data path and their OTLP export; see `TracingSettings`.
///
/// Value types besides those of `TollgateConfiguration`: size: a positive integer of bytes, or one
/// followed by `KiB`, `MiB` or `GiB` (`32KiB`, `16MiB`).
public struct SidecarSettings: Sendable, Equatable {
    public var server = ServerSettings()
    public var upstream = UpstreamSettings()
    public var store = StoreSettings()
    public var keys = KeySourceSettings()
    public var routes: [RouteSettings] = []
    public var unmatched = UnmatchedRoutes.pass
    public var tracing = TracingSettings()

    public init() {}
}

/// The `server` section: listeners, request bounds and logging.
public struct ServerSettings: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 8080
    public var adminHost = "127.0.0.1"
    public var adminPort = 9090
    /// The admin API's bearer token from the file (the environment's `TOLLGATE_ADMIN_TOKEN` wins).
    public var adminToken: String?
    public var watchFiles = true
    public var watchInterval: Duration = .seconds(2)
    public var maxHeaderSize = 32 * 1024
    public var maxBodySize = 16 * 1024 * 1024
    public var idleTimeout: Duration = .seconds(30)
    public var legacyHeaders = false
    public var accessLog = AccessLogLevel.info
    public var accessLogSample = 1
    public var shutdownTimeout: Duration = .seconds(30)
    /// Event-loop threads; nil: one per core.
    public var threads: Int?

    /// The level of per-request log lines.
    public enum AccessLogLevel: String, Sendable, CaseIterable {
        case info, debug, off
    }

    public init() {}
}

/// The `upstream` section: the message API behind the sidecar.
public struct UpstreamSettings: Sendable, Equatable {
    /// Nil: the built-in stand-in answers.
    public var url: String?
    public var poolSize = 64
    public var connectTimeout: Duration = .seconds(1)
    public var responseTimeout: Duration = .seconds(30)
    public var readTimeout: Duration = .seconds(30)
    public var forwardCredentials = true
    /// PEM certificates trusted for an `https` upstream instead of the system's roots.
    public var caFile: String?

    public init() {}
}

/// The `store` section: where counters live.
public struct StoreSettings: Sendable, Equatable {
    public enum Backend: String, Sendable, CaseIterable {
        case memory, redis
    }

    /// What answers when the Redis store fails (the type `RedisLimitStore` applies).
    public typealias FailurePolicy = StoreFailurePolicy

    public var backend = Backend.memory
    public var maxEntries = 1_000_000
    /// The Redis URL; may hold a password, so it is never printed.
    public var url: String?
    /// The seed nodes of a Redis Cluster, instead of `url`; may hold a password, so never printed.
    public var cluster: [String]?
    /// The sentinels that name the primary, instead of `url`.
    public var sentinel: StoreSentinelSettings?
    public var failurePolicy = FailurePolicy.deny
    public var timeout: Duration = .milliseconds(250)
    public var connections = 4
    public var unavailableRetryAfter: Duration = .seconds(1)
    public var coalesce = true
    public var maxBatch = 64
    /// TLS to Redis; nil when `tls` is absent (a `rediss://` URL then trusts the system's roots).
    public var tls: StoreTLSSettings?

    public init() {}
}

/// The `store.sentinel` section: the primary's name, the sentinels, the primary's credentials.
public struct StoreSentinelSettings: Sendable, Equatable {
    public var master: String
    /// Sentinel URLs; their user and password authenticate to the sentinels. May hold a password.
    public var nodes: [String]
    /// The primary's ACL user and password (none when absent). Never printed.
    public var username: String?
    public var password: String?
}

/// The `store.tls` section: whom the sidecar trusts for Redis, the name it expects, its own certificate.
public struct StoreTLSSettings: Sendable, Equatable {
    /// As written: relative paths are relative to the configuration file's folder.
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    public var serverName: String?
}

/// The `keys` section: the key registry's source and cache.
public struct KeySourceSettings: Sendable, Equatable {
    public enum Source: String, Sendable, CaseIterable {
        case file, redis
    }

    public var source = Source.file
    /// As written: relative paths are relative to the configuration file's folder.
    public var file = "keys.yaml"
    /// The Redis URL when `source` is `redis`; nil means the store's cluster (`store.cluster`).
    public var url: String?
    public var cacheTTL: Duration = .seconds(5)
    public var negativeCacheTTL: Duration = .seconds(5)
    public var cacheSize = 100_000
    public var staleIfError: Duration = .seconds(60)

    public init() {}
}

/// One entry of `routes`: which requests it matches, and what they need and cost.
public struct RouteSettings: Sendable, Equatable {
    /// One segment of a path pattern.
    public enum Segment: Sendable, Equatable {
        /// Matches exactly this text.
        case literal(String)
        /// `{name}`: matches any one non-empty segment.
        case parameter(String)
        /// A final `*`: matches whatever remains, even nothing.
        case rest
    }

    /// How much a request costs.
    public enum Cost: Sendable, Equatable {
        /// The same for every request (0 reads without consuming).
        case fixed(Int)
        /// One per element of the JSON array at `field` (dot-separated for nested objects) of the
        /// body, at least 1, reading at most `maxBodySize` bytes of body.
        case perItem(field: [String], maxBodySize: Int)
    }

    /// Which of the key's plan's limits apply.
    public enum LimitSelection: String, Sendable, Equatable, CaseIterable {
        case all, key, organization, none
    }

    /// Nil matches any method.
    public var method: String?
    /// The pattern as written, for logs and metrics.
    public var path: String
    public var segments: [Segment]
    public var scope: String?
    public var cost: Cost
    public var limits: LimitSelection

    public init(
        method: String?, path: String, segments: [Segment], scope: String?, cost: Cost = .fixed(1),
        limits: LimitSelection = .all
    ) {
        self.method = method
        self.path = path
        self.segments = segments
        self.scope = scope
        self.cost = cost
        self.limits = limits
    }

    /// The `{org}` parameter's name: the segment that must equal the key's organization.
    public static let organizationParameter = "org"
}

/// What happens to a request no route matches.
public enum UnmatchedRoutes: String, Sendable, Equatable, CaseIterable {
    /// Passed with cost 1 and no scope required.
    case pass
    /// Answered 404.
    case notFound = "not_found"
}
