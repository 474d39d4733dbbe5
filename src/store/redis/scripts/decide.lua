-- A batch of changes, each to one key under one or more policies, applied in order at one
-- instant. A charge checks every policy of its key, and only if all let the request
-- through is it charged under each; a request one policy refuses is reported under the
-- others as they stand, uncharged. The other changes apply to every policy and report the
-- state after them, as a look would. A key blocked under any of its policies is denied
-- under all until its block ends. Each key is read at most once and written at most once
-- per call, however many changes of the batch it takes.
--
-- KEYS           the state of each policy of each change, change after change (a call's
--                keys share one hash tag, so one Cluster slot); a blocked state is written
--                'b<until>;<state>' (until: microseconds of Redis time)
-- ARGV[1]        the channel on which a reset or a refund publishes the name of each key
--                it changed, so that app servers drop what their deny caches know of it
-- then, per change:
--   the change   0 charge, 1 reset, 2 refund, 3 penalize, 4 block
--   its amount   the cost, the units refunded or charged, or the block's length in whole
--                microseconds (0 for a reset)
--   n            its number of policies, then for each of them: algorithm (0 token
--                bucket, 1 shaper, 2 fixed window, 3 sliding window), time (interval or
--                period, whole microseconds), burst, max_delay (whole microseconds, the
--                shaper's; 0 otherwise)
--
-- Reply: the four integers of each policy's reply, policy after policy, change after
-- change.
local algorithms = { [0] = token_bucket, [1] = shaper, [2] = fixed_window,
  [3] = sliding_window }
local now = now_micros()
local channel = ARGV[1]

-- ARGV as numbers: the changes of a batch repeat the same few numbers, and converting a
-- string costs far more than looking it up.
local numbers = {}
local function number(i)
  local text = ARGV[i]
  local n = numbers[text]
  if not n then
    n = tonumber(text)
    numbers[text] = n
  end
  return n
end

-- What the batch has read (false: missing), and will write (false: delete) until when
-- (false: for ever), by key; the keys to write, in order; the keys whose TTL was looked at.
local values, writes, lives, written, checked = {}, {}, {}, {}, {}

local function read(key)
  local value = values[key]
  if value == nil then
    value = redis.call('GET', key)
    values[key] = value
  end
  return value
end

-- Stages `value` (false: none) until `lives_until` (nil: for ever), written at the end.
local function stage(key, value, lives_until)
  values[key] = value
  if writes[key] == nil then
    written[#written + 1] = key
  end
  writes[key], lives[key] = value, lives_until or false
end

-- A stored value as (until when it is blocked or 0, the state or false).
local function unwrap(value)
  if value and string.sub(value, 1, 1) == 'b' then
    local blocked, state = string.match(value, '^b(%d+);(.*)$')
    if state == '' then
      state = false
    end
    return tonumber(blocked), state
  end
  return 0, value
end

-- Stages `value` (a state, or false for none) that says something until `lives_until`
-- (nil: for ever), behind a block that holds until `blocked` (0: none).
local function write(key, value, lives_until, blocked)
  if blocked > now then
    if not value or (lives_until and lives_until < blocked) then
      lives_until = blocked
    end
    value = string.format('b%.0f;%s', blocked, value or '')
  end
  if value == false or (lives_until and lives_until <= now) then
    stage(key, false, nil)
  else
    stage(key, value, lives_until)
  end
end

-- A key found without a TTL (written by hand, or by another tool) gets one when a request
-- leaves it unchanged: it lives until `expires` (microseconds), or goes at once if that
-- has passed. `expires` is nil for a missing key, or one that is meant to stay.
local function heal_ttl(key, expires)
  if expires and writes[key] == nil and not checked[key] then
    checked[key] = true
    if redis.call('PTTL', key) == -1 then
      if expires > now then
        redis.call('PEXPIRE', key, px_until(expires, now))
      else
        redis.call('DEL', key)
        values[key] = false
      end
    end
  end
end

local replies = {}

local function reply_with(reply)
  local n = #replies
  replies[n + 1], replies[n + 2], replies[n + 3], replies[n + 4] =
    reply[1], reply[2], reply[3], reply[4]
end

-- A charge of `cost` under one policy, the common case: what `apply` below does for it,
-- without its tables.
local function charge_one(key, algorithm, time, burst, max_delay, cost)
  local blocked, state = unwrap(read(key))
  if blocked > now then
    local wait = blocked - now
    reply_with({ 4, 0, wait, wait })
    return
  end
  local reply, value, lives_until, expires =
    algorithm.decide(state, now, time, burst, cost, max_delay)
  if value then
    write(key, value, lives_until, 0)
  else
    heal_ttl(key, expires)
  end
  reply_with(reply)
end

-- One change of `count` policies, whose keys start at KEYS[first] and whose numbers start
-- at ARGV[arg].
local function apply(change, amount, count, first, arg)
  if change == 0 and count == 1 then
    return charge_one(KEYS[first], algorithms[number(arg)], number(arg + 1), number(arg + 2),
      number(arg + 3), amount)
  end
  local policies, passes, blocked_until = {}, true, 0
  for i = 1, count do
    local at = arg + 4 * (i - 1)
    local policy = {
      key = KEYS[first + i - 1],
      algorithm = algorithms[number(at)],
      time = number(at + 1),
      burst = number(at + 2),
      max_delay = number(at + 3),
    }
    policy.blocked, policy.state = unwrap(read(policy.key))
    if change == 1 then
      policy.blocked = 0
    elseif change == 4 then
      policy.blocked = math.max(policy.blocked, now + amount)
    end
    if policy.blocked <= now then
      policy.blocked = 0
    end
    blocked_until = math.max(blocked_until, policy.blocked)
    if change == 0 then
      policy.reply, policy.value, policy.lives_until, policy.expires =
        policy.algorithm.decide(policy.state, now, policy.time, policy.burst, amount,
          policy.max_delay)
      if policy.reply[1] == 1 or policy.reply[1] == 2 then
        passes = false
      end
    end
    policies[i] = policy
  end
  if blocked_until > 0 then
    passes = false
  end

  for _, policy in ipairs(policies) do
    local algorithm = policy.algorithm
    local function look(state)
      return algorithm.decide(state, now, policy.time, policy.burst, 0, policy.max_delay)
    end
    if change == 0 then
      if passes and policy.value then
        write(policy.key, policy.value, policy.lives_until, 0)
      else
        if not passes and (policy.reply[1] == 0 or policy.reply[1] == 3) then
          policy.reply = look(policy.state)
        end
        if policy.blocked == 0 then
          heal_ttl(policy.key, policy.expires)
        end
      end
    else
      local state = policy.state
      if change == 1 then
        state = false
        stage(policy.key, false, nil)
      else
        local value, lives_until = nil, nil
        if change == 2 then
          value, lives_until = algorithm.refund(state, now, policy.time, policy.burst, amount)
        elseif change == 3 then
          value, lives_until = algorithm.penalize(state, now, policy.time, policy.burst,
            amount)
        end
        if value ~= nil then
          state = value
        else
          -- Unchanged: it stops saying anything when the algorithm says it does.
          lives_until = select(4, look(state))
        end
        if value ~= nil or change == 4 then
          write(policy.key, state, lives_until, policy.blocked)
        end
      end
      policy.reply = look(state)
      if change == 1 or change == 2 then
        redis.call('PUBLISH', channel, policy.key)
      end
    end
    if blocked_until > 0 then
      local wait = blocked_until - now
      policy.reply = { 4, 0, wait, wait }
    end
    reply_with(policy.reply)
  end
end

local first, arg = 1, 2
while arg <= #ARGV do
  local change, amount, count = number(arg), number(arg + 1), number(arg + 2)
  apply(change, amount, count, first, arg + 3)
  first, arg = first + count, arg + 3 + 4 * count
end

for _, key in ipairs(written) do
  local value, lives_until = writes[key], lives[key]
  if value == false then
    redis.call('DEL', key)
  elseif lives_until then
    redis.call('SET', key, value, 'PX', px_until(lives_until, now))
  else
    redis.call('SET', key, value)
  end
end
return replies
