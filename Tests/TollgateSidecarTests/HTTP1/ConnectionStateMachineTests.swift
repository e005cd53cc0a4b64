import Synchronization
import Testing

@testable import TollgateSidecar

/// A clock that tests move by hand.
final class ManualClock: Clock, Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private let current = Mutex(Instant(offset: .zero))
    var now: Instant { current.withLock { $0 } }
    var minimumResolution: Duration { .nanoseconds(1) }

    func advance(by duration: Duration) {
        current.withLock { $0 = $0.advanced(by: duration) }
    }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        // The state machine never sleeps; nothing in these tests waits on this clock.
        throw CancellationError()
    }
}

/// The listener's connection state machine, event by event with plain values: requests in order,
/// reads held while a decision is pending, bodies relayed or drained, close-after-response, idle
/// timeout, graceful shutdown, and clients or upstreams that leave half way.
@Suite struct ConnectionStateMachineTests {
    typealias Machine = ConnectionStateMachine<ManualClock>
    let clock = ManualClock()

    func machine(idleTimeout: Duration? = .seconds(30)) -> Machine {
        Machine(clock: clock, idleTimeout: idleTimeout)
    }

    /// A machine whose request head has been read: the limiter decides.
    func deciding(keepAlive: Bool = true, hasBody: Bool = false, upgrade: Bool = false, idleTimeout: Duration? = .seconds(30)) -> Machine {
        var machine = machine(idleTimeout: idleTimeout)
        _ = machine.activated()
        _ = machine.bytesArrived()
        _ = machine.headParsed(keepAlive: keepAlive, hasBody: hasBody, upgrade: upgrade)
        return machine
    }

    /// A machine whose request has been read and admitted: it goes upstream.
    func forwarding(keepAlive: Bool = true, hasBody: Bool = false, upgrade: Bool = false, idleTimeout: Duration? = .seconds(30)) -> Machine {
        var machine = deciding(keepAlive: keepAlive, hasBody: hasBody, upgrade: upgrade, idleTimeout: idleTimeout)
        _ = machine.decided(admitted: true)
        return machine
    }

    func at(_ seconds: Int) -> ManualClock.Instant {
        ManualClock.Instant(offset: .seconds(seconds))
    }

    @Test func aRequestWithoutBodyIsForwardedAndTheConnectionWaitsForTheNext() {
        var machine = machine()
        #expect(machine.activated() == .scheduleIdleTimeout(at(30)))
        clock.advance(by: .seconds(1))
        #expect(machine.bytesArrived() == .parseHead)
        #expect(machine.state == .reading)
        #expect(machine.headParsed(keepAlive: true, hasBody: false, upgrade: false) == .decide)
        // Reads wait for the limiter.
        #expect(machine.readRequested(bytesHeld: true) == .none)
        #expect(machine.bytesArrived() == .hold)
        #expect(machine.decided(admitted: true) == .forward(resumeReading: false))
        #expect(machine.readRequested(bytesHeld: true) == .none)
        #expect(machine.responseHeadSent(opensTunnel: false) == .none)
        clock.advance(by: .seconds(2))
        #expect(machine.responseEnded(requestsWaiting: false) == .nextRequest(idleDeadline: at(33), resumeReading: true))
        #expect(machine.state == .idle)
        #expect(machine.readRequested(bytesHeld: true) == .read)
    }

    @Test func aBodyIsReadOnceTheRequestIsAdmitted() {
        var machine = machine()
        _ = machine.activated()
        #expect(machine.bytesArrived() == .parseHead)
        #expect(machine.headParsed(keepAlive: true, hasBody: true, upgrade: false) == .decide)
        #expect(machine.readRequested(bytesHeld: true) == .none)
        // The held read resumes with the decision, for the body to flow upstream.
        #expect(machine.decided(admitted: true) == .forward(resumeReading: true))
        #expect(machine.readRequested(bytesHeld: true) == .read)
        #expect(machine.bytesArrived() == .relayRequestBody)
        #expect(machine.responseHeadSent(opensTunnel: false) == .none)
        // An upstream may answer before the body's end: the body still goes.
        #expect(machine.bytesArrived() == .relayRequestBody)
        #expect(machine.requestBodyEnded() == .none)
        // What follows the body is the next request: it waits.
        #expect(machine.bytesArrived() == .hold)
        #expect(machine.readRequested(bytesHeld: true) == .none)
        #expect(machine.responseEnded(requestsWaiting: false) == .nextRequest(idleDeadline: at(30), resumeReading: true))
    }

