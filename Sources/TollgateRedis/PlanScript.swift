import Tollgate

/// The Lua script of one plan, generated from its limits: every constant written into the code, each
/// limit's algorithm as straight-line arithmetic, nothing parsed per call. One call decides one check,
/// or several checks of the same keys in arrival order (each all or nothing, as if sent one by one);
/// the arithmetic is the in-process store's (`Sources/Tollgate/Algorithms`), in doubles that stay
/// below 2^53 where they are exact integers.
///
/// KEYS: the plan's scope keys (`LimitKeys`: per-key scope first), then one list per sliding log.
/// ARGV: for each calendar quota in plan order the start and end, in seconds, of the period that holds
/// the caller's clock, then one cost per check. The clock is Redis' `TIME`; the script generated with
/// `explicitInstant` (for tests that compare stores at the same instants) takes the instant in
/// microseconds as its first argument instead, and differs in nothing else.
///
/// Reply: one binary string (a Lua table would cost Redis more to convert than the rest of a check's
/// reply): `now` (8 bytes), a byte whose bit g is set when scope g+1's value was there, those values
/// as read (the converted state when the previous layout was read instead), for each sliding log (plan
/// order) its newest entry, oldest entry and total after pruning (-1 for none, 8 bytes each), then per
/// check its verdict (a byte: 1 admitted, 0 refused) and for each sliding log the instant of the entry
/// with which enough cost leaves the window when the log refuses a check it could admit later (else
/// -1). Integers are little-endian. The caller derives every limit's remaining, reset and retry-after
/// from these with `Plan.decide`, and checks that its verdicts agree.
///
/// **Kept periods.** When each calendar quota of a plan is the only limit of its scope (a monthly quota
/// per organization, say), its key already tells its period: the start is stored, and the second at
/// which the key's TTL ends is always the period's end plus `keptPeriodMargin` seconds (see `write`).
/// The script generated with `keptPeriods` takes no periods in ARGV: it decides within the stored
/// period, and answers the integer 0, having written nothing, when a quota's key is absent or the
/// instant has left its period; the caller then sends the same checks to the script that takes the
/// periods. That happens once a period per organization and saves every other check two arguments.
///
/// Errors, raised before anything is written: `TOLLGATE_BADSTATE <key index>` when a key holds
/// something that is not Tollgate state; `TOLLGATE_CLOCK <limit> <instant>` (limit numbered from 1)
/// when a calendar quota's instant (Redis' clock, or its stored period when the clock went back past
/// it) lies outside the period sent: the caller sends the period that holds that instant instead (near
/// a period's end, when the caller's and Redis' clocks are on either side of it).
///
/// **TTLs.** Every write of a scope key makes sure its TTL lasts as long as the state may matter (the
/// longest of its limits' windows, a calendar quota's period end, plus a second); the value holds the
/// second the TTL ends, so most writes keep it (`KEEPTTL`) and one renews it (with up to a minute's
/// headroom) only when it would end too soon.
///
/// **The previous layout.** When a scope key is absent, the script looks for the state the previous
/// version kept per limit (`tg:{tag}:<limit id>:<subject>`, see `LegacyLimitScript`), converts it, writes
/// it in this layout and deletes the old keys: an upgrade loses no counter. Those keys are not declared
/// in KEYS (they would cost every call their bytes); they share the scope key's hash tag, so they live
/// on the same Redis Cluster node and slot.
struct PlanScript: Sendable {
    let plan: Plan
    let scopes: [ScopeLayout]
    /// Plan indices of the sliding logs, in plan order (their lists follow the scope keys in KEYS).
    let logs: [Int]
    /// Plan indices of the calendar quotas, in plan order (their periods lead ARGV).
    let calendars: [Int]
    /// The instant is the first argument, not Redis' `TIME`.
    let explicitInstant: Bool
    /// The calendar quotas' periods come from their keys, not from ARGV (`keepsPeriods`).
    let keptPeriods: Bool
    let source: String

