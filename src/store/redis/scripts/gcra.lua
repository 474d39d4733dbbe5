-- GCRA on a refilling quota (src/algorithm/gcra.rs, `decide`), shared by the token bucket
-- and the shaper. The state is the TAT in microseconds of Redis time.
-- Returns the reply and the new TAT (nil when nothing is charged); writes nothing.
local function gcra(state, now, interval, burst, cost)
  local tolerance = interval * burst
  local base = math.max(state, now)
  local available = idiv(math.max(now + tolerance - base, 0), interval)
  if cost > burst then
    return { 2, available, 0, 0 }, nil
  end
  local tat = base + cost * interval
  if tat > now + tolerance then
    local retry = tat - tolerance - now
    return { 1, available, retry, retry }, nil
  end
  local slack = now + tolerance - tat
  local reset = 0
  if tat > now then
    -- Not `%`: Lua computes it as a - floor(a / b) * b, inexact near 2^53.
    reset = interval - (slack - idiv(slack, interval) * interval)
  end
  if cost == 0 then
    tat = nil
  end
  return { 0, idiv(slack, interval), reset, 0 }, tat
end

-- Writes the TAT; the key lives exactly until it, from then on saying no more than a
-- missing key.
local function save_tat(tat, now)
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', px_until(tat, now))
end

-- Writes the TAT if the request changed it; otherwise heals a key found without a TTL.
local function save_or_heal(tat, state, now)
  if tat then
    save_tat(tat, now)
  elseif state > 0 then
    heal_ttl(state, now)
  end
end
