extension MemoryStore {
    public func reset(_ plan: Plan, partition: Partition, limits: Set<Int>) async throws {
        resetNow(plan, partition: partition, limits: limits)
    }

    /// `reset`, at once: the chosen limits of the partition's entries go back to untouched (a sliding
    /// log loses its entries); the other limits of the same entries keep their counts.
    public func resetNow(_ plan: Plan, partition: Partition, limits: Set<Int>) {
        let hot = plan.compiled.hot
        for g in 0..<hot.pointee.groupCount {
            let group = hot.pointee.groups[g]
            let slots = (0..<group.memberCount).filter { limits.contains(group.members[$0]) }
            guard !slots.isEmpty else { continue }
            let hash = Self.entryHash(partition.hash(for: group.scope), group: group.id)
            let subject = partition.subject(for: group.scope)
            shard(shardIndex(hash)).pointee.withLock { table in
                guard let position = table.find(hash: hash, group: group.id, subject: subject) else { return }
                let entry = table.entries + position
                EntrySlot.lock(entry)
                for slot in slots {
                    entry.pointee.setState(slot, LimitState())
                    if hot.pointee.specs[group.members[slot]].kind == .slidingLog {
                        let log = entry.pointee.log(slot)
                        log.head = 0
                        log.count = 0
                        log.total = 0
                    }
                }
                EntrySlot.unlock(entry, group: group.id)
            }
        }
    }
}
