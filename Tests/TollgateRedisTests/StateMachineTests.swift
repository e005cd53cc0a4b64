import NIOCore
import Testing

@testable import TollgateRedis

/// The connection's decisions, without any I/O: promises are plain integers here.
@Suite struct StateMachineTests {
    typealias Machine = RedisCommandStateMachine<Int>

    func at(_ milliseconds: Int64) -> NIODeadline { .uptimeNanoseconds(UInt64(milliseconds) * 1_000_000) }

    @Test func repliesCompleteCommandsInOrderAndErrorsFailOnlyTheirOwn() {
        var machine = Machine()
        for id in 1...3 {
            guard case .write = machine.send(id, deadline: at(1000)) else { Issue.record("not written"); return }
        }
        guard case .succeed(1, .status("OK")) = machine.receivedReply(.status("OK")) else { Issue.record("1"); return }
        guard case .fail(2, let error) = machine.receivedReply(.error("WRONGTYPE no")) else { Issue.record("2"); return }
        #expect(error.code == .serverError && error.serverErrorPrefix == "WRONGTYPE")
        guard case .succeed(3, .integer(9)) = machine.receivedReply(.integer(9)) else { Issue.record("3"); return }
        #expect(machine.pendingCount == 0)
    }

    @Test func onlyTheEarliestDeadlineArmsATimer() {
        var machine = Machine()
        guard case .write(armTimer: at(1000)) = machine.send(1, deadline: at(1000)) else { Issue.record("arm"); return }
        guard case .write(armTimer: nil) = machine.send(2, deadline: at(1500)) else { Issue.record("no arm"); return }
        guard case .write(armTimer: at(800)) = machine.send(3, deadline: at(800)) else { Issue.record("earlier"); return }
        #expect(machine.armedDeadline == at(800))
    }

    @Test func aTimerWithNothingExpiredRearmsAtTheNextDeadline() {
        var machine = Machine()
        _ = machine.send(1, deadline: at(1000))
        _ = machine.send(2, deadline: at(1500))
        _ = machine.receivedReply(.null)
        guard case .rearm(at(1500)) = machine.timerFired(now: at(1000)) else { Issue.record("rearm"); return }
        _ = machine.receivedReply(.null)
        guard case .none = machine.timerFired(now: at(1500)) else { Issue.record("none"); return }
        #expect(!machine.isClosed)
    }

    @Test func aTimeoutFailsTheExpiredCommandsAndClosesTheRest() {
        var machine = Machine()
        _ = machine.send(1, deadline: at(1000))
        _ = machine.send(2, deadline: at(1000))
        _ = machine.send(3, deadline: at(1700))
        guard case .closeConnection(let timedOut, let others) = machine.timerFired(now: at(1200)) else {
            Issue.record("expected a close")
            return
        }
        #expect(timedOut == [1, 2])
        #expect(others == [3])
        #expect(machine.isClosed)
        // A late reply on the closed connection is never handed to anyone.
        guard case .closeConnection(let failing, _) = machine.receivedReply(.status("OK")) else {
            Issue.record("late reply")
            return
        }
        #expect(failing.isEmpty)
        guard case .fail(let error) = machine.send(4, deadline: at(3000)) else { Issue.record("send after close"); return }
        #expect(error.code == .notConnected)
    }

    @Test func anUnsolicitedReplyClosesTheConnection() {
        var machine = Machine()
        guard case .closeConnection(_, let error) = machine.receivedReply(.status("OK")) else { Issue.record(); return }
        #expect(error.code == .protocolError)
    }

    @Test func closingReturnsEveryPendingPromiseOnce() {
        var machine = Machine()
        _ = machine.send(1, deadline: at(1000))
        _ = machine.send(2, deadline: at(1000))
        #expect(machine.close() == [1, 2])
        #expect(machine.close() == [])
        #expect(machine.armedDeadline == nil)
    }
}
