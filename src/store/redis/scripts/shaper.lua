-- Leaky-bucket shaper: src/algorithm/gcra.rs `shape` in integer microseconds of Redis
-- time. A request GCRA denies reserves its slot (the TAT moves on) and waits for it,
-- unless the wait exceeds max_delay.
--
-- KEYS[1]  the TAT in microseconds of Redis time
-- ARGV[1]  emission interval T in whole microseconds (never 0: the shaper needs a period)
-- ARGV[2]  burst
-- ARGV[3]  cost
-- ARGV[4]  max_delay in whole microseconds
--
-- Reply: { outcome, remaining, reset, time }, integers, times in microseconds.
--   outcome 0: allowed at once, as the token bucket
--   outcome 3: delayed (charged, slot reserved); time = the wait, reset = wait + T
--   outcome 1: denied, the queue is full; reset = time = wait - max_delay
--   outcome 2: the cost exceeds the burst
-- Redis time plus burst * T + max_delay (at most 100 years) stays below 2^53.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local max_delay = tonumber(ARGV[4])
local state = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = now_micros()

local reply, tat = gcra(state, now, interval, burst, cost)
if reply[1] == 1 then
  local wait = reply[4]
  if wait > max_delay then
    return { 1, reply[2], wait - max_delay, wait - max_delay }
  end
  tat = math.max(state, now) + cost * interval
  reply = { 3, 0, wait + interval, wait }
end
save_or_heal(tat, state, now)
return reply