    @Test func aRefusedRequestsBodyIsDrainedAndTheConnectionStays() {
        var machine = self.deciding(hasBody: true)
        #expect(machine.decided(admitted: false) == .answer(closeAfter: false, resumeReading: false))
        #expect(machine.readRequested(bytesHeld: true) == .read)
        #expect(machine.bytesArrived() == .discardRequestBody)
        #expect(machine.requestBodyEnded() == .none)
        #expect(machine.bytesArrived() == .hold)
        #expect(machine.responseEnded(requestsWaiting: false) == .nextRequest(idleDeadline: at(30), resumeReading: false))
    }

    /// An answer written before the request's body was read to its end: the next request cannot be
    /// found, so the connection closes.
    @Test func anAnswerBeforeTheBodysEndCloses() {
        var machine = self.deciding(hasBody: true)
        _ = machine.decided(admitted: false)
        #expect(machine.responseEnded(requestsWaiting: false) == .close)
        #expect(machine.state == .closed)
        #expect(machine.bytesArrived() == .none)
    }

    @Test(arguments: [true, false])
    func closeAfterTheAnswerWhenTheRequestAsks(admitted: Bool) {
        var machine = self.deciding(keepAlive: false)
        if admitted {
            #expect(machine.decided(admitted: true) == .forward(resumeReading: false))
            _ = machine.responseHeadSent(opensTunnel: false)
        } else {
            #expect(machine.decided(admitted: false) == .answer(closeAfter: true, resumeReading: false))
        }
        #expect(machine.responseEnded(requestsWaiting: false) == .close)
    }

    @Test func aRefusedHeadIsAnsweredThenClosed() {
        var machine = machine()
        _ = machine.bytesArrived()
        #expect(machine.headRefused() == .answer(closeAfter: true, resumeReading: false))
        #expect(machine.bytesArrived() == .hold)
        #expect(machine.readRequested(bytesHeld: true) == .none)
        #expect(machine.responseEnded(requestsWaiting: false) == .close)
    }

    @Test func upstreamFailures() {
        // Before the answer began: the proxy answers, and the connection stays.
        var early = self.forwarding()
        #expect(early.upstreamFailed() == .answer(closeAfter: false, resumeReading: false))
        #expect(early.responseEnded(requestsWaiting: false) == .nextRequest(idleDeadline: at(30), resumeReading: false))
        // With a body half sent, the answer closes the connection.
        var halfSent = self.forwarding(hasBody: true)
        #expect(halfSent.upstreamFailed() == .answer(closeAfter: true, resumeReading: false))
        // Once the answer began: the client learns it from the connection closing.
        var late = self.forwarding()
        _ = late.responseHeadSent(opensTunnel: false)
        #expect(late.upstreamFailed() == .close)
        #expect(late.responseEnded(requestsWaiting: false) == .none)
    }

    @Test func aHalfClosedClientIsAnsweredThenClosed() {
        var machine = self.deciding()
        #expect(machine.inputClosed(bodyAtHand: false) == .none)
        _ = machine.decided(admitted: true)
        _ = machine.responseHeadSent(opensTunnel: false)
        #expect(machine.responseEnded(requestsWaiting: false) == .close)
    }

    @Test func aClientLeavingHalfWayAbandonsTheExchange() {
        // Input closed in the middle of a body: nothing whole to forward.
        var cut = self.forwarding(hasBody: true)
        #expect(cut.inputClosed(bodyAtHand: false) == .abandon)
        // The connection closing while the limiter decides.
        var gone = self.deciding()
        #expect(gone.closed() == .abandon)
        #expect(gone.decided(admitted: true) == .none)
        // An idle connection closing, or a head cut short: nothing to stop.
        var idle = machine()
        #expect(idle.closed() == .none)
        var partial = machine()
        _ = partial.bytesArrived()
        #expect(partial.inputClosed(bodyAtHand: false) == .close)
    }

    @Test func quiescingClosesIdleConnectionsAtOnceAndBusyOnesAfterTheAnswer() {
        var idle = machine()
        _ = idle.activated()
        #expect(idle.quiesce() == .close)
        var busy = machine()
        _ = busy.bytesArrived()
        #expect(busy.quiesce() == .none)
        // A head that arrives while shutting down is answered, then the connection closes.
        _ = busy.headParsed(keepAlive: true, hasBody: false, upgrade: false)
        _ = busy.decided(admitted: true)
        _ = busy.responseHeadSent(opensTunnel: false)
        #expect(busy.responseEnded(requestsWaiting: false) == .close)
    }