    /// Seconds from a calendar quota's period end to the end of its key's TTL, when the quota is its
    /// scope's only limit: `write` renews such a key's TTL to exactly this far past the period's end
    /// (the period plus a second, plus a second of headroom, rounded up to the next second).
    static let keptPeriodMargin: Int64 = 3

    /// The 1-based ARGV index of the first cost.
    var firstCostArgument: Int { (explicitInstant ? 2 : 1) + periodArguments }

    /// Arguments that carry calendar periods (two per quota, none with kept periods).
    var periodArguments: Int { keptPeriods ? 0 : 2 * calendars.count }

    /// Whether `plan` has calendar quotas and each is the only limit of its scope, so that a script
    /// with `keptPeriods` can decide without being sent their periods.
    static func keepsPeriods(_ plan: Plan) -> Bool {
        let specs = plan.compiled.specs
        let calendars = plan.limits.indices.filter { specs[$0].kind == .calendar }
        let scopes = ScopeLayout.scopes(of: plan)
        return !calendars.isEmpty && calendars.allSatisfy { index in scopes.contains { $0.members == [index] } }
    }

    init(plan: Plan, explicitInstant: Bool = false, keptPeriods: Bool = false) {
        precondition(!keptPeriods || Self.keepsPeriods(plan), "plan \(plan.name) cannot keep its periods in its keys")
        self.plan = plan
        self.explicitInstant = explicitInstant
        self.keptPeriods = keptPeriods
        scopes = ScopeLayout.scopes(of: plan)
        logs = plan.limits.indices.filter { plan.compiled.specs[$0].kind == .slidingLog }
        calendars = plan.limits.indices.filter { plan.compiled.specs[$0].kind == .calendar }
        var writer = LuaWriter(
            plan: plan, scopes: scopes, logs: logs, calendars: calendars, explicitInstant: explicitInstant, keptPeriods: keptPeriods)
        source = writer.script()
    }
}

/// Writes one plan's script (`PlanScript`).
private struct LuaWriter {
    let plan: Plan
    let specs: ContiguousArray<LimitSpec>
    let scopes: [ScopeLayout]
    let logs: [Int]
    let calendars: [Int]
    let explicitInstant: Bool
    let keptPeriods: Bool
    var lines: [String] = []

    init(plan: Plan, scopes: [ScopeLayout], logs: [Int], calendars: [Int], explicitInstant: Bool, keptPeriods: Bool) {
        self.plan = plan
        specs = plan.compiled.specs
        self.scopes = scopes
        self.logs = logs
        self.calendars = calendars
        self.explicitInstant = explicitInstant
        self.keptPeriods = keptPeriods
    }

    mutating func line(_ text: String) { lines.append(text) }

    /// Limit `index`'s variables are numbered from 1, as in errors.
    func n(_ index: Int) -> String { String(index + 1) }
    func scopeNumber(of index: Int) -> Int { scopes.firstIndex { $0.members.contains(index) }! + 1 }
    func listKey(_ index: Int) -> String { "KEYS[\(scopes.count + logs.firstIndex(of: index)! + 1)]" }
    func bad(_ key: String) -> String { "return redis.error_reply('TOLLGATE_BADSTATE ' .. \(key))" }

