-- Shared by every script of tower-ratelimit's RedisStore (sent in front of each). Loaded
-- as a function library, its top level may only define functions and tables: Redis lets
-- the libraries (string, math, redis.call) be used only when a function runs.
-- All values are integers below 2^53, which Lua's doubles hold exactly; the Rust side
-- refuses quotas whose products could exceed that. They are written with '%d' (a C long):
-- exact, and far cheaper than '%.0f', which formats a double.

-- Redis's clock in microseconds since the Unix epoch (about 2^51).
local function now_micros()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- floor(a / b) for integers 0 <= a, 0 < b with a + b <= 2^53: the double quotient can be
-- rounded up to the next integer, so it is corrected with exact products.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    return q - 1
  end
  if (q + 1) * b <= a then
    return q + 1
  end
  return q
end

-- ceil(a / b), under the same conditions.
local function cdiv(a, b)
  return idiv(a + b - 1, b)
end

-- Milliseconds until `at` (microseconds), rounded up: a key's exact TTL for `PX`.
local function px_until(at, now)
  return cdiv(at - now, 1000)
end

-- Every algorithm below is a function (state, now, time, burst, cost, max_delay) of a
-- key's value (false when missing) that writes nothing and returns, as seven values (no
-- table: a batch decides many requests, and every table is work for the collector):
--   outcome, remaining, reset, time
--                the reply, integers, times in microseconds: outcome 0 allowed (charged),
--                1 denied, 2 the cost exceeds the burst, 3 delayed (the shaper; time = the
--                wait), 4 blocked (time = until the block ends)
--   value        the key's new value if the request is charged, else nil
--   lives_until  when that value stops saying anything (its expiry), nil to keep it
--   expires      when the current value stops saying anything, for heal_ttl