    @Test func idleTimeoutCountsFromTheLastByteOrAnswer() {
        var machine = machine(idleTimeout: .seconds(10))
        #expect(machine.activated() == .scheduleIdleTimeout(at(10)))
        clock.advance(by: .seconds(4))
        // A slow head: its bytes move the deadline, and the timer is set again for it.
        _ = machine.bytesArrived()
        clock.advance(by: .seconds(6))
        #expect(machine.idleTimeoutFired() == .scheduleIdleTimeout(at(14)))
        clock.advance(by: .seconds(4))
        #expect(machine.idleTimeoutFired() == .close)
        #expect(machine.state == .closed)
    }

    @Test func noIdleTimeoutWhileARequestIsAnswered() {
        var machine = forwarding(idleTimeout: .seconds(10))
        clock.advance(by: .seconds(60))
        #expect(machine.idleTimeoutFired() == .none)
        #expect(machine.responseHeadSent(opensTunnel: false) == .none)
        #expect(machine.responseEnded(requestsWaiting: false) == .nextRequest(idleDeadline: at(70), resumeReading: false))
        clock.advance(by: .seconds(10))
        #expect(machine.idleTimeoutFired() == .close)
        // Without a timeout, nothing is scheduled.
        var endless = self.machine(idleTimeout: nil)
        #expect(endless.activated() == .none)
        #expect(endless.idleTimeoutFired() == .none)
    }

    @Test func anAcceptedUpgradeTunnelsBothWays() {
        var machine = self.forwarding(upgrade: true)
        #expect(machine.readRequested(bytesHeld: true) == .none)
        #expect(machine.responseHeadSent(opensTunnel: true) == .read)
        #expect(machine.state == .tunnelling)
        #expect(machine.bytesArrived() == .relayRequestBody)
        #expect(machine.readRequested(bytesHeld: true) == .read)
        #expect(machine.idleTimeoutFired() == .none)  // a quiet tunnel is no idle connection
        #expect(machine.closesAfterAnswer(requestsWaiting: false) == false)
        #expect(machine.inputClosed(bodyAtHand: false) == .halfCloseUpstream)
        #expect(machine.bytesArrived() == .relayRequestBody)
        #expect(machine.closed() == .abandon)
        // The upstream ending the tunnel ends the connection, once.
        var ended = self.forwarding(upgrade: true)
        _ = ended.responseHeadSent(opensTunnel: true)
        #expect(ended.tunnelEnded() == .endTunnel)
        #expect(ended.state == .closed)
        #expect(ended.tunnelEnded() == .none)
        #expect(ended.closed() == .none)
        // An upgrade refused by the limiter is answered like any refusal; one answered without a switch
        // is a normal answer, after which the connection serves the next request.
        var refused = self.deciding(upgrade: true)
        #expect(refused.decided(admitted: false) == .answer(closeAfter: false, resumeReading: false))
        var declined = self.forwarding(upgrade: true)
        #expect(declined.responseHeadSent(opensTunnel: false) == .none)
        #expect(declined.state == .streaming(.init(keepAlive: true, bodyRead: true, upgrade: true)))
        #expect(declined.tunnelEnded() == .none)
        #expect(declined.responseEnded(requestsWaiting: false) == .nextRequest(idleDeadline: clock.now.advanced(by: .seconds(30)), resumeReading: false))
        // A 101 to a request that asked for no switch is no tunnel.
        var plain = self.forwarding()
        #expect(plain.responseHeadSent(opensTunnel: true) == .none)
        #expect(plain.state == .streaming(.init(keepAlive: true, bodyRead: true, upgrade: false)))
        // An answer whose end only the connection's end can tell closes it.
        var closing = self.forwarding()
        _ = closing.responseHeadSent(opensTunnel: false, closesConnection: true)
        #expect(closing.closesAfterAnswer(requestsWaiting: true))
        #expect(closing.responseEnded(requestsWaiting: true) == .close)
    }

    /// What the answer's `Connection` field says, known before the answer is written.
    @Test func theAnswerSaysWhetherTheConnectionCloses() {
        #expect(!forwarding().closesAfterAnswer(requestsWaiting: false))
        #expect(forwarding(keepAlive: false).closesAfterAnswer(requestsWaiting: false))
        var quiescing = forwarding()
        _ = quiescing.quiesce()
        #expect(quiescing.closesAfterAnswer(requestsWaiting: false))
        var halfClosed = deciding()
        _ = halfClosed.inputClosed(bodyAtHand: false)
        #expect(halfClosed.closesAfterAnswer(requestsWaiting: false))
        var refusedHead = machine()
        _ = refusedHead.bytesArrived()
        _ = refusedHead.headRefused()
        #expect(refusedHead.closesAfterAnswer(requestsWaiting: false))
    }