    mutating func script() -> String {
        line("-- Tollgate: the limits of plan \(luaComment(plan.name)), generated; see PlanScript.swift")
        if explicitInstant {
            line("local now = tonumber(ARGV[1])")
        } else {
            line("local t = redis.call('TIME')")
            line("local now = t[1] * 1000000 + t[2]")
        }
        let first = explicitInstant ? 2 : 1
        for (position, index) in calendars.enumerated() where !keptPeriods {
            let o = first + 2 * position
            let j = n(index)
            line("local C\(j), K\(j) = ARGV[\(o)] * 1000000, ARGV[\(o + 1)] * 1000000")
        }
        read()
        for index in plan.limits.indices { prologue(index) }
        // The reply's head: now, which scope values are there, the values, each log's prologue (made
        // once, at the end, from variables the checks leave as they were read).
        var head = "struct.pack('<i8B', now, " + scopes.indices.map { "(r\($0 + 1) and \(1 << $0) or 0)" }.joined(separator: " + ")
        head += ")" + scopes.indices.map { " .. (r\($0 + 1) or '')" }.joined()
        if !logs.isEmpty {
            let fields = logs.map { "nw\(n($0)) or -1, od\(n($0)) or -1, u\(n($0))" }.joined(separator: ", ")
            head += " .. struct.pack('<\(String(repeating: "i8i8i8", count: logs.count))', \(fields))"
        }
        if !logs.isEmpty {
            // Before the checks change the logs' numbers.
            line("local head = \(head)")
            head = "head"
        }
        line("local out = ''")
        line("for i = \(first + (keptPeriods ? 0 : 2 * calendars.count)), #ARGV do")
        line("  local cost = tonumber(ARGV[i])")
        for index in plan.limits.indices { admission(index) }
        let enforced = plan.limits.indices.filter { !specs[$0].shadow }.map { "k\(n($0))" }
        line("  if \(enforced.isEmpty ? "true" : enforced.joined(separator: " and ")) then")
        line("    out = out .. '\\1'")
        line("    if cost > 0 then")
        for index in plan.limits.indices { commit(index) }
        line("    end")
        line("  else")
        line("    out = out .. '\\0'")
        line("  end")
        for index in logs { freed(index) }
        line("end")
        for index in logs { writeLog(index) }
        for (position, scope) in scopes.enumerated() { write(scope, number: position + 1) }
        line("return \(head) .. out")
        return lines.joined(separator: "\n") + "\n"
    }

    // MARK: Reading

    mutating func read() {
        if scopes.count == 1 {
            line("local r1 = redis.call('GET', KEYS[1])")
        } else {
            line("local v = redis.call('MGET', KEYS[1], KEYS[2])")
            line("local r1, r2 = v[1], v[2]")
        }
        for (position, scope) in scopes.enumerated() {
            let g = position + 1
            let variables = scope.fields.map(\.variable) + ["ex\(g)"]
            line("local \(variables.joined(separator: ", ")) = \(variables.map { _ in "0" }.joined(separator: ", "))")
            line("local w\(g), o\(g) = false, nil")
            let kept = keptPeriods && scope.members.count == 1 && specs[scope.members[0]].kind == .calendar
            let check = "#r\(g) ~= \(scope.byteCount) or string.byte(r\(g)) ~= \(ScopeLayout.tag)"
            let unpack = "\(variables.joined(separator: ", ")) = struct.unpack('<x\(scope.fieldFormat)', r\(g))"
            if kept {
                // An absent key (or the previous layout's) is for the script that is sent the periods.
                line("if not r\(g) then return 0 end")
                line("if \(check) then \(bad("\(g)")) end")
                line(unpack)
            } else {
                line("if r\(g) then")
                line("  if \(check) then \(bad("\(g)")) end")
                line("  \(unpack)")
                line("else")
                migrate(scope, number: g)
                line("end")
            }
        }
    }

