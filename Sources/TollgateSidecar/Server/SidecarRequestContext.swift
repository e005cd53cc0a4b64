import Hummingbird
import NIOCore
import Synchronization
import TollgateHTTP

/// The request context of the sidecar's listener: the client's address (for `X-Forwarded-For`) and the
/// rate limiter's outcome, kept in a box that the access log (which runs outside the rate limiter) reads
/// after the response.
public struct SidecarRequestContext: RateLimitRequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The peer of the connection.
    public let remoteAddress: SocketAddress?
    /// The connection's event loop (the forwarder's upstream connection is taken on the same one).
    let eventLoop: any EventLoop
    let box: OutcomeBox

    public init(source: ApplicationRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        remoteAddress = source.channel.remoteAddress
        eventLoop = source.channel.eventLoop
        box = OutcomeBox()
    }

    public var rateLimit: RateLimitOutcome? {
        get { box.value.withLock { $0 } }
        nonmutating set { box.value.withLock { $0 = newValue } }
    }

    /// The client's IP address as text, if any.
    var clientAddress: String? {
        remoteAddress?.ipAddress
    }
}

/// One request's outcome, shared by the copies of its context.
final class OutcomeBox: Sendable {
    let value = Mutex<RateLimitOutcome?>(nil)
}
