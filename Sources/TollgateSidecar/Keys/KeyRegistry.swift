import Foundation
import Logging
import Metrics
import Synchronization
import TollgateHTTP

/// The sidecar's key registry: hashes the key (SHA-256), asks the source (a key file or Redis) and caches
/// the answer in process.
///
/// - Found keys are reused for `ttl`, unknown keys for `negativeTTL` (so a flood of made-up keys costs one
///   source lookup per key and TTL, not one per request). A revoked or expired key stops working within
///   `ttl`: expiry itself is checked against the wall clock on every request, cached or not.
/// - The cache holds at most `capacity` entries; when full, the oldest entry goes (first in, first out:
///   with one TTL for all, that is also the one closest to expiring).
/// - When the source cannot answer, a key found within `staleIfError` is still answered from the cache
///   (a Redis outage does not lock every client out); anything else makes `resolve` throw (503).
public final class KeyRegistry: CachingAPIKeyResolver {
    /// How lookups are cached.
    public struct CachePolicy: Sendable, Equatable {
        public var ttl: Duration
        public var negativeTTL: Duration
        public var capacity: Int
        public var staleIfError: Duration

        public init(ttl: Duration = .seconds(5), negativeTTL: Duration = .seconds(5), capacity: Int = 100_000, staleIfError: Duration = .seconds(60)) {
            self.ttl = ttl
            self.negativeTTL = negativeTTL
            self.capacity = capacity
            self.staleIfError = staleIfError
        }
    }

    private struct Setup: Sendable {
        var source: any KeySource
        var policy: CachePolicy
    }

    private let setup: Mutex<Setup>
    private let cache: Mutex<KeyCache>
    /// Bumped when the cache is emptied (`replace`): answers kept by callers from before are not used again.
    private let generation = Atomic<UInt64>(0)
    /// `tollgate_key_lookups_total` by result, each made once (no label looked up per request).
    private let lookups: Lookups
    private let logger: Logger
    /// Unix seconds now (expiry checks).
    private let wallClock: @Sendable () -> Int64
    /// Now on the monotonic clock (cache ages).
    private let now: @Sendable () -> ContinuousClock.Instant

    /// - Parameters:
    ///   - wallClock: unix seconds now, for keys' `expires_at`; tests pass their own.
    ///   - now: the monotonic clock the cache ages by; tests pass their own.
    public init(
        source: any KeySource, policy: CachePolicy = .init(), logger: Logger,
        metricsFactory: any MetricsFactory = MetricsSystem.factory,
        wallClock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) },
        now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }
    ) {
        self.now = now
        setup = Mutex(Setup(source: source, policy: policy))
        cache = Mutex(KeyCache(capacity: policy.capacity))
        self.logger = logger
        self.wallClock = wallClock
        lookups = Lookups(factory: metricsFactory)
    }

    /// The source in use.
    public var source: any KeySource { setup.withLock { $0.source } }

    /// Switches to another source or cache policy (a reload) and forgets every cached answer.
    public func replace(source: any KeySource, policy: CachePolicy) {
        setup.withLock { $0 = Setup(source: source, policy: policy) }
        cache.withLock { $0 = KeyCache(capacity: policy.capacity) }
        generation.add(1, ordering: .releasing)
    }

    /// Number of cached lookups (for tests and monitoring).
    public var cachedCount: Int { cache.withLock { $0.count } }

    public func cachedResolution(_ key: APIKey) -> KeyResolution? {
        cached(KeyDigest(of: key), now: now())
    }

    /// A found key's answer comes with its reuse: until its cache entry's TTL ends, as long as the keys
    /// are not reloaded and the key has not expired. Unknown, revoked and expired keys' answers do not.
    public func cachedLookup(_ key: APIKey) -> (resolution: KeyResolution, reuse: KeyReuse?)? {
        let digest = KeyDigest(of: key)
        let now = self.now()
        // The generation is read before the entry: a reload in between leaves the answer with the old
        // one, which is not used again.
        let generation = self.generation.load(ordering: .acquiring)
        guard let (resolved, freshUntil) = cache.withLock({ $0.freshEntry(digest, now: now) }) else { return nil }
        guard let resolved else {
            lookups.negativeHit.increment()
            return (KeyResolution(.unknown, fingerprint: digest.fingerprint), nil)
        }
        lookups.hit.increment()
        let resolution = resolved.resolution(now: wallClock())
        guard case .active = resolution.status else { return (resolution, nil) }
        return (resolution, KeyReuse(freshUntil: freshUntil, expiresAt: resolved.record.expiresAt, generation: generation))
    }

    public func isStillFresh(_ reuse: KeyReuse) -> Bool {
        guard now() < reuse.freshUntil, generation.load(ordering: .acquiring) == reuse.generation else { return false }
        if let expiresAt = reuse.expiresAt, wallClock() >= expiresAt { return false }
        lookups.hit.increment()
        return true
    }

    private func cached(_ digest: KeyDigest, now: ContinuousClock.Instant) -> KeyResolution? {
        switch cache.withLock({ $0.fresh(digest, now: now) }) {
        case .some(.some(let resolved)):
            lookups.hit.increment()
            return resolved.resolution(now: wallClock())
        case .some(.none):
            lookups.negativeHit.increment()
            return KeyResolution(.unknown, fingerprint: digest.fingerprint)
        case .none:
            return nil
        }
    }

    public func resolve(_ key: APIKey) async throws -> KeyResolution {
        let digest = KeyDigest(of: key)
        let now = self.now()
        if let answer = cached(digest, now: now) { return answer }
        let current = setup.withLock { $0 }
        do {
            let record = try await current.source.record(for: digest)
            lookups.miss.increment()
            let ttl = record == nil ? current.policy.negativeTTL : current.policy.ttl
            let resolved = record.map { ResolvedKey($0, digest: digest) }
            cache.withLock { $0.store(digest, resolved, fetchedAt: now, expiresAt: now + ttl) }
            guard let resolved else { return KeyResolution(.unknown, fingerprint: digest.fingerprint) }
            return resolved.resolution(now: wallClock())
        } catch {
            if let resolved = cache.withLock({ $0.stale(digest, now: now, within: current.policy.staleIfError) }) {
                lookups.stale.increment()
                logger.debug("key registry unreachable; answering from the cache", metadata: ["key": "\(resolved.fingerprint)"])
                return resolved.resolution(now: wallClock())
            }
            lookups.error.increment()
            throw error
        }
    }

    /// Whether the source answers (for `/readyz`).
    public func isReachable() async -> Bool {
        await source.isReachable()
    }
}