    /// The previous layout's keys of scope `g`'s limits, read when its key is absent.
    mutating func migrate(_ scope: ScopeLayout, number g: Int) {
        // MGET answers nil for a key of another type: make sure the key is really absent.
        line("  if redis.call('EXISTS', KEYS[\(g)]) == 1 then \(bad("\(g)")) end")
        line("  local pre, sub = string.match(KEYS[\(g)], '^(.-}:)%x+(:.*)$')")
        let ids = scope.members.map { LimitKeys.limitID(plan: plan, index: $0) }
        var old: [String] = []
        for (position, index) in scope.members.enumerated() {
            old.append("pre .. '\(ids[position])' .. sub")
            if specs[index].kind == .slidingLog { old.append("pre .. '\(ids[position])' .. sub .. ':sum'") }
        }
        line("  o\(g) = {\(old.joined(separator: ", "))}")
        line("  local ov = redis.call('MGET', unpack(o\(g)))")
        line("  local function near(r, ref, mod)")
        line("    local d = r - ref")
        line("    d = d - math.floor(d / mod) * mod")
        line("    if d * 2 >= mod then d = d - mod end")
        line("    return ref + d")
        line("  end")
        line("  local function old(v, width, residue, counts)")
        line("    if string.find(v, ':', 1, true) then")
        line("      local a, b, c = string.match(v, '^(%d+):(%d+):(%d+)$')")
        line("      if not a then return nil end")
        line("      return tonumber(a), tonumber(b), tonumber(c), false")
        line("    end")
        line("    if residue == 0 or #v ~= 1 + counts * width + residue or not string.find(v, '^1%d+$') then return nil end")
        line("    local y = 0")
        line("    if counts == 2 then y = tonumber(string.sub(v, 2 + width, 1 + 2 * width)) end")
        line("    return tonumber(string.sub(v, 2, 1 + width)), y, tonumber(string.sub(v, #v - residue + 1)), true")
        line("  end")
        var slot = 1
        for index in scope.members {
            let j = n(index)
            let spec = specs[index]
            let layout = PackedLayout(for: spec)
            let counts = spec.kind == .slidingCounter ? 2 : 1
            let value = "ov[\(slot)]"
            if spec.kind == .slidingLog {
                // MGET answers nil for the list itself: its total tells whether there is one.
                line("  if ov[\(slot + 1)] then")
                line("    w\(g) = true")
                line("    if not string.match(ov[\(slot + 1)], '^%d+$') then \(bad("\(g)")) end")
                line("    u\(j) = tonumber(ov[\(slot + 1)])")
                line("    if redis.call('EXISTS', o\(g)[\(slot)]) == 1 then redis.call('RENAME', o\(g)[\(slot)], \(listKey(index))) end")
                line("  end")
                slot += 2
                continue
            }
            line("  if \(value) then")
            line("    w\(g) = true")
            line("    local a, b, c, packed = old(\(value), \(layout.width), \(layout.residue), \(counts))")
            line("    if not a then \(bad("\(g)")) end")
            switch spec.kind {
            case .tokenBucket:
                line("    if packed then b = near(c, now, \(power(layout.residue))) end")
                line("    d\(j), l\(j) = a, b")
            case .slidingCounter:
                line("    if packed then c, b, a = b, a, near(c, math.floor(now / \(spec.window)), \(power(layout.residue))) * \(spec.window) end")
                line("    x\(j), p\(j), c\(j) = math.floor(a / \(spec.window)), b, c")
            case .fixedWindow:
                line("    if packed then b, a = a, near(c, math.floor(now / \(spec.window)), \(power(layout.residue))) * \(spec.window) end")
                line("    x\(j), n\(j) = math.floor(a / \(spec.window)), b")
            case .calendar:
                line("    if packed then b, a = a, near(c, math.floor(now / 1000000), \(power(layout.residue))) * 1000000 end")
                line("    s\(j), n\(j) = math.floor(a / 1000000), b")
            case .slidingLog:
                break
            }
            line("  end")
            slot += 1
        }
        line("  if w\(g) then r\(g) = struct.pack('<B\(scope.fieldFormat)', \(ScopeLayout.tag), \(scope.fields.map(\.variable).joined(separator: ", ")), 0) else o\(g) = nil end")
    }

    func power(_ digits: Int) -> String { "1" + String(repeating: "0", count: digits) }

    // MARK: Each limit, once per call: its instant and its state rolled forward to it

