-- Token bucket (GCRA) for tower-ratelimit's RedisStore: the arithmetic of
-- src/algorithm/gcra.rs, in integer microseconds of Redis time.
--
-- KEYS[1]  the key's state: its theoretical arrival time (TAT) in microseconds since the
--          Unix epoch, by Redis's clock; or, for a quota that never refills, the quota spent.
-- ARGV[1]  emission interval T in whole microseconds; 0 for a quota that never refills
-- ARGV[2]  burst
-- ARGV[3]  cost
--
-- Reply: { outcome, remaining, micros }, all integers.
--   outcome 0: allowed (charged); micros = time until the next unit is back, 0 when full
--   outcome 1: denied (nothing charged); micros = exact time until the same request passes
--   outcome 2: the cost exceeds the burst (nothing charged); micros = 0
--
-- Every value stays below 2^53, so Lua's doubles hold it exactly: Redis time is about
-- 2^51 us and a quota's depth in time (burst * T) is at most 100 years (about 2^52 us).
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local state = tonumber(redis.call('GET', KEYS[1]) or '0')

if interval == 0 then
  local available = math.max(burst - state, 0)
  if cost > burst then
    return { 2, available, 0 }
  end
  if cost > available then
    return { 1, available, 0 }
  end
  if cost > 0 then
    -- A spent allowance never comes back, so it is kept without a TTL.
    redis.call('SET', KEYS[1], string.format('%.0f', state + cost))
  end
  return { 0, available - cost, 0 }
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tolerance = interval * burst
local base = math.max(state, now)
local available = math.floor(math.max(now + tolerance - base, 0) / interval)
if cost > burst then
  return { 2, available, 0 }
end
local tat = base + cost * interval
if tat > now + tolerance then
  return { 1, available, tat - tolerance - now }
end
local slack = now + tolerance - tat
local reset = 0
if tat > now then
  reset = interval - slack % interval
end
if cost > 0 then
  -- The key lives exactly until its TAT: from then on it says no more than a missing key.
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
end
return { 0, math.floor(slack / interval), reset }
