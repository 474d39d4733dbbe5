-- Sliding window (Cloudflare's estimate): src/algorithm/sliding_window.rs in integer
-- microseconds of Redis time. With e the time elapsed in the current window of length P,
-- the units in use are prev * (P - e) / P + curr; a request of cost c passes iff that plus
-- c stays within the burst.
--   state  '<window k>:<prev>:<curr>'; it expires at the end of window k + 1
--   time   the period P in whole microseconds
--   reset  allowed: time until one more unit is free, 0 if none used; denied: the same as
--          the exact retry time
-- Every product is at most burst * P, kept with (burst + 1) * P <= 2^53 by the Rust side.

-- The units free now: `weight` is prev * (P - e), the previous window's part scaled by P.
local function sliding_remaining(burst, weight, period, curr)
  return math.max(burst - cdiv(weight, period) - curr, 0)
end

-- How long until the units in use drop to `target` or below, with no new admissions.
local function sliding_wait(target, prev, curr, weight, period, elapsed)
  if curr <= target then
    -- prev decays through the rest of this window.
    local room = (target - curr) * period
    if weight <= room then
      return 0
    end
    return period - idiv(room, prev) - elapsed
  end
  -- Only in the next window, where curr becomes the decaying prev.
  return period - elapsed + period - idiv(target * period, curr)
end

local function sliding_window_decide(state, now, period, burst, cost)
  local index = idiv(now, period)
  local prev, curr = 0, 0
  local expires = nil
  if state then
    local stored, p, c = string.match(state, '^(%d+):(%d+):(%d+)$')
    expires = (tonumber(stored) + 2) * period
    local behind = index - tonumber(stored)
    -- A later window (written by a caller with a later clock) counts as current.
    if behind <= 0 then
      prev, curr = tonumber(p), tonumber(c)
    elseif behind == 1 then
      prev = tonumber(c)
    end
  end
  local elapsed = now - index * period
  local weight = prev * (period - elapsed)

  if cost > burst then
    return 2, sliding_remaining(burst, weight, period, curr), 0, 0, nil, nil, expires
  end
  -- prev * (P - e) + (curr + cost) * P <= burst * P, without the larger sum.
  if curr + cost > burst or weight > (burst - curr - cost) * period then
    local retry = sliding_wait(burst - cost, prev, curr, weight, period, elapsed)
    return 1, sliding_remaining(burst, weight, period, curr), retry, retry, nil, nil, expires
  end
  curr = curr + cost
  local left = sliding_remaining(burst, weight, period, curr)
  local reset = 0
  if left ~= burst then
    reset = sliding_wait(burst - left - 1, prev, curr, weight, period, elapsed)
  end
  if cost == 0 then
    return 0, left, reset, 0, nil, nil, expires
  end
  return 0, left, reset, 0, string.format('%d:%d:%d', index, prev, curr),
    (index + 2) * period, expires
end

-- Gives back up to `units` spent in the current window.
local function sliding_window_refund(state, now, period, burst, units)
  if not state then
    return nil
  end
  local stored, prev, curr = string.match(state, '^(%d+):(%d+):(%d+)$')
  stored = tonumber(stored)
  if stored < idiv(now, period) then
    return nil
  end
  return string.format('%d:%s:%d', stored, prev, math.max(tonumber(curr) - units, 0)),
    (stored + 2) * period
end

-- Spends `units` of the current window, up to the burst (a count above it stays).
local function sliding_window_penalize(state, now, period, burst, units)
  local index, prev, curr = idiv(now, period), 0, 0
  if state then
    local stored, p, c = string.match(state, '^(%d+):(%d+):(%d+)$')
    local behind = index - tonumber(stored)
    if behind <= 0 then
      index, prev, curr = tonumber(stored), tonumber(p), tonumber(c)
    elseif behind == 1 then
      prev = tonumber(c)
    end
  end
  return string.format('%d:%d:%d', index, prev, math.max(math.min(curr + units, burst), curr)),
    (index + 2) * period
end

local sliding_window = { decide = sliding_window_decide, refund = sliding_window_refund,
  penalize = sliding_window_penalize }
