-- Fixed window: src/algorithm/fixed_window.rs in integer microseconds of Redis time.
-- Windows are [k * P, (k + 1) * P) of Redis time since the Unix epoch.
--
-- KEYS[1]  '<window k>:<count>'; it expires at the end of window k
-- ARGV[1]  period P in whole microseconds
-- ARGV[2]  burst
-- ARGV[3]  cost
--
-- Reply: { outcome, remaining, reset, retry }, integers, times in microseconds.
--   outcome 0: allowed (charged); reset = time to the end of the window, 0 if nothing spent
--   outcome 1: denied; reset = retry = time to the end of the window
--   outcome 2: the cost exceeds the burst
-- Redis time plus P (at most 100 years) and 2 * burst stay below 2^53.
local period = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = now_micros()
local window = idiv(now, period)

local count = 0
-- When the stored state stops saying anything: the end of its window.
local expires = nil
local state = redis.call('GET', KEYS[1])
if state then
  local stored, counted = string.match(state, '^(%d+):(%d+)$')
  expires = (tonumber(stored) + 1) * period
  -- A later window (written by a caller with a later clock) counts as current.
  if tonumber(stored) >= window then
    count = tonumber(counted)
  end
end
local window_end = (window + 1) * period
local function reply(outcome, remaining, retry)
  local reset = window_end - now
  if remaining == burst then
    reset = 0
  end
  return { outcome, remaining, reset, retry }
end

if cost > burst then
  heal_ttl(expires, now)
  return reply(2, burst - count, 0)
end
if count + cost > burst then
  heal_ttl(expires, now)
  return reply(1, burst - count, window_end - now)
end
count = count + cost
if cost > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f:%.0f', window, count),
    'PX', px_until(window_end, now))
else
  heal_ttl(expires, now)
end
return reply(0, burst - count, 0)