/// The registry's counters of lookups, by result.
private struct Lookups: Sendable {
    let hit: Counter
    let negativeHit: Counter
    let miss: Counter
    let stale: Counter
    let error: Counter

    init(factory: any MetricsFactory) {
        func counter(_ result: String) -> Counter {
            Counter(label: "tollgate_key_lookups_total", dimensions: [("result", result)], factory: factory)
        }
        hit = counter("hit")
        negativeHit = counter("negative_hit")
        miss = counter("miss")
        stale = counter("stale")
        error = counter("error")
    }
}

/// A bounded map of lookups, evicted first in, first out.
struct KeyCache {
    struct Entry {
        /// Nil: the key is unknown (a negative entry).
        var record: ResolvedKey?
        var fetchedAt: ContinuousClock.Instant
        var expiresAt: ContinuousClock.Instant
        /// Its position in `order`.
        var slot: Int
    }

    let capacity: Int
    private var entries: [KeyDigest: Entry] = [:]
    /// Digests in insertion order, as a ring of `capacity` slots.
    private var order: [KeyDigest] = []
    private var next = 0

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    var count: Int { entries.count }

    /// `.some(record)` for a fresh entry (`.some(nil)`: known to be unknown), nil when absent or expired.
    func fresh(_ digest: KeyDigest, now: ContinuousClock.Instant) -> ResolvedKey?? {
        freshEntry(digest, now: now).map { $0.0 }
    }

    /// `fresh`, with when the entry stops being fresh.
    func freshEntry(_ digest: KeyDigest, now: ContinuousClock.Instant) -> (ResolvedKey?, ContinuousClock.Instant)? {
        guard let entry = entries[digest], now < entry.expiresAt else { return nil }
        return (entry.record, entry.expiresAt)
    }

    /// A found record fetched within `window`, however old its TTL says it is.
    func stale(_ digest: KeyDigest, now: ContinuousClock.Instant, within window: Duration) -> ResolvedKey? {
        guard let entry = entries[digest], let record = entry.record, now < entry.fetchedAt + window else { return nil }
        return record
    }

    mutating func store(_ digest: KeyDigest, _ record: ResolvedKey?, fetchedAt: ContinuousClock.Instant, expiresAt: ContinuousClock.Instant) {
        if var entry = entries[digest] {
            entry.record = record
            entry.fetchedAt = fetchedAt
            entry.expiresAt = expiresAt
            entries[digest] = entry
            return
        }
        let slot: Int
        if order.count < capacity {
            slot = order.count
            order.append(digest)
        } else {
            slot = next
            let evicted = order[slot]
            if entries[evicted]?.slot == slot { entries[evicted] = nil }
            order[slot] = digest
            next = (next + 1) % capacity
        }
        entries[digest] = Entry(record: record, fetchedAt: fetchedAt, expiresAt: expiresAt, slot: slot)
    }
}