    /// Reads go on while nothing waits: stopping them at every request would cost two `epoll_ctl`
    /// calls a request.
    @Test func readsStopOnlyWhileBytesWait() {
        var machine = deciding()
        #expect(machine.readRequested(bytesHeld: false) == .read)
        #expect(machine.decided(admitted: true) == .forward(resumeReading: false))
        #expect(machine.readRequested(bytesHeld: false) == .read)
        #expect(machine.readRequested(bytesHeld: true) == .none)
        _ = machine.responseHeadSent(opensTunnel: false)
        #expect(machine.responseEnded(requestsWaiting: true) == .nextRequest(idleDeadline: at(30), resumeReading: true))
    }

    /// A small body is read whole before the limiter is asked (a route may count the cost from it);
    /// a body that stalls meanwhile counts as idle.
    @Test func aSmallBodyIsCollectedBeforeTheDecision() {
        var machine = machine(idleTimeout: .seconds(10))
        _ = machine.activated()
        _ = machine.bytesArrived()
        #expect(machine.headParsed(keepAlive: true, hasBody: true, upgrade: false, collectBody: true) == .collectBody)
        #expect(machine.readRequested(bytesHeld: true) == .read)
        #expect(machine.bytesArrived() == .collectBody)
        #expect(machine.bodyCollected() == .decide)
        #expect(machine.bodyCollected() == .none)
        #expect(machine.readRequested(bytesHeld: true) == .none)
        #expect(machine.decided(admitted: true) == .forward(resumeReading: true))
        // Without a body there is nothing to collect.
        var bodiless = self.machine()
        _ = bodiless.bytesArrived()
        #expect(bodiless.headParsed(keepAlive: true, hasBody: false, upgrade: false, collectBody: true) == .decide)
        // A body that never comes.
        var stalled = self.machine(idleTimeout: .seconds(10))
        _ = stalled.activated()
        _ = stalled.bytesArrived()
        _ = stalled.headParsed(keepAlive: true, hasBody: true, upgrade: false, collectBody: true)
        clock.advance(by: .seconds(10))
        #expect(stalled.idleTimeoutFired() == .close)
    }

    /// Requests received before the client closed its side, or before shutdown, are answered first.
    @Test func requestsAlreadyReceivedAreAnsweredBeforeClosing() {
        var halfClosed = forwarding()
        _ = halfClosed.inputClosed(bodyAtHand: false)
        #expect(!halfClosed.closesAfterAnswer(requestsWaiting: true))
        _ = halfClosed.responseHeadSent(opensTunnel: false)
        #expect(halfClosed.responseEnded(requestsWaiting: true) == .nextRequest(idleDeadline: at(30), resumeReading: false))
        var quiescing = forwarding()
        _ = quiescing.quiesce()
        _ = quiescing.responseHeadSent(opensTunnel: false)
        #expect(quiescing.responseEnded(requestsWaiting: true) == .nextRequest(idleDeadline: at(30), resumeReading: false))
        _ = quiescing.bytesArrived()
        _ = quiescing.headParsed(keepAlive: true, hasBody: false, upgrade: false)
        _ = quiescing.decided(admitted: false)
        #expect(quiescing.closesAfterAnswer(requestsWaiting: false))
        #expect(quiescing.responseEnded(requestsWaiting: false) == .close)
        // A body that has all arrived when the client closes its side is no cut-off body.
        var whole = deciding(hasBody: true)
        #expect(whole.inputClosed(bodyAtHand: true) == .none)
        // After the last answer, what the client still sends is read (and dropped).
        var last = forwarding(keepAlive: false)
        _ = last.responseHeadSent(opensTunnel: false)
        #expect(last.responseEnded(requestsWaiting: false) == .close)
        #expect(last.readRequested(bytesHeld: true) == .read)
    }

    /// Events that do not fit the state change nothing.
    @Test func eventsOutOfTurnAreIgnored() {
        var machine = machine()
        #expect(machine.decided(admitted: true) == .none)
        #expect(machine.responseEnded(requestsWaiting: false) == .none)
        #expect(machine.responseHeadSent(opensTunnel: false) == .none)
        #expect(machine.upstreamFailed() == .none)
        #expect(machine.headParsed(keepAlive: true, hasBody: false, upgrade: false) == .none)
        #expect(machine.headRefused() == .none)
        #expect(machine.state == .idle)
    }
}
