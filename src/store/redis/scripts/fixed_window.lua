-- Fixed window: src/algorithm/fixed_window.rs in integer microseconds of Redis time.
-- Windows are [k * P, (k + 1) * P) of Redis time since the Unix epoch.
--   state  '<window k>:<count>'; it expires at the end of window k
--   time   the period P in whole microseconds
--   reset  allowed: time to the end of the window, 0 if nothing spent; denied: the same as
--          the retry time, the end of the window
-- Redis time plus P (at most 100 years) and 2 * burst stay below 2^53.

-- The reply's reset: until the window ends, 0 if nothing is spent.
local function fixed_window_reset(remaining, burst, window_end, now)
  if remaining == burst then
    return 0
  end
  return window_end - now
end

local function fixed_window_decide(state, now, period, burst, cost)
  local window = idiv(now, period)
  local count = 0
  local expires = nil
  if state then
    local stored, counted = string.match(state, '^(%d+):(%d+)$')
    expires = (tonumber(stored) + 1) * period
    -- A later window (written by a caller with a later clock) counts as current.
    if tonumber(stored) >= window then
      count = tonumber(counted)
    end
  end
  local window_end = (window + 1) * period
  if cost > burst then
    local left = math.max(burst - count, 0)
    return 2, left, fixed_window_reset(left, burst, window_end, now), 0, nil, nil, expires
  end
  if count + cost > burst then
    local left = math.max(burst - count, 0)
    return 1, left, fixed_window_reset(left, burst, window_end, now), window_end - now, nil,
      nil, expires
  end
  count = count + cost
  local left = burst - count
  local reset = fixed_window_reset(left, burst, window_end, now)
  if cost == 0 then
    return 0, left, reset, 0, nil, nil, expires
  end
  return 0, left, reset, 0, string.format('%d:%d', window, count), window_end, expires
end

-- Gives back up to `units` spent in the current window.
local function fixed_window_refund(state, now, period, burst, units)
  if not state then
    return nil
  end
  local stored, counted = string.match(state, '^(%d+):(%d+)$')
  stored, counted = tonumber(stored), tonumber(counted)
  if stored < idiv(now, period) then
    return nil
  end
  return string.format('%d:%d', stored, math.max(counted - units, 0)),
    (stored + 1) * period
end

-- Spends `units` of the current window, up to the burst (a count above it stays).
local function fixed_window_penalize(state, now, period, burst, units)
  local window, count = idiv(now, period), 0
  if state then
    local stored, counted = string.match(state, '^(%d+):(%d+)$')
    if tonumber(stored) >= window then
      window, count = tonumber(stored), tonumber(counted)
    end
  end
  return string.format('%d:%d', window, math.max(math.min(count + units, burst), count)),
    (window + 1) * period
end

local fixed_window = { decide = fixed_window_decide, refund = fixed_window_refund,
  penalize = fixed_window_penalize }
