-- Token bucket (GCRA): src/algorithm/gcra.rs in integer microseconds of Redis time.
--
-- KEYS[1]  the TAT in microseconds of Redis time; for a quota that never refills, the
--          quota spent
-- ARGV[1]  emission interval T in whole microseconds; 0 for a quota that never refills
-- ARGV[2]  burst
-- ARGV[3]  cost
--
-- Reply: { outcome, remaining, reset, retry }, integers, times in microseconds.
--   outcome 0: allowed (charged); reset = time until the next unit is back, 0 when full
--   outcome 1: denied (nothing charged); reset = retry = time until the same request passes
--   outcome 2: the cost exceeds the burst (nothing charged)
-- Redis time (about 2^51 us) plus a quota's depth (burst * T, at most 100 years, about
-- 2^52 us) stays below 2^53.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local state = tonumber(redis.call('GET', KEYS[1]) or '0')

if interval == 0 then
  local available = math.max(burst - state, 0)
  if cost > burst then
    return { 2, available, 0, 0 }
  end
  if cost > available then
    return { 1, available, 0, 0 }
  end
  if cost > 0 then
    -- A spent allowance never comes back, so it is kept without a TTL.
    redis.call('SET', KEYS[1], string.format('%.0f', state + cost))
  end
  return { 0, available - cost, 0, 0 }
end

local now = now_micros()
local reply, tat = gcra(state, now, interval, burst, cost)
save_or_heal(tat, state, now)
return reply