    mutating func prologue(_ index: Int) {
        let spec = specs[index]
        let j = n(index)
        switch spec.kind {
        case .tokenBucket:
            line("local t\(j) = now")
            line("if l\(j) > now then t\(j) = l\(j) end")
            line("local q\(j) = d\(j)")
            line("if q\(j) > 0 and t\(j) > l\(j) then")
            line("  local e = \(times("t\(j) - l\(j)", spec.unitsPerMicrosecond))")
            line("  if e >= q\(j) then q\(j) = 0 else q\(j) = q\(j) - e end")
            line("end")
        case .slidingCounter, .fixedWindow:
            let w = spec.window
            line("local t\(j) = now")
            line("if x\(j) * \(w) > now then t\(j) = x\(j) * \(w) end")
            line("local i\(j) = math.floor(t\(j) / \(w))")
            line("local e\(j) = t\(j) - i\(j) * \(w)")
            // A quotient rounded across an integer is put right (exact below 2^53 in any case).
            line("if e\(j) < 0 then i\(j) = i\(j) - 1; e\(j) = e\(j) + \(w) elseif e\(j) >= \(w) then i\(j) = i\(j) + 1; e\(j) = e\(j) - \(w) end")
            if spec.kind == .fixedWindow {
                line("local un\(j) = 0")
                line("if x\(j) == i\(j) then un\(j) = n\(j) end")
            } else {
                line("local pv\(j), cu\(j) = 0, 0")
                line("if x\(j) == i\(j) then pv\(j), cu\(j) = p\(j), c\(j) elseif x\(j) == i\(j) - 1 then pv\(j) = c\(j) end")
                                let elapsedTicks = spec.tick == 1 ? "e\(j)" : "math.floor(e\(j) / \(spec.tick))"
                // The previous window's weight, times the ticks in a window.
                line("local g\(j) = pv\(j) * (\(spec.tickCount) - \(elapsedTicks))")
            }
        case .calendar where keptPeriods:
            let g = scopeNumber(of: index)
            line("local t\(j) = now")
            line("local z\(j) = s\(j) * 1000000")
            line("if z\(j) > now then t\(j) = z\(j) end")
            // The stored period, [start, TTL end - margin), while it holds t; else (or with no start: a
            // quota reset in place) the periods are needed.
            line("local a\(j), b\(j) = z\(j), (ex\(g) - \(PlanScript.keptPeriodMargin)) * 1000000")
            line("if t\(j) >= b\(j) or z\(j) == 0 then return 0 end")
            line("local un\(j) = n\(j)")
        case .calendar:
            line("local t\(j) = now")
            line("local z\(j) = s\(j) * 1000000")
            line("if z\(j) > now then t\(j) = z\(j) end")
            // The stored period while it lasts, else the one that holds t; either must be the one sent.
            line("local a\(j), b\(j)")
            line("if z\(j) == C\(j) then a\(j), b\(j) = C\(j), K\(j)")
            line("elseif z\(j) > C\(j) then return redis.error_reply('TOLLGATE_CLOCK \(j) ' .. string.format('%d', z\(j))) end")
            line("if not b\(j) or t\(j) >= b\(j) then")
            line("  if t\(j) >= C\(j) and t\(j) < K\(j) then a\(j), b\(j) = C\(j), K\(j)")
            line("  else return redis.error_reply('TOLLGATE_CLOCK \(j) ' .. string.format('%d', t\(j))) end")
            line("end")
            line("local un\(j) = 0")
            line("if z\(j) == a\(j) then un\(j) = n\(j) end")
        case .slidingLog:
            let g = scopeNumber(of: index)
            let list = listKey(index)
            // dp: entries at the head that left the window; dropped when the script writes, after every
            // error it can raise, so that an error leaves the list and its total as they were.
            line("local t\(j), nw\(j), nc\(j), od\(j), ad\(j), dp\(j) = now, nil, 0, nil, 0, 0")
            line("if u\(j) > 0 then")
            line("  local e = redis.call('LINDEX', \(list), -1)")
            line("  if e then")
            line("    local et, ec = string.match(e, '^(%d+):(%d+)$')")
            line("    if not et then \(bad("'\(scopes.count + logs.firstIndex(of: index)! + 1)'")) end")
            line("    nw\(j), nc\(j) = tonumber(et), tonumber(ec)")
            line("    if nw\(j) > now then t\(j) = nw\(j) end")
            line("  end")
            // Entries that left the window go, whether or not this call admits anything; the total follows.
            line("  while true do")
            line("    local h = redis.call('LINDEX', \(list), dp\(j))")
            line("    if not h then break end")
            line("    local ht, hc = string.match(h, '^(%d+):(%d+)$')")
            line("    if not ht then \(bad("'\(scopes.count + logs.firstIndex(of: index)! + 1)'")) end")
            line("    ht = tonumber(ht)")
            line("    if ht + \(spec.window) > t\(j) then od\(j) = ht; break end")
            line("    dp\(j) = dp\(j) + 1")
            line("    u\(j) = u\(j) - tonumber(hc)")
            line("    w\(g) = true")
            line("  end")
            line("  if not od\(j) then u\(j), nw\(j), w\(g) = 0, nil, true end")
            line("  if u\(j) < 0 then u\(j) = 0 end")
            line("end")
        }
    }

