-- Quota present now, in whole units, for a request that does not pass: `base` is
-- max(TAT, now), `tolerance` the bucket's depth.
local function gcra_available(base, now, tolerance, interval)
  return idiv(math.max(now + tolerance - base, 0), interval)
end

-- GCRA on a refilling quota (src/algorithm/gcra.rs, `decide`), shared by the token bucket
-- and the shaper. The state is the TAT in microseconds of Redis time.
-- Returns the reply's four integers and the new TAT (nil when nothing is charged).
local function gcra(tat, now, interval, burst, cost)
  local tolerance = interval * burst
  local base = math.max(tat, now)
  if cost > burst then
    return 2, gcra_available(base, now, tolerance, interval), 0, 0
  end
  local next_tat = base + cost * interval
  if next_tat > now + tolerance then
    local retry = next_tat - tolerance - now
    return 1, gcra_available(base, now, tolerance, interval), retry, retry
  end
  local slack = now + tolerance - next_tat
  local left = idiv(slack, interval)
  local reset = 0
  if next_tat > now then
    -- Not `%`: Lua computes it as a - floor(a / b) * b, inexact near 2^53.
    reset = interval - (slack - left * interval)
  end
  if cost == 0 then
    next_tat = nil
  end
  return 0, left, reset, 0, next_tat
end

-- A TAT as the key's value; it lives exactly until the TAT, from then on saying no more
-- than a missing key.
local function tat_value(tat)
  if tat then
    return string.format('%d', tat), tat
  end
end

-- The stored TAT (0 when missing) and when it stops saying anything (nil when missing).
local function read_tat(state)
  local tat = tonumber(state or '0')
  if tat > 0 then
    return tat, tat
  end
  return tat, nil
end

-- The longest a block may last and a debt may reach past a full refill: 100 years.
local MAX_BLOCK = 3153600000000000

-- Refunds and penalties of the buckets (src/algorithm/gcra.rs). Each returns the key's
-- new value and when it stops saying anything (nil: never), nil for no change, or false
-- to delete the key. For a quota that never refills (interval 0) the value is the count
-- spent.

-- Gives back up to `units`: the TAT moves back, never before now (a full bucket).
local function gcra_refund(state, now, interval, burst, units)
  local tat = tonumber(state or '0')
  if interval == 0 then
    if tat == 0 then
      return nil
    end
    local spent = math.max(tat - units, 0)
    if spent == 0 then
      return false
    end
    return string.format('%d', spent), nil
  end
  if tat <= now then
    return nil
  end
  return tat_value(math.max(tat - units * interval, now))
end

-- Charges `units` whatever is left: the TAT moves on, into debt, by at most MAX_BLOCK
-- past a full refill. A spent count goes up to the quota.
local function gcra_penalize(state, now, interval, burst, units)
  local tat = tonumber(state or '0')
  if interval == 0 then
    return string.format('%d', math.min(tat + units, burst)), nil
  end
  local latest = now + interval * burst + MAX_BLOCK
  return tat_value(math.min(math.max(tat, now) + units * interval, latest))
end
