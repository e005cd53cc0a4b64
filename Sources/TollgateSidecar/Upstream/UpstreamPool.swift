import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Keep-alive connections to the upstream, kept per event loop.
///
/// A request takes an idle connection of its own client connection's event loop (so both sides of the
/// exchange run on one thread), or opens a new one. Afterwards the connection goes back to that loop's
/// idle list, which keeps at most `maximumIdle / loops` connections — as nginx's `keepalive` directive,
/// a cache of idle connections, not a cap on concurrent ones. A connection idle for longer than
/// `idleTimeout` is closed rather than reused: an upstream closes idle connections on its own schedule
/// (Node.js after 5 s), and a request sent just as it does would fail.
final class UpstreamPool: Sendable {
    let target: UpstreamTarget
    let connectTimeout: Duration
    let bufferLimit: Int
    let idleTimeout: Duration
    private let maximumIdlePerLoop: Int
    /// The TLS context of an `https` target (the byte-level data path's connections use it too).
    let tls: NIOSSLContext?
    private let idle = Mutex<[ObjectIdentifier: [UpstreamConnection]]>([:])
    private let shutDown = Atomic<Bool>(false)

    /// A pool for `target`; an `https` target gets a TLS context that trusts `trustRoots`, or the
    /// system's roots when nil.
    /// - Throws: when that TLS context cannot be made.
    static func make(
        target: UpstreamTarget, maximumIdle: Int, connectTimeout: Duration, bufferLimit: Int,
        idleTimeout: Duration = .seconds(4), loops: Int = System.coreCount, trustRoots: [NIOSSLCertificate]? = nil
    ) throws -> UpstreamPool {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let trustRoots { configuration.trustRoots = .certificates(trustRoots) }
        let tls = target.tls ? try NIOSSLContext(configuration: configuration) : nil
        return UpstreamPool(
            target: target, tls: tls, maximumIdle: maximumIdle, connectTimeout: connectTimeout, bufferLimit: bufferLimit,
            idleTimeout: idleTimeout, loops: loops)
    }

    private init(
        target: UpstreamTarget, tls: NIOSSLContext?, maximumIdle: Int, connectTimeout: Duration, bufferLimit: Int,
        idleTimeout: Duration, loops: Int
    ) {
        self.target = target
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.bufferLimit = bufferLimit
        self.idleTimeout = idleTimeout
        maximumIdlePerLoop = max(1, maximumIdle / max(1, loops))
    }

    /// An idle connection on `eventLoop`, or a new one.
    func connection(on eventLoop: any EventLoop) async throws(UpstreamFailure) -> UpstreamConnection {
        try await UpstreamConnection.result(of: connectionFuture(on: eventLoop))
    }

    /// `connection(on:)` for a caller on `eventLoop`: an idle connection at once, or a new one later.
    func connectionFuture(on eventLoop: any EventLoop) -> EventLoopFuture<UpstreamConnection> {
        if let found = idleConnection(on: eventLoop) { return eventLoop.makeSucceededFuture(found) }
        guard !shutDown.load(ordering: .relaxed) else {
            return eventLoop.makeFailedFuture(UpstreamFailure.connect("the sidecar is shutting down"))
        }
        return UpstreamConnection.connecting(
            to: target, on: eventLoop, connectTimeout: connectTimeout, bufferLimit: bufferLimit, tls: tls)
    }

    /// An idle connection of `eventLoop` that can still be used; stale ones found on the way are closed.
    private func idleConnection(on eventLoop: any EventLoop) -> UpstreamConnection? {
        let now = NIODeadline.now().uptimeNanoseconds
        let limit = UInt64(idleTimeout.components.seconds) * 1_000_000_000 + UInt64(idleTimeout.components.attoseconds / 1_000_000_000)
        var stale: [UpstreamConnection] = []
        let found = idle.withLock { idle -> UpstreamConnection? in
            let key = ObjectIdentifier(eventLoop)
            while let connection = idle[key]?.popLast() {
                if connection.isReusable, now &- connection.idleSince.load(ordering: .relaxed) < limit { return connection }
                stale.append(connection)
            }
            return nil
        }
        for connection in stale { connection.close() }
        return found
    }

    /// Takes back a connection whose exchange is over: kept if it can carry another, else closed.
    func release(_ connection: UpstreamConnection) {
        guard connection.isReusable, !shutDown.load(ordering: .relaxed) else {
            connection.close()
            return
        }
        connection.idleSince.store(NIODeadline.now().uptimeNanoseconds, ordering: .relaxed)
        let kept = idle.withLock { idle -> Bool in
            let key = ObjectIdentifier(connection.channel.eventLoop)
            guard idle[key, default: []].count < maximumIdlePerLoop else { return false }
            idle[key, default: []].append(connection)
            return true
        }
        if !kept { connection.close() }
    }

    /// Closes every idle connection; connections in use close when their exchange ends.
    func shutdown() {
        shutDown.store(true, ordering: .relaxed)
        let all = idle.withLock { idle in
            defer { idle = [:] }
            return idle.values.flatMap { $0 }
        }
        for connection in all { connection.close() }
    }
}