    func times(_ expression: String, _ factor: Int64) -> String {
        factor == 1 ? "(\(expression))" : "(\(expression)) * \(factor)"
    }

    // MARK: Each limit, once per check

    mutating func admission(_ index: Int) {
        let spec = specs[index]
        let j = n(index)
        let fits = "cost <= \(spec.capacity)"
        switch spec.kind {
        case .tokenBucket:
            let need = spec.unitsPerToken == 1 ? "cost" : "cost * \(spec.unitsPerToken)"
            line("  local k\(j) = \(fits) and q\(j) + \(need) <= \(spec.fullLevel)")
        case .slidingCounter:
            line("  local k\(j) = \(fits) and g\(j) + (cu\(j) + cost) * \(spec.tickCount) <= \(spec.capacity * spec.tickCount)")
        case .fixedWindow, .calendar:
            line("  local k\(j) = \(fits) and un\(j) + cost <= \(spec.capacity)")
        case .slidingLog:
            line("  local k\(j) = \(fits) and u\(j) + cost <= \(spec.capacity)")
        }
    }

    mutating func commit(_ index: Int) {
        let spec = specs[index]
        let j = n(index)
        let g = scopeNumber(of: index)
        let body: String
        switch spec.kind {
        case .tokenBucket:
            let need = spec.unitsPerToken == 1 ? "cost" : "cost * \(spec.unitsPerToken)"
            body = "q\(j) = q\(j) + \(need); d\(j), l\(j) = q\(j), t\(j)"
        case .slidingCounter:
            body = "cu\(j) = cu\(j) + cost; x\(j), p\(j), c\(j) = i\(j), pv\(j), cu\(j)"
        case .fixedWindow:
            body = "un\(j) = un\(j) + cost; x\(j), n\(j) = i\(j), un\(j)"
        case .calendar:
            body = "un\(j) = un\(j) + cost; s\(j), n\(j) = a\(j) / 1000000, un\(j)"
        case .slidingLog:
            body = "u\(j) = u\(j) + cost; ad\(j) = ad\(j) + cost"
        }
        line("      if k\(j) then \(body); w\(g) = true end")
    }

    /// For a sliding log that refuses a check it could admit later: the entry with which enough leaves.
    mutating func freed(_ index: Int) {
        let spec = specs[index]
        let j = n(index)
        line("  local f\(j) = -1")
        line("  if not k\(j) and cost <= \(spec.capacity) then")
        line("    local need, got, at = u\(j) + cost - \(spec.capacity), 0, 0")
        line("    while true do")
        line("      local chunk = redis.call('LRANGE', \(listKey(index)), dp\(j) + at, dp\(j) + at + 63)")
        line("      for _, e in ipairs(chunk) do")
        line("        local et, ec = string.match(e, '^(%d+):(%d+)$')")
        line("        got = got + tonumber(ec)")
        line("        if got >= need then f\(j) = tonumber(et); break end")
        line("      end")
        // Past the list: what this call admitted, at t, is still to be written.
        line("      if f\(j) >= 0 then break end")
        line("      if #chunk < 64 then f\(j) = t\(j); break end")
        line("      at = at + 64")
        line("    end")
        line("  end")
        line("  out = out .. struct.pack('<i8', f\(j))")
    }

