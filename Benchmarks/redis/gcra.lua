-- The generic cell rate algorithm for one limit, as go-redis/redis_rate publishes it (one key holding the
-- theoretical arrival time, Redis' TIME as the clock), written here for the Redis CPU comparison.
-- KEYS[1]: the limit's key. ARGV: burst, rate, period (seconds), cost.
-- Reply: {allowed, remaining, retry after (s, text), reset after (s, text)}.
local burst, rate, period, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local interval = period / rate
local increment = interval * cost
local tolerance = interval * burst
redis.replicate_commands()
local clock = redis.call('TIME')
local now = (clock[1] - 1483228800) + clock[2] / 1000000
local arrival = tonumber(redis.call('GET', KEYS[1]) or now)
if arrival < now then arrival = now end
local next_arrival = arrival + increment
local gap = now - (next_arrival - tolerance)
local remaining = math.floor(gap / interval)
if remaining < 0 then
  return {0, 0, tostring(-gap), tostring(arrival - now)}
end
local reset = next_arrival - now
if reset > 0 then
  redis.call('SET', KEYS[1], next_arrival, 'EX', math.ceil(reset))
end
return {cost, remaining, '-1', tostring(reset)}
