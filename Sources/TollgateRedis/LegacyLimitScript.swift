import Tollgate

/// The previous version's limit script: one generic script for every plan, one key per limit, the
/// limits' definitions parsed on every call. Checks no longer use it (`PlanScript` replaced it at a
/// quarter of its Redis CPU); it stays as the layout `PlanScript` upgrades from (its tests write state
/// with it) and as the Redis benchmark's baseline.
///
/// KEYS: the state keys of the request's limits (a sliding log uses two: entries and their sum).
/// ARGV: `cost`, `now` (microseconds, or empty to read `TIME`), `n` (number of limits), then per limit
/// `fieldsPerLimit` fields: kind, shadow, capacity, window, unitsPerToken, unitsPerMicrosecond,
/// fullLevel, first key index, the state's packed layout (`PackedLayout.argument`: the format pattern that
/// writes it, whose widths the script reads back; empty for text; after an `r`, packed state is read but
/// text is written), and for calendar quotas four boundaries p0 < c0 < c1 < n1 (the previous, current and
/// next periods around the caller's clock).
/// Reply: `{now, allowed, then per limit: admits, tooLarge, remaining, resetAfter, retryAfter, window}`.
/// Errors: `TOLLGATE_BADSTATE <key index>` when a key holds something that is not Tollgate state;
/// `TOLLGATE_CLOCK <limit> <instant>` (limit numbered from 1) when a calendar quota's instant — Redis'
/// clock, or the start of its stored period when the clock went back past it — lies outside the periods
/// the caller sent: the caller sends that quota's periods around that instant instead. Raised while the
/// script reads, before it writes anything.
enum LegacyLimitScript {
    static let fieldsPerLimit = 13

    /// The script's code for an algorithm (its `kind` field).
    static func code(for kind: LimitSpec.Kind) -> Int64 {
        switch kind {
        case .tokenBucket: 1
        case .slidingLog: 2
        case .slidingCounter: 3
        case .fixedWindow: 4
        case .calendar: 5
        }
    }

    /// ARGV of one check of `plan`, built field by field (the reference for `ScriptInvocation`'s
    /// pre-encoded bytes, and what benchmarks pass to other clients running the script).
    static func arguments(
        plan: Plan, cost: Int, now: Int64?, callerClock: Int64, anchors: [Int64?]? = nil, packed: Bool = true
    ) -> [String] {
        let specs = plan.compiled.specs
        var first = 1
        var arguments = [String(cost), now.map { String($0) } ?? "", String(specs.count)]
        for (index, spec) in specs.enumerated() {
            var around: (p0: Int64, c0: Int64, c1: Int64, n1: Int64) = (0, 0, 0, 0)
            if let calendar = plan.compiled.calendars[index] {
                around = calendar.neighbourhood(of: anchors?[index] ?? callerClock)
            }
            arguments += fields(of: spec, firstKey: first, writingPacked: packed)
            arguments += [around.p0, around.c0, around.c1, around.n1].map { String($0) }
            first += spec.kind == .slidingLog ? 2 : 1
        }
        return arguments
    }

    /// A limit's fields before its calendar periods: its numbers, the 1-based index of its first key and
    /// its layout (written packed when `writingPacked`, else read packed and written as text).
    static func fields(of spec: LimitSpec, firstKey: Int, writingPacked: Bool) -> [String] {
        let numbers: [Int64] = [
            code(for: spec.kind), spec.shadow ? 1 : 0, spec.capacity, spec.window, spec.unitsPerToken,
            spec.unitsPerMicrosecond, spec.fullLevel, Int64(firstKey),
        ]
        return numbers.map { String($0) } + [PackedLayout(for: spec).argument(writing: writingPacked)]
    }

