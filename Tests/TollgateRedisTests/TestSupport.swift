import Logging
import NIOCore
import NIOEmbedded
import Testing
import Tollgate

@testable import TollgateRedis

/// A logger that drops everything: tests never bootstrap logging.
let quietLogger = Logger(label: "tollgate.redis.tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// The outcome of a call, errors included, so that tests can look at both.
func outcome(_ body: () async throws(RedisClientError) -> RedisReply) async -> Result<RedisReply, RedisClientError> {
    do {
        return .success(try await body())
    } catch {
        return .failure(error)
    }
}

extension Result where Failure == RedisClientError {
    var errorCode: RedisClientError.Code? {
        if case .failure(let error) = self { return error.code }
        return nil
    }
}

/// A connection over `NIOAsyncTestingChannel`: the test plays the server.
func makeTestConnection(
    _ configuration: RedisConfiguration = RedisConfiguration(commandTimeout: .seconds(1))
) async throws -> (NIOAsyncTestingChannel, RedisConnection) {
    let channel = NIOAsyncTestingChannel()
    try await RedisConnection.addHandler(to: channel, logger: quietLogger)
    try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).get()
    let connection = try await RedisConnection.handshake(
        channel: channel,
        configuration: configuration,
        timeout: .seconds(1),
        logger: quietLogger
    )
    return (channel, connection)
}

extension NIOAsyncTestingChannel {
    /// Reads what the client wrote until `count` whole commands have arrived, and returns each as its
    /// arguments (decoded with the same RESP reader: a command is an array of bulk strings).
    func readCommands(_ count: Int) async throws -> [[String]] {
        let decoder = try RESPReplyDecoder()
        var commands: [[String]] = []
        while commands.count < count {
            let bytes = try await waitForOutboundWrite(as: ByteBuffer.self)
            try decoder.feed(bytes)
            while let reply = try decoder.next() {
                commands.append((reply.array ?? []).map { $0.string ?? "?" })
            }
        }
        return commands
    }
}

/// The keys of one check of `plan` for `partition`, as the store names them: its scope keys, then its
/// sliding logs' lists.
func stateKeys(_ plan: Plan, _ partition: Partition) -> [String] {
    LimitKeys.keys(plan: plan, partition: partition)
}

/// The keys of `plan`'s limits for `partition` in the previous layout (one per limit, two for a sliding log).
func previousStateKeys(_ plan: Plan, _ partition: Partition) -> [String] {
    let ids = plan.limits.indices.map { LimitKeys.limitID(plan: plan, index: $0) }
    return LimitKeys.previousKeys(plan: plan, partition: partition, limitIDs: ids).keys
}
