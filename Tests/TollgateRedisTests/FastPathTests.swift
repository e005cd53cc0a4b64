import CHiredis
import Foundation
import NIOCore
import NIOPosix
import Testing
import Tollgate

@testable import TollgateRedis

/// The hot path's shortcuts give exactly what the straightforward way gives: commands formatted in Swift
/// are hiredis' bytes, a pre-encoded check is the EVALSHA of its KEYS and ARGV, the reply tape decodes
/// as hiredis' own reply objects did, and callers on a connection's loop stay on it.
@Suite struct FastPathTests {
    // MARK: Command encoding

    /// `redisFormatCommandArgv`'s bytes for `arguments`: the reference the Swift encoder must match.
    static func hiredisFormat(_ arguments: [[UInt8]]) throws -> [UInt8] {
        var lengths = arguments.map(\.count)
        var flat = arguments.flatMap { $0 }
        if flat.isEmpty { flat.append(0) }
        var target: UnsafeMutablePointer<CChar>?
        let written: Int32 = flat.withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { characters in
                var offset = 0
                var argv: [UnsafePointer<CChar>?] = arguments.map { argument in
                    defer { offset += argument.count }
                    return characters.baseAddress! + offset
                }
                return redisFormatCommandArgv(&target, Int32(arguments.count), &argv, &lengths)
            }
        }
        let formatted = try #require(target)
        defer { redisFreeCommand(formatted) }
        #expect(written >= 0)
        return Array(UnsafeRawBufferPointer(start: formatted, count: Int(written)))
    }

    static var sampleCommands: [[RedisArgument]] {
        var binary = ByteBuffer()
        binary.writeBytes([0x00, 0x0D, 0x0A, 0xFF, 0x24, 0x2A])
        var random = SystemRandomNumberGenerator()
        var large = ByteBuffer()
        large.writeBytes((0..<100_003).map { _ in UInt8.random(in: 0...255, using: &random) })
        return [
            ["PING"],
            ["GET", "key"],
            ["SET", "tg:{org}:k", RedisArgument(binary), "", 42],
            ["", ""],
            ["EVALSHA", RedisArgument(String(repeating: "f", count: 40)), 2, "a", "b", -17, 0, RedisArgument(Int64.max), RedisArgument(Int64.min)],
            ["SET", "héllo wörld ✓", RedisArgument(large)],
            ["MSET"] + (0..<1_000).flatMap { [RedisArgument("k\($0)"), RedisArgument($0 * 7919)] },
            [RedisArgument(String(repeating: "x", count: 9)), RedisArgument(String(repeating: "y", count: 10)),
             RedisArgument(String(repeating: "z", count: 99)), RedisArgument(String(repeating: "w", count: 100))],
        ]
    }

    static func bytes(of argument: RedisArgument) -> [UInt8] {
        switch argument.storage {
        case .string(let string): Array(string.utf8)
        case .bytes(let buffer): Array(buffer.readableBytesView)
        }
    }

    @Test func theSwiftEncoderWritesHiredisBytes() throws {
        for command in Self.sampleCommands {
            let expected = try Self.hiredisFormat(command.map(Self.bytes(of:)))
            let encoded = try RESPCommandEncoder.encode(command)
            #expect(Array(encoded.readableBytesView) == expected, "command of \(command.count) arguments")
            // Appended after existing bytes, with the exact size computed beforehand.
            var buffer = ByteBuffer(string: "prefix")
            try RESPCommandEncoder.encode(command, into: &buffer)
            #expect(Array(buffer.readableBytesView) == Array("prefix".utf8) + expected)
            #expect(RESPCommandEncoder.encodedCount(command) == expected.count)
        }
    }

    @Test(arguments: [0, 1, 9, 10, 99, 100, 12_345, -1, -10, 1_000_000_000_000, Int64.max, Int64.min] as [Int64])
    func integersAreWrittenAsTheirDecimalText(_ value: Int64) throws {
        let expected = try Self.hiredisFormat([Array(String(value).utf8)])
        let size = RESPWriter.arrayHeaderCount(1) + RESPWriter.bulkIntegerCount(value)
        var buffer = ByteBuffer()
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { raw in
            var writer = RESPWriter(raw)
            writer.arrayHeader(1)
            writer.bulkInteger(value)
            return writer.finish(raw, expected: size)
        }
        #expect(Array(buffer.readableBytesView) == expected)
        #expect(size == expected.count)
    }

    // MARK: The pre-encoded check

    /// KEYS and ARGV as the plan's script documents them, built the plain way (the pre-encoding's reference).
    static func referenceArguments(plan: Plan, partition: Partition, costs: [Int], now: Int64?, callerClock: Int64) -> (keys: [String], arguments: [String]) {
        var arguments = now.map { [String($0)] } ?? []
        for index in plan.limits.indices {
            if let calendar = plan.compiled.calendars[index] {
                let around = calendar.neighbourhood(of: callerClock)
                arguments += [around.c0 / 1_000_000, around.c1 / 1_000_000].map { String($0) }
            }
        }
        return (LimitKeys.keys(plan: plan, partition: partition), arguments + costs.map { String($0) })
    }

    @Test func aPreEncodedCheckIsTheEvalshaOfItsKeysAndArguments() throws {
        let sha = String(repeating: "c", count: 40)
        let plans = [
            try everyAlgorithmPlan(),
            try Plan(name: "one", limits: [Limit(name: "f", algorithm: .fixedWindow(limit: 100, window: 60 * second))]),
            try Plan(
                name: "logs", timeZone: TimeZone(identifier: "America/New_York")!,
                limits: [
                    Limit(name: "log", algorithm: .slidingLog(limit: 3, window: 5 * second)),
                    Limit(name: "month", algorithm: .calendar(limit: 100_000, unit: .month), shadow: true),
                    Limit(name: "org-day", algorithm: .calendar(limit: 100_000, unit: .day), scope: .organization),
                ]),
        ]
        let partitions = [
            Partition(organization: "org_123", apiKey: "9f86d081884c7d65"),
            Partition(organization: "org with {braces} and spaces", apiKey: "k"),
            Partition(organization: "ö", apiKey: ""),
        ]
        let callerClock: Int64 = 1_767_225_600 * second + 59 * second + 999_999
        for plan in plans {
            for partition in partitions {
                for (costs, now) in [([1], nil), ([0], Int64(1_700_000_000_123_456)), ([12_345, 0, 3], nil)] as [([Int], Int64?)] {
                    let (keys, arguments) = Self.referenceArguments(plan: plan, partition: partition, costs: costs, now: now, callerClock: callerClock)
                    let reference = try RESPCommandEncoder.encode(
                        ["EVALSHA", RedisArgument(sha), RedisArgument(keys.count)] + (keys + arguments).map { RedisArgument($0) })
                    var encoded = ByteBuffer(string: "x")
                    let call = PlanCall(plan: plan, script: PlanScript(plan: plan, explicitInstant: now != nil), sha: sha)
                    call.encode(
                        partition: partition, hashTag: LimitKeys.hashTag(for: partition), costs: costs, now: now,
                        callerClock: callerClock, into: &encoded)
                    #expect(encoded.readString(length: 1) == "x")
                    #expect(encoded == reference, "plan \(plan.name), organization \(partition.organization), costs \(costs)")
                }
            }
        }
    }

    // MARK: Reply decoding

    @Test func theReplyTapeGrowsForLargeRepliesAndStartsAfreshAfterEach() throws {
        let decoder = try RESPReplyDecoder()
        let large = String(repeating: "0123456789", count: 30_000)
        var wire = "*1000\r\n" + (0..<1_000).map { ":\($0)\r\n" }.joined()
        wire += "$\(large.utf8.count)\r\n\(large)\r\n"
        wire += "*3\r\n+OK\r\n-ERR x\r\n*2\r\n$1\r\na\r\n*-1\r\n"
        // Fed in uneven pieces, so that replies end in the middle of reads.
        let bytes = Array(wire.utf8)
        var replies: [RedisReply] = []
        var start = 0
        var step = 1
        while start < bytes.count {
            let end = min(bytes.count, start + step)
            try decoder.feed(ByteBuffer(bytes: bytes[start..<end]))
            while let reply = try decoder.next() { replies.append(reply) }
            start = end
            step = step * 3 + 1
        }
        #expect(replies.count == 3)
        #expect(replies[0] == .array((0..<1_000).map { .integer(Int64($0)) }))
        #expect(replies[1].string == large)
        #expect(replies[2] == .array([.status("OK"), .error("ERR x"), .array([.bulkString(ByteBuffer(string: "a")), .null])]))
        // Nothing left behind: the next reply decodes on its own.
        try decoder.feed(ByteBuffer(string: ":7\r\n"))
        #expect(try decoder.next() == .integer(7))
        #expect(try decoder.next() == nil)
    }

    // MARK: Timer

    @Test func theTimerStaysArmedWhileIdleAndRearmsWhenItFires() {
        var machine = RedisCommandStateMachine<Int>()
        let at = { (milliseconds: Int64) in NIODeadline.uptimeNanoseconds(UInt64(milliseconds) * 1_000_000) }
        guard case .write(armTimer: at(1000)) = machine.send(1, deadline: at(1000)) else { Issue.record("arm"); return }
        _ = machine.receivedReply(.null)
        // The queue is empty but the timer is still scheduled: a later command does not arm another.
        guard case .write(armTimer: nil) = machine.send(2, deadline: at(1800)) else { Issue.record("no new timer"); return }
        guard case .rearm(at(1800)) = machine.timerFired(now: at(1000)) else { Issue.record("rearm"); return }
        _ = machine.receivedReply(.null)
        guard case .none = machine.timerFired(now: at(1800)) else { Issue.record("none"); return }
        // Nothing armed any more: the next command arms again.
        guard case .write(armTimer: at(2500)) = machine.send(3, deadline: at(2500)) else { Issue.record("re-arm"); return }
        #expect(!machine.isClosed)
    }

    // MARK: Event-loop affinity

    @Test func callersOnAConnectionsLoopUseThatLoopsFirstConnection() async throws {
        try await withAnyRedis { base in
            var configuration = base
            configuration.connections = 4
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
            let client = try RedisClient(configuration: configuration, eventLoopGroup: group, logger: quietLogger)
            defer { group.shutdownGracefully { _ in } }
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { await client.run() }
                try await client.waitUntilConnected(timeout: .seconds(5))
                #expect(client.taskExecutors.count == 2)
                for index in 0..<4 {
                    let expected = client.slots[index].eventLoop
                    let (sameLoop, connection, reply) = try await withTaskExecutorPreference(client.taskExecutor(for: index)) {
                        let connection = try client.pickConnection()
                        let reply = try await client.send(["ECHO", "on the loop"])
                        return (expected.inEventLoop, ObjectIdentifier(connection), reply)
                    }
                    #expect(sameLoop)
                    #expect(reply.string == "on the loop")
                    // The first connection of the loop, every time.
                    let first = client.loops.first { $0.eventLoop === expected }!.slots[0]
                    guard case .connected(let firstConnection) = first.state.withLock({ $0 }) else {
                        Issue.record("not connected")
                        return
                    }
                    #expect(connection == ObjectIdentifier(firstConnection))
                }
                // Many callers on the loops at once: every reply reaches its own caller.
                let prefix = uniqueKey("affinity")
                try await withThrowingTaskGroup(of: Void.self) { callers in
                    for index in 0..<64 {
                        callers.addTask(executorPreference: client.taskExecutor(for: index)) {
                            for round in 0..<20 {
                                let value = "\(index)-\(round)"
                                #expect(try await client.send(["ECHO", RedisArgument(value)]).string == value)
                            }
                            _ = try await client.send(["INCR", RedisArgument("\(prefix):n")])
                        }
                    }
                    try await callers.waitForAll()
                }
                #expect(try await client.send(["GET", RedisArgument("\(prefix):n")]).int64 == 64)
                _ = try await client.send(["DEL", RedisArgument("\(prefix):n")])
                tasks.cancelAll()
            }
        }
    }

    @Test func aLimitStoreCheckOnTheLoopGivesTheSameDecisionAsOffIt() async throws {
        try await withAnyRedis { configuration in
            try await withClient(configuration) { client in
                let plan = try everyAlgorithmPlan(name: "affinity-\(UInt32.random(in: 0...UInt32.max))")
                let store = RedisLimitStore(client: client, configuration: .init(denyCache: false), logger: quietLogger)
                let instant: Int64 = 1_767_225_600 * second
                let onLoop = try await withTaskExecutorPreference(client.taskExecutor(for: 0)) {
                    try await store.check(plan, partition: Partition(organization: "org-a", apiKey: "k1"), cost: 2, at: instant)
                }
                let offLoop = try await store.check(plan, partition: Partition(organization: "org-b", apiKey: "k1"), cost: 2, at: instant)
                #expect(onLoop.origin == .store)
                #expect(Array(onLoop.results) == Array(offLoop.results))
                #expect(onLoop.isAllowed == offLoop.isAllowed)
            }
        }
    }
}
