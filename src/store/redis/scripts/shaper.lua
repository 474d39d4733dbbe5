-- Leaky-bucket shaper: src/algorithm/gcra.rs `shape` in integer microseconds of Redis
-- time. A request GCRA denies reserves its slot (the TAT moves on) and waits for it,
-- unless the wait exceeds max_delay.
--   time   the emission interval T (never 0: the shaper needs a period)
--   reply  outcome 0 as the token bucket; 3 delayed (charged, slot reserved): time = the
--          wait, reset = wait + T; 1 the queue is full: reset = time = wait - max_delay
-- Redis time plus burst * T + max_delay (at most 100 years) stays below 2^53.
local function shaper_decide(state, now, interval, burst, cost, max_delay)
  local tat, expires = read_tat(state)
  local outcome, remaining, reset, wait, next_tat = gcra(tat, now, interval, burst, cost)
  if outcome == 1 then
    if wait > max_delay then
      return 1, remaining, wait - max_delay, wait - max_delay, nil, nil, expires
    end
    next_tat = math.max(tat, now) + cost * interval
    outcome, remaining, reset = 3, 0, wait + interval
  end
  local value, lives_until = tat_value(next_tat)
  return outcome, remaining, reset, wait, value, lives_until, expires
end

local shaper = { decide = shaper_decide, refund = gcra_refund, penalize = gcra_penalize }
