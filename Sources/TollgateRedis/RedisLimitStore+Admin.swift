import Tollgate

/// Reading and resetting counters for operators (`GET` and `DELETE /v1/usage` in the sidecar).
///
/// **Usage** is a call of the plan's own script with cost 0: the same keys, the same arithmetic and
/// Redis' clock, so what it reports is exactly what the next check would see, and it consumes nothing.
/// Neither the deny cache nor the failure policy answers for it: a failure is an error.
///
/// **Reset** is one `EVAL` over the partition's keys (they share one hash tag, so one node of a
/// cluster): a scope whose limits are all reset loses its key, its sliding logs' lists and the keys of
/// the previous layout (which the limit script would otherwise read back into an absent scope key); a
/// reset of some of a scope's limits (`limit=` in the admin API) rewrites those limits' fields to zero —
/// untouched — in place, keeping the other limits' counts and the key's TTL, and deletes their lists.
/// Deleting is the whole-scope choice because it is what an untouched partition looks like; rewriting is
/// the one-limit choice because the scope's other limits share the key. Refusals remembered in process
/// for the partition are forgotten, so the next request of this replica passes; other replicas'
/// deny caches hold a refusal for at most its retry-after.
extension RedisLimitStore {
    nonisolated(nonsending) public func usage(_ plan: Plan, partition: Partition) async throws -> Decision {
        do {
            return try await evaluate(plan, partition: partition, cost: 0, instant: nil, callerClock: clock.now())
        } catch {
            throw LimiterError(error.kind == .badReply ? .badReply : .storeUnavailable, error.message)
        }
    }

    public func reset(_ plan: Plan, partition: Partition, limits: Set<Int>) async throws {
        let request = ResetPlan(plan: plan, partition: partition, limits: limits)
        guard !request.keys.isEmpty else { return }
        let reply: RedisReply
        do {
            let command = ["EVAL", ResetPlan.script, String(request.keys.count)] + request.keys + request.arguments
            reply =
                switch backend {
                case .server(let client): try await client.send(command)
                case .sentinel(let sentinel): try await sentinel.send(command)
                // The keys share the partition's hash tag: one slot, one primary.
                case .cluster(let cluster): try await cluster.send(command, key: request.keys[0])
                }
        } catch {
            throw LimiterError(.storeUnavailable, "could not reset counters: \(error)")
        }
        if case .error(let message) = reply {
            throw LimiterError(.badReply, "could not reset counters: \(message)")
        }
        denyCache?.forget(partition)
        fallback.resetNow(plan, partition: partition, limits: limits)
    }
}

/// The keys and arguments of one reset (see `RedisLimitStore.reset`).
struct ResetPlan {
    let plan: Plan
    /// The keys to delete, then the keys to rewrite.
    private(set) var keys: [String] = []
    /// The number of keys to delete, then per rewrite the field's byte offset, its width and the value's length.
    private(set) var arguments: [String] = []

    /// KEYS: keys to delete, then one key per field to zero. ARGV[1]: how many to delete; then per field to
    /// zero its 0-based offset, width and the value's length (a value of another length or without the
    /// layout's tag byte is left alone: it is not state this plan wrote).
    static let script = """
        local d = tonumber(ARGV[1])
        local n = 0
        for i = 1, d do n = n + redis.call('DEL', KEYS[i]) end
        for i = d + 1, #KEYS do
          local j = 2 + (i - d - 1) * 3
          local o, w, len = tonumber(ARGV[j]), tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
          local v = redis.call('GET', KEYS[i])
          if v and #v == len and string.byte(v, 1) == 254 then
            redis.call('SET', KEYS[i], string.sub(v, 1, o) .. string.rep('\\0', w) .. string.sub(v, o + w + 1), 'KEEPTTL')
            n = n + 1
          end
        end
        return n
        """

    init(plan: Plan, partition: Partition, limits: Set<Int>) {
        self.plan = plan
        let names = LimitKeys.keys(plan: plan, partition: partition)
        let scopes = ScopeLayout.scopes(of: plan)
        let logs = plan.limits.indices.filter { plan.compiled.specs[$0].kind == .slidingLog }
        let previous = LimitKeys.previousKeys(
            plan: plan, partition: partition, limitIDs: plan.limits.indices.map { LimitKeys.limitID(plan: plan, index: $0) })
        func previousKeys(of index: Int) -> ArraySlice<String> {
            let end = index + 1 < previous.first.count ? previous.first[index + 1] - 1 : previous.keys.count
            return previous.keys[(previous.first[index] - 1)..<end]
        }
        var delete: [String] = []
        var rewrite: [(key: String, offset: Int, width: Int, length: Int)] = []
        for (position, layout) in scopes.enumerated() {
            let chosen = layout.members.filter(limits.contains)
            if chosen.isEmpty { continue }
            if chosen.count == layout.members.count {
                delete.append(names[position])
                for index in layout.members { delete += previousKeys(of: index) }
                continue
            }
            // The previous layout's keys of the chosen limits go too: when the scope key is absent, the
            // limit script would read them back.
            for index in chosen { delete += previousKeys(of: index) }
            var offset = 1
            for field in layout.fields {
                if chosen.contains(field.limit) {
                    rewrite.append((names[position], offset, field.width, layout.byteCount))
                }
                offset += field.width
            }
        }
        for (position, index) in logs.enumerated() where limits.contains(index) {
            delete.append(names[scopes.count + position])
        }
        keys = delete + rewrite.map(\.key)
        arguments = [String(delete.count)] + rewrite.flatMap { [String($0.offset), String($0.width), String($0.length)] }
    }
}
