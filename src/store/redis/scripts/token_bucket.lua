-- Token bucket (GCRA): src/algorithm/gcra.rs in integer microseconds of Redis time.
--   state  the TAT; for a quota that never refills (time 0), the quota spent
--   time   the emission interval T in whole microseconds, 0 for a quota that never refills
--   reset  after an admission, the time until the next unit is back (0 when full); after a
--          denial, the same as the retry time
-- Redis time (about 2^51 us) plus a quota's depth (burst * T, at most 100 years, about
-- 2^52 us) stays below 2^53.
local function token_bucket_decide(state, now, interval, burst, cost)
  if interval == 0 then
    local spent = tonumber(state or '0')
    local available = math.max(burst - spent, 0)
    if cost > burst then
      return 2, available, 0, 0
    end
    if cost > available then
      return 1, available, 0, 0
    end
    if cost == 0 then
      return 0, available, 0, 0
    end
    -- A spent allowance never comes back, so it is kept without a TTL.
    return 0, available - cost, 0, 0, string.format('%d', spent + cost), nil
  end
  local tat, expires = read_tat(state)
  local outcome, remaining, reset, time, next_tat = gcra(tat, now, interval, burst, cost)
  local value, lives_until = tat_value(next_tat)
  return outcome, remaining, reset, time, value, lives_until, expires
end

local token_bucket = { decide = token_bucket_decide, refund = gcra_refund,
  penalize = gcra_penalize }
