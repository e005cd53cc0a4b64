import DequeModule
import NIOCore

/// Decides what happens to the commands of one connection; the channel handler carries the decisions out.
///
/// Pure logic with no I/O: generic over the promise type so that it can be tested with plain values.
///
/// **Timeouts.** Each pending command has a deadline. The state machine asks for one timer at a time,
/// instead of one timer per command: armed at the first deadline, re-armed when it fires at the earliest
/// deadline still pending, or earlier when a command with an earlier deadline arrives. When the timer fires, every
/// command whose deadline has passed fails with `.timeout` and the connection is closed, failing every
/// other pending command with `.connectionClosed`. Closing is deliberate: the reply to a timed-out
/// command may still arrive, and on a pipelined connection it would otherwise be taken as the reply to
/// the next command. None of these commands is ever replayed; they may already have run.
struct RedisCommandStateMachine<Promise> {
    struct PendingCommand {
        var promise: Promise
        var deadline: NIODeadline
    }

    private enum State {
        case active(Deque<PendingCommand>)
        case closed
    }

    private var state: State = .active([])
    /// The deadline of the timer the handler has been asked to run, if any.
    private(set) var armedDeadline: NIODeadline?

    /// The number of commands waiting for a reply.
    var pendingCount: Int {
        if case .active(let pending) = state { return pending.count }
        return 0
    }

    var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    // MARK: Sending

    enum SendAction {
        /// Write the command; when `armTimer` is set, (re)arm the timeout timer at that deadline.
        case write(armTimer: NIODeadline?)
        /// Do not write; fail the command's promise with this error.
        case fail(RedisClientError)
    }

    mutating func send(_ promise: Promise, deadline: NIODeadline) -> SendAction {
        switch state {
        case .closed:
            return .fail(RedisClientError(.notConnected, message: "the connection to Redis is closed; the command was not sent"))
        case .active(var pending):
            state = .closed  // avoid a copy of the deque while it is mutated
            pending.append(PendingCommand(promise: promise, deadline: deadline))
            state = .active(pending)
            if let armed = armedDeadline, armed <= deadline {
                return .write(armTimer: nil)
            }
            armedDeadline = deadline
            return .write(armTimer: deadline)
        }
    }

    // MARK: Receiving

    enum ReplyAction {
        case succeed(Promise, RedisReply)
        case fail(Promise, RedisClientError)
        /// A reply with no command waiting: fail these promises (none, in practice) and close.
        case closeConnection(failing: [Promise], RedisClientError)
    }

    mutating func receivedReply(_ reply: RedisReply) -> ReplyAction {
        switch state {
        case .closed:
            return .closeConnection(
                failing: [],
                RedisClientError(.protocolError, message: "received a reply after the connection was closed")
            )
        case .active(var pending):
            state = .closed
            guard let command = pending.popFirst() else {
                return .closeConnection(
                    failing: [],
                    RedisClientError(.protocolError, message: "received a reply while no command was waiting for one")
                )
            }
            state = .active(pending)
            // The armed timer stays armed even when nothing is pending any more: when it fires it finds
            // nothing expired and re-arms at the earliest deadline then pending (or stops). Re-arming at
            // every command instead would cost a cancelled and a new scheduled task per round trip.
            if case .error(let message) = reply {
                return .fail(command.promise, .server(message))
            }
            return .succeed(command.promise, reply)
        }
    }

    // MARK: Timer

    enum TimerAction {
        /// Nothing expired and nothing is pending.
        case none
        /// Nothing expired; arm the timer again at this deadline.
        case rearm(NIODeadline)
        /// Fail `timedOut` with `.timeout`, `others` with `.connectionClosed`, and close the connection.
        case closeConnection(timedOut: [Promise], others: [Promise])
    }

    mutating func timerFired(now: NIODeadline) -> TimerAction {
        armedDeadline = nil
        guard case .active(let pending) = state else { return .none }
        guard let earliest = pending.lazy.map(\.deadline).min() else { return .none }
        if earliest > now {
            armedDeadline = earliest
            return .rearm(earliest)
        }
        state = .closed
        var timedOut: [Promise] = []
        var others: [Promise] = []
        for command in pending {
            if command.deadline <= now {
                timedOut.append(command.promise)
            } else {
                others.append(command.promise)
            }
        }
        return .closeConnection(timedOut: timedOut, others: others)
    }

    // MARK: Closing

    /// The connection is going away (closed by either side, an I/O error, or bytes that are not RESP):
    /// returns every pending promise, to be failed. Later sends fail at once.
    mutating func close() -> [Promise] {
        armedDeadline = nil
        guard case .active(let pending) = state else { return [] }
        state = .closed
        return pending.map(\.promise)
    }
}