    static let source = #"""
local function fdiv(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then q = q - 1 elseif r >= b then q = q + 1 end
  return q
end
local function cdiv(a, b)
  if a <= 0 then return 0 end
  return fdiv(a - 1, b) + 1
end
local function fmt(x) return string.format('%.0f', x) end
local function bad(i) return error({err = 'TOLLGATE_BADSTATE ' .. i}) end

-- Packed state (PackedLayout): '1', the counts at L.width digits each, the instant modulo 10^L.residue;
-- L.pattern writes it with one string.format (false: written as text, packed state still read).
-- The value nearest to ref that is r modulo m.
local function near(r, ref, m)
  local d = r - ref
  d = d - fdiv(d, m) * m
  if d * 2 >= m then d = d - m end
  return ref + d
end
local function decode(L, v, i, now)
  local w = L.width
  if L.residue == 0 or #v ~= L.length or not string.find(v, '^1%d+$') then bad(i) end
  local x, y = tonumber(string.sub(v, 2, 1 + w)), 0
  if L.kind == 3 then y = tonumber(string.sub(v, 2 + w, 1 + 2 * w)) end
  local r, m = tonumber(string.sub(v, L.length - L.residue + 1)), L.modulus
  if not (x and y and r and x >= 0 and x <= L.most and y >= 0 and y <= L.most and r >= 0 and r < m) then bad(i) end
  if L.kind == 1 then return x, near(r, now, m), 0 end
  if L.kind == 5 then
    -- The period's start, in seconds: one of those around now, an earlier one (nothing used in these),
    -- or a later one when the clock went back past it: then the caller sends the periods around it.
    local s = near(r, fdiv(now, 1000000), m) * 1000000
    if s == L.c0 then return L.c0, x, L.c1 end
    if s == L.p0 then return L.p0, x, L.c0 end
    if s == L.c1 then return L.c1, x, L.n1 end
    if s > L.c1 then return error({err = 'TOLLGATE_CLOCK ' .. L.index .. ' ' .. fmt(s)}) end
    return 0, 0, 0
  end
  local start = near(r, fdiv(now, L.window), m) * L.window
  if L.kind == 3 then return start, x, y end
  return start, x, start + L.window
end
-- The next state (a, b, c as the algorithms return it) as stored: packed when it fits, else text.
local function encode(L, a, b, c)
  if L.pattern then
    local x, y, instant = a, 0, b
    if L.kind == 4 then x, instant = b, fdiv(a, L.window)
    elseif L.kind == 5 then x, instant = b, fdiv(a, 1000000)
    elseif L.kind == 3 then x, y, instant = b, c, fdiv(a, L.window) end
    if x >= 0 and x < L.top and y >= 0 and y < L.top then
      instant = instant - fdiv(instant, L.modulus) * L.modulus
      if L.kind == 3 then return string.format(L.pattern, x, y, instant) end
      return string.format(L.pattern, x, instant)
    end
  end
  return fmt(a) .. ':' .. fmt(b) .. ':' .. fmt(c)
end
local function load(L, i, now)
  local v = redis.pcall('GET', KEYS[i])
  if type(v) == 'table' then bad(i) end
  if not v then return 0, 0, 0 end
  if not string.find(v, ':', 1, true) then return decode(L, v, i, now) end
  local a, b, c = string.match(v, '^(%d+):(%d+):(%d+)$')
  if not a then bad(i) end
  return tonumber(a), tonumber(b), tonumber(c)
end

local cost = tonumber(ARGV[1])
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local n = tonumber(ARGV[3])
local F = 13

local limits = {}
for j = 1, n do
  local o = 3 + (j - 1) * F
  local L = {
    kind = tonumber(ARGV[o + 1]), shadow = ARGV[o + 2] == '1', capacity = tonumber(ARGV[o + 3]),
    window = tonumber(ARGV[o + 4]), upt = tonumber(ARGV[o + 5]), upm = tonumber(ARGV[o + 6]),
    full = tonumber(ARGV[o + 7]), key = tonumber(ARGV[o + 8]),
    p0 = tonumber(ARGV[o + 10]), c0 = tonumber(ARGV[o + 11]), c1 = tonumber(ARGV[o + 12]), n1 = tonumber(ARGV[o + 13]),
    a = 0, b = 0, c = 0, residue = 0, index = j
  }
  local layout = ARGV[o + 9]
  if layout ~= '' then
    -- '1%0<width>.0f' (twice for a sliding counter) then '%0<residue>.0f'; an 'r' before it: read only.
    local w, k = tonumber(string.match(layout, '%%0(%d+)')), tonumber(string.match(layout, '%%0(%d+)%.0f$'))
    L.width, L.residue, L.modulus, L.top = w, k, 10 ^ k, 10 ^ w
    L.length = 1 + w + k
    L.most = L.capacity
    if L.kind == 3 then L.length = L.length + w elseif L.kind == 1 then L.most = L.full end
    L.pattern = string.byte(layout, 1) ~= 114 and layout
  end
  if L.kind == 2 then
    local total = redis.pcall('GET', KEYS[L.key + 1])
    if type(total) == 'table' then bad(L.key + 1) end
    if total and not string.match(total, '^%d+$') then bad(L.key + 1) end
    L.sum = tonumber(total or '0')
    local newest = redis.pcall('LINDEX', KEYS[L.key], -1)
    if type(newest) == 'table' then bad(L.key) end
    if newest then
      local t = string.match(newest, '^(%d+):%d+$')
      if not t then bad(L.key) end
      L.newest = tonumber(t)
    end
  else
    L.a, L.b, L.c = load(L, L.key, now)
    if L.kind == 5 then
      -- The quota's period: the stored one while it lasts, else the one of the periods sent that holds t.
      local t = math.max(now, L.a)
      if t < L.c then L.start, L.finish = L.a, L.c
      elseif L.p0 <= t and t < L.c0 then L.start, L.finish = L.p0, L.c0
      elseif L.c0 <= t and t < L.c1 then L.start, L.finish = L.c0, L.c1
      elseif L.c1 <= t and t < L.n1 then L.start, L.finish = L.c1, L.n1
      else return error({err = 'TOLLGATE_CLOCK ' .. j .. ' ' .. fmt(t)}) end
    end
  end
  limits[j] = L
end

-- Each returns: admits, tooLarge, remaining, resetAfter, retryAfter, window, expiresAt, next a, b, c, t
local function bucket(L, now, c)
  local t = math.max(now, L.b)
  local tooLarge = c > L.capacity
  local rate = L.upm
  local deficit = L.a
  if deficit > 0 then
    local elapsed = t - L.b
    if elapsed > 0 then
      if elapsed > fdiv(deficit, rate) then deficit = 0 else deficit = deficit - elapsed * rate end
    end
  end
  local need = 0
  if not tooLarge then need = c * L.upt end
  local admits = (not tooLarge) and deficit + need <= L.full
  local after = deficit
  if admits then after = deficit + need end
  local level = L.full - after
  local reset, retry = 0, 0
  if after > 0 then reset = cdiv(L.upt - (level - fdiv(level, L.upt) * L.upt), rate) end
  if tooLarge then retry = -1 elseif not admits then retry = cdiv(deficit + need - L.full, rate) end
  return admits, tooLarge, fdiv(level, L.upt), reset, retry, L.window, t + cdiv(after, rate), after, t, 0, t
end

local function fixed(L, now, c, start, finish)
  local length = finish - start
  local tooLarge = c > L.capacity
  local used = 0
  if L.a == start and L.c == finish then used = L.b end
  local admits = (not tooLarge) and used + c <= L.capacity
  local after = used
  if admits then after = used + c end
  local reset, retry, expires = 0, 0, now
  if after > 0 then reset = finish - now; expires = finish end
  if tooLarge then retry = -1 elseif not admits then retry = finish - now end
  return admits, tooLarge, L.capacity - after, reset, retry, length, expires, start, after, finish, now
end

local function aligned(t, length)
  local start = t - (t - fdiv(t, length) * length)
  return start, start + length
end

local function window(L, now, c)
  local t = math.max(now, L.a)
  local start, finish = aligned(t, L.window)
  return fixed(L, t, c, start, finish)
end

local function calendar(L, now, c)
  return fixed(L, math.max(now, L.a), c, L.start, L.finish)
end

local TICKS = 1048576
local function ticks(w)
  local tick = fdiv(w + TICKS - 1, TICKS)
  return tick, fdiv(w + tick - 1, tick)
end
local function counterRemaining(prev, cur, elapsed, w, limit)
  local tick, count = ticks(w)
  return math.max(0, limit - cur - cdiv(prev * (count - fdiv(elapsed, tick)), count))
end
local function counterRetry(prev, cur, elapsed, w, limit, c)
  local tick, count = ticks(w)
  local room = limit - cur - c
  if room >= 0 then
    if prev == 0 then return 0 end
    local earliest = count - fdiv(room * count, prev)
    if earliest <= fdiv(elapsed, tick) then return 0 end
    if earliest < count then return earliest * tick - elapsed end
  end
  local toBoundary = w - elapsed
  if cur == 0 then return toBoundary end
  local earliest = math.max(0, count - fdiv((limit - c) * count, cur))
  return toBoundary + math.min(earliest * tick, w)
end
local function counter(L, now, c)
  local t = math.max(now, L.a)
  local w = L.window
  local tooLarge = c > L.capacity
  local start, finish = aligned(t, w)
  local prev, cur = 0, 0
  if L.a == start then prev, cur = L.b, L.c elseif L.a == start - w then prev, cur = L.c, 0 end
  local elapsed = t - start
  local wait = -1
  if not tooLarge then wait = counterRetry(prev, cur, elapsed, w, L.capacity, c) end
  local admits = wait == 0
  local after = cur
  if admits then after = cur + c end
  local remaining = counterRemaining(prev, after, elapsed, w, L.capacity)
  local reset = 0
  if remaining < L.capacity then reset = counterRetry(prev, after, elapsed, w, L.capacity, remaining + 1) end
  local expires = t
  if after > 0 then expires = finish + w elseif prev > 0 then expires = finish end
  return admits, tooLarge, remaining, reset, wait, w, expires, start, prev, after, t
end

local function entry(v, i)
  local et, ec = string.match(v, '^(%d+):(%d+)$')
  if not et then bad(i) end
  return tonumber(et), tonumber(ec)
end
local function slidingLog(L, now, c)
  local t = math.max(now, L.newest or now)
  local w = L.window
  local popped = false
  while L.sum > 0 do
    local head = redis.call('LINDEX', KEYS[L.key], 0)
    if not head then break end
    local et, ec = entry(head, L.key)
    if et + w > t then break end
    redis.call('LPOP', KEYS[L.key])
    L.sum = L.sum - ec
    popped = true
  end
  if L.sum <= 0 then L.sum = 0; L.newest = nil end
  if popped then
    -- The running total must follow the entries that left, whether or not this request is admitted.
    if L.sum == 0 then redis.call('DEL', KEYS[L.key], KEYS[L.key + 1])
    else redis.call('SET', KEYS[L.key + 1], fmt(L.sum), 'KEEPTTL') end
  end
  local tooLarge = c > L.capacity
  local used = L.sum
  local admits = (not tooLarge) and used + c <= L.capacity
  local after = used
  if admits then after = used + c end
  local reset, retry, expires = 0, 0, t
  if tooLarge then retry = -1 end
  if not admits and not tooLarge then
    local need, freed, i = used + c - L.capacity, 0, 0
    while retry == 0 do
      local chunk = redis.call('LRANGE', KEYS[L.key], i, i + 63)
      if #chunk == 0 then retry = w; break end
      for _, v in ipairs(chunk) do
        local et, ec = entry(v, L.key)
        freed = freed + ec
        if freed >= need then retry = et + w - t; break end
      end
      i = i + 64
    end
  end
  if after > 0 then
    local oldest = redis.call('LINDEX', KEYS[L.key], 0)
    if oldest then
      local et = entry(oldest, L.key)
      reset = et + w - t
    else
      reset = w
    end
    if admits then expires = t + w else expires = (L.newest or t) + w end
  end
  return admits, tooLarge, L.capacity - after, reset, retry, w, expires, after, 0, 0, t
end

local function evaluate(L, c)
  if L.kind == 1 then return bucket(L, now, c)
  elseif L.kind == 2 then return slidingLog(L, now, c)
  elseif L.kind == 3 then return counter(L, now, c)
  elseif L.kind == 4 then return window(L, now, c)
  else return calendar(L, now, c) end
end

local results = {}
local allowed = true
for j = 1, n do
  local L = limits[j]
  local r = {evaluate(L, cost)}
  results[j] = r
  if not L.shadow and not r[1] then allowed = false end
end

local out = {now, 0}
if allowed then out[2] = 1 end
for j = 1, n do
  local L = limits[j]
  local r = results[j]
  if not allowed and r[1] then
    -- Nothing is consumed: report the quota as it stands.
    local u = {evaluate(L, 0)}
    r[3], r[4] = u[3], u[4]
  elseif allowed and cost > 0 and r[1] then
    local ttl = cdiv(math.max(r[7] - r[11], r[6]), 1000) + 1000
    if L.kind == 2 then
      local t = r[11]
      local last = redis.call('LINDEX', KEYS[L.key], -1)
      local lt, lc
      if last then lt, lc = entry(last, L.key) end
      if lt == t then
        redis.call('LSET', KEYS[L.key], -1, fmt(t) .. ':' .. fmt(lc + cost))
      else
        redis.call('RPUSH', KEYS[L.key], fmt(t) .. ':' .. fmt(cost))
      end
      redis.call('SET', KEYS[L.key + 1], fmt(r[8]), 'PX', ttl)
      redis.call('PEXPIRE', KEYS[L.key], ttl)
    else
      redis.call('SET', KEYS[L.key], encode(L, r[8], r[9], r[10]), 'PX', ttl)
    end
  end
  local admits, tooLarge = 0, 0
  if r[1] then admits = 1 end
  if r[2] then tooLarge = 1 end
  local base = 2 + (j - 1) * 6
  out[base + 1] = admits
  out[base + 2] = tooLarge
  out[base + 3] = r[3]
  out[base + 4] = r[4]
  out[base + 5] = r[5]
  out[base + 6] = r[6]
end
return out
"""#
}
