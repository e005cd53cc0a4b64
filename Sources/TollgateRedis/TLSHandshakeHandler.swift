import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS

/// Sits right behind the TLS handler of a new connection until its handshake ends, so that connecting
/// waits for the handshake and reports why it failed (an untrusted certificate, a wrong name) rather than
/// handing out a connection that closes on its first command. It stays in the pipeline after the
/// handshake, passing everything on, to keep the first TLS error that follows it: under TLS 1.3 a server
/// refuses a missing client certificate only after the client's handshake has completed, and the
/// connection may be closed and its pipeline gone before the first command can say why.
final class TLSHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    /// The first error after the handshake completed.
    let laterError = NIOLockedValueBox<(any Error)?>(nil)
    private var completed = false
    private let promise: EventLoopPromise<Void>
    private let deadline: NIODeadline
    private var timer: Scheduled<Void>?

    /// Succeeds when the handshake completes; fails with the TLS error, or when the connection closes or
    /// `deadline` passes first.
    var handshake: EventLoopFuture<Void> { promise.futureResult }

    init(eventLoop: any EventLoop, deadline: NIODeadline) {
        promise = eventLoop.makePromise(of: Void.self)
        self.deadline = deadline
    }

    /// Fails the handshake of a handler that never made it into a pipeline (its promise must complete).
    func abandon(_ error: any Error) {
        promise.fail(error)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [promise] in
            promise.fail(RedisClientError(.timeout, message: "the TLS handshake did not complete within the connect timeout; is the port a TLS port?"))
            channel.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        promise.fail(RedisClientError(.connectionClosed, message: "the connection closed during the TLS handshake"))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)
        if case TLSUserEvent.handshakeCompleted = event {
            timer?.cancel()
            completed = true
            promise.succeed()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if completed {
            laterError.withLockedValue { first in if first == nil { first = error } }
        } else {
            promise.fail(error)
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(RedisClientError(.connectionClosed, message: "the server closed the connection during the TLS handshake"))
        context.fireChannelInactive()
    }
}