    // MARK: Writing

    mutating func writeLog(_ index: Int) {
        let spec = specs[index]
        let j = n(index)
        let list = listKey(index)
        // No entry in the window: whatever the list holds (it may have outlived its total) counts for nothing.
        line("if ad\(j) > 0 or dp\(j) > 0 then")
        line("  if not nw\(j) then redis.call('DEL', \(list)) elseif dp\(j) > 0 then redis.call('LTRIM', \(list), dp\(j), -1) end")
        line("end")
        line("if ad\(j) > 0 then")
        line("  if nw\(j) == t\(j) then")
        line("    redis.call('LSET', \(list), -1, string.format('%d:%d', t\(j), nc\(j) + ad\(j)))")
        line("  else")
        line("    redis.call('RPUSH', \(list), string.format('%d:%d', t\(j), ad\(j)))")
        line("  end")
        // From the entry's instant, which a clock that went back leaves ahead of Redis' own.
        line("  redis.call('PEXPIRE', \(list), \(ttl(spec)) + math.floor((t\(j) - now) / 1000))")
        line("end")
    }

    mutating func write(_ scope: ScopeLayout, number g: Int) {
        let key = "KEYS[\(g)]"
        let fields = scope.fields.map(\.variable).joined(separator: ", ")
        let value = "struct.pack('<B\(scope.fieldFormat)', \(ScopeLayout.tag), \(fields), ex\(g))"
        // How long the state must outlive this write (µs): the longest window of the scope's limits but
        // calendar quotas, which last until their period ends; and how much longer a renewed TTL lasts.
        let lifetime = scope.members.map { self.lifetime(specs[$0]) }.max()! + 1_000_000
        let headroom = min(lifetime, 60_000_000)
        if scope.members.count == 1 && specs[scope.members[0]].kind == .calendar {
            // A kept period's end is read back from the TTL's end (`PlanScript.keptPeriodMargin`): the
            // renewal below sets it to the period's end + lifetime + headroom, rounded up, exactly.
            precondition((lifetime + headroom) / 1_000_000 + 1 == PlanScript.keptPeriodMargin)
        }
        line("if w\(g) then")
        line("  local need = now + \(lifetime)")
        for index in scope.members where specs[index].kind == .calendar {
            let j = n(index)
            line("  if b\(j) + 1000000 > need then need = b\(j) + 1000000 end")
        }
        line("  if ex\(g) * 1000000 >= need then")
        line("    redis.call('SET', \(key), \(value), 'KEEPTTL')")
        line("  else")
        line("    ex\(g) = math.floor((need + \(headroom)) / 1000000) + 1")
        // Relative (PX), not PXAT: an explicit instant (tests) need not be Redis' clock.
        line("    redis.call('SET', \(key), \(value), 'PX', math.floor((ex\(g) * 1000000 - now) / 1000))")
        line("  end")
        line("  if o\(g) then redis.call('DEL', unpack(o\(g))) end")
        line("end")
    }

    /// Microseconds a limit's state may matter after its last change (a calendar quota's: until its
    /// period ends, which the script adds).
    func lifetime(_ spec: LimitSpec) -> Int64 {
        switch spec.kind {
        case .tokenBucket, .fixedWindow, .slidingLog: spec.window
        case .slidingCounter: 2 * spec.window
        case .calendar: 0
        }
    }

    /// Milliseconds a sliding log's list must outlive its last entry, plus a second.
    func ttl(_ spec: LimitSpec) -> Int64 {
        (lifetime(spec) + 999) / 1_000 + 1_000
    }

    func luaComment(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 })
    }
}
