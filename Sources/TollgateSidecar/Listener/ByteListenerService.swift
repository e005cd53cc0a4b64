import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The byte-level listener as a service: binds the proxy's address, serves every connection with a
/// `ByteListenerHandler` on the connection's own event loop, and on graceful shutdown stops accepting
/// and lets each connection finish the request it is answering (`ChannelShouldQuiesceEvent`) before it
/// returns. Cancellation shuts down the same way.
struct ByteListenerService: Service {
    let host: String
    let port: Int
    let shared: ByteListenerShared
    let idleTimeout: Duration?
    /// Called with the bound port once the listener accepts connections.
    let onRunning: @Sendable (Int?) -> Void

    func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let quiesce = ServerQuiescingHelper(group: group)
        let shared = self.shared
        let idleTimeout = self.idleTimeout
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteListenerHandler(shared: shared, idleTimeout: idleTimeout))
                }
            }
            .bind(host: host, port: port).get()
        onRunning(server.localAddress?.port)

        let done = server.eventLoop.makePromise(of: Void.self)
        // Graceful shutdown and cancellation may both come: the shutdown starts once.
        let once = Once()
        let shutDown: @Sendable () -> Void = {
            if once.first() { quiesce.initiateShutdown(promise: done) }
        }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                try? await done.futureResult.get()
            } onGracefulShutdown: {
                shutDown()
            }
        } onCancel: {
            shutDown()
        }
    }
}

/// True the first time it is asked, false after.
private final class Once: Sendable {
    private let asked = Atomic(false)

    func first() -> Bool {
        !asked.exchange(true, ordering: .relaxed)
    }
}
