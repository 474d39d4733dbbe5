-- Fixed window: src/algorithm/fixed_window.rs in integer microseconds of Redis time.
-- Windows are [k * P, (k + 1) * P) of Redis time since the Unix epoch.
--   state  '<window k>:<count>'; it expires at the end of window k
--   time   the period P in whole microseconds
--   reset  allowed: time to the end of the window, 0 if nothing spent; denied: the same as
--          the retry time, the end of the window
-- Redis time plus P (at most 100 years) and 2 * burst stay below 2^53.
local function fixed_window(state, now, period, burst, cost)
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
  local function reply(outcome, remaining, retry)
    local reset = window_end - now
    if remaining == burst then
      reset = 0
    end
    return { outcome, remaining, reset, retry }
  end

  if cost > burst then
    return reply(2, burst - count, 0), nil, nil, expires
  end
  if count + cost > burst then
    return reply(1, burst - count, window_end - now), nil, nil, expires
  end
  count = count + cost
  if cost == 0 then
    return reply(0, burst - count, 0), nil, nil, expires
  end
  return reply(0, burst - count, 0), string.format('%.0f:%.0f', window, count), window_end,
    expires
end
