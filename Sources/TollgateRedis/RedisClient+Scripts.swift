import NIOCore

/// Lua scripts: load once, call by SHA1, load again when the server has forgotten them.
extension RedisClient {
    /// Loads a Lua script with `SCRIPT LOAD` and returns its SHA1. The client remembers the script so
    /// that `evalSHA` can load it again after a `NOSCRIPT` (a restart or `SCRIPT FLUSH`).
    public func scriptLoad(_ lua: String) async throws(RedisClientError) -> String {
        let sha = try await Self.load(lua, send: { (arguments) async throws(RedisClientError) in try await self.send(arguments) })
        scripts.withLock { $0[sha] = lua }
        return sha
    }

    /// Runs a loaded script with `EVALSHA`. On a `NOSCRIPT` error it loads the script again (when this
    /// client loaded it before) and retries once: `NOSCRIPT` means the script did not run. A call that
    /// timed out or whose connection dropped is never retried: it may already have run.
    public func evalSHA(
        _ sha: String,
        keys: [RedisArgument] = [],
        args: [RedisArgument] = []
    ) async throws(RedisClientError) -> RedisReply {
        let source = scripts.withLock { $0[sha] }
        return try await Self.evalSHA(
            sha,
            keys: keys,
            args: args,
            source: source,
            send: { (arguments) async throws(RedisClientError) in try await self.send(arguments) }
        )
    }

    /// An `EVALSHA` of `sha` that `encode` writes whole (the limit store's pre-encoded calls), with the
    /// same one reload of `source` on `NOSCRIPT` as `evalSHA`.
    ///
    /// With `asking` (a Redis Cluster `ASK` redirection to this node), each attempt is preceded by `ASKING`;
    /// the script is loaded here, on the node that said `NOSCRIPT`.
    nonisolated(nonsending) func evalSHA(
        _ sha: String,
        source: String,
        asking: Bool = false,
        encode: (inout ByteBuffer) -> Void
    ) async throws(RedisClientError) -> RedisReply {
        try await Self.reloadingOnce(
            sha,
            source: source,
            send: { (arguments) async throws(RedisClientError) in try await self.send(arguments) },
            call: { () async throws(RedisClientError) in try await self.send(asking: asking, encode: encode) }
        )
    }

    /// The `EVALSHA` with one reload on `NOSCRIPT`, over any way of sending a command (tests pass a fake).
    static func evalSHA(
        _ sha: String,
        keys: [RedisArgument],
        args: [RedisArgument],
        source: String?,
        send: (_ arguments: [RedisArgument]) async throws(RedisClientError) -> RedisReply
    ) async throws(RedisClientError) -> RedisReply {
        var command: [RedisArgument] = ["EVALSHA", RedisArgument(sha), RedisArgument(keys.count)]
        command.reserveCapacity(3 + keys.count + args.count)
        command.append(contentsOf: keys)
        command.append(contentsOf: args)
        return try await reloadingOnce(sha, source: source, send: send, call: { () async throws(RedisClientError) in try await send(command) })
    }

    /// Makes `call` (an `EVALSHA` of `sha`); on `NOSCRIPT` loads `source` with `send` and makes it once more.
    /// Any other failure reaches the caller as it is: the call may have run.
    nonisolated(nonsending) static func reloadingOnce(
        _ sha: String,
        source: String?,
        send: (_ arguments: [RedisArgument]) async throws(RedisClientError) -> RedisReply,
        call: nonisolated(nonsending) () async throws(RedisClientError) -> RedisReply
    ) async throws(RedisClientError) -> RedisReply {
        do {
            return try await call()
        } catch where error.serverErrorPrefix == "NOSCRIPT" {
            guard let source else { throw error }
            let reloaded = try await load(source, send: send)
            guard reloaded == sha else {
                throw RedisClientError(
                    .serverError,
                    message: "reloading the script after NOSCRIPT gave SHA1 \(reloaded), not the \(sha) that was called"
                )
            }
            return try await call()
        }
    }

    nonisolated(nonsending) static func load(
        _ lua: String,
        send: (_ arguments: [RedisArgument]) async throws(RedisClientError) -> RedisReply
    ) async throws(RedisClientError) -> String {
        let reply = try await send(["SCRIPT", "LOAD", RedisArgument(lua)])
        guard let sha = reply.string, sha.utf8.count == 40 else {
            throw RedisClientError(.protocolError, message: "SCRIPT LOAD answered \(reply) instead of a SHA1")
        }
        return sha
    }
}
