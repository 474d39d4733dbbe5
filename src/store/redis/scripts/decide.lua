-- A batch of changes, each to one key under one or more policies, applied in order at one
-- instant. A charge checks every policy of its key, and only if all let the request
-- through is it charged under each; a request one policy refuses is reported under the
-- others as they stand, uncharged. The other changes apply to every policy and report the
-- state after them, as a look would. A key blocked under any of its policies is denied
-- under all until its block ends. Each key is read at most once and written at most once
-- per call, however many changes of the batch it takes.
--
-- keys           the state of each policy of each change, change after change (a call's
--                keys share one hash tag, so one Cluster slot); a blocked state is written
--                'b<until>;<state>' (until: microseconds of Redis time)
-- args[1]        the channel on which a reset or a refund publishes the name of each key
--                it changed, so that app servers drop what their deny caches know of it
-- args[2]        the number of policy sets the changes use; then, per set, its number of
--                policies, then for each of them: algorithm (0 token bucket, 1 shaper,
--                2 fixed window, 3 sliding window), time (interval or period, whole
--                microseconds), burst, max_delay (whole microseconds, the shaper's; 0
--                otherwise)
-- then, per change, two numbers:
--   5 * its set (counted from 0) + the change: 0 charge, 1 reset, 2 refund, 3 penalize,
--                4 block
--   its amount   the cost, the units refunded or charged, or the block's length in whole
--                microseconds (0 for a reset)
--
-- Reply: the four integers of each policy's reply, policy after policy, change after
-- change.
local algorithms = { [0] = token_bucket, [1] = shaper, [2] = fixed_window,
  [3] = sliding_window }

-- The call under way (set by `decide`): its keys and arguments, its instant, and its channel.
local keys, args, now, channel
-- Its arguments as numbers: the changes of a batch repeat the same few numbers, and
-- converting a string costs far more than looking it up.
local numbers
-- What it has read (false: missing), and will write (false: delete) until when (false:
-- for ever), by key; the keys whose TTL was looked at.
local values, writes, lives, checked
-- Its reply so far, and the reply's length.
local replies, replied

local function number(i)
  local text = args[i]
  local n = numbers[text]
  if not n then
    n = tonumber(text)
    numbers[text] = n
  end
  return n
end

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
  writes[key], lives[key] = value, lives_until or false
end

-- A stored value as (until when it is blocked or 0, the state or false).
local function unwrap(value)
  if value and string.byte(value) == 98 then -- 'b'
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
    value = string.format('b%d;%s', blocked, value or '')
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

local function reply(outcome, remaining, reset, time)
  local n = replied
  replies[n + 1], replies[n + 2], replies[n + 3], replies[n + 4] =
    outcome, remaining, reset, time
  replied = n + 4
end

-- What `policy` says of `state` (a look: nothing charged).
local function look(policy, state)
  return policy.algorithm.decide(state, now, policy.time, policy.burst, 0, policy.max_delay)
end

-- A charge of `cost` under one policy, the common case: what `apply` below does for it,
-- without its tables.
local function charge_one(key, policy, cost)
  local blocked, state = unwrap(read(key))
  if blocked > now then
    local wait = blocked - now
    return reply(4, 0, wait, wait)
  end
  local outcome, remaining, reset, time, value, lives_until, expires =
    policy.algorithm.decide(state, now, policy.time, policy.burst, cost, policy.max_delay)
  if value then
    write(key, value, lives_until, 0)
  else
    heal_ttl(key, expires)
  end
  reply(outcome, remaining, reset, time)
end

-- One change under the policies of `set`, whose keys start at keys[first].
local function apply(change, amount, set, first)
  local count = #set
  if change == 0 and count == 1 then
    return charge_one(keys[first], set[1], amount)
  end
  local found, passes, blocked_until = {}, true, 0
  for i = 1, count do
    local policy, at = set[i], { key = keys[first + i - 1] }
    at.blocked, at.state = unwrap(read(at.key))
    if change == 1 then
      at.blocked = 0
    elseif change == 4 then
      at.blocked = math.max(at.blocked, now + amount)
    end
    if at.blocked <= now then
      at.blocked = 0
    end
    blocked_until = math.max(blocked_until, at.blocked)
    if change == 0 then
      at.outcome, at.remaining, at.reset, at.time, at.value, at.lives_until, at.expires =
        policy.algorithm.decide(at.state, now, policy.time, policy.burst, amount,
          policy.max_delay)
      if at.outcome == 1 or at.outcome == 2 then
        passes = false
      end
    end
    found[i] = at
  end
  if blocked_until > 0 then
    passes = false
  end

  for i = 1, count do
    local policy, at = set[i], found[i]
    local algorithm = policy.algorithm
    if change == 0 then
      if passes and at.value then
        write(at.key, at.value, at.lives_until, 0)
      else
        if not passes and (at.outcome == 0 or at.outcome == 3) then
          at.outcome, at.remaining, at.reset, at.time = look(policy, at.state)
        end
        if at.blocked == 0 then
          heal_ttl(at.key, at.expires)
        end
      end
    else
      local state = at.state
      if change == 1 then
        state = false
        stage(at.key, false, nil)
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
          lives_until = select(7, look(policy, state))
        end
        if value ~= nil or change == 4 then
          write(at.key, state, lives_until, at.blocked)
        end
      end
      at.outcome, at.remaining, at.reset, at.time = look(policy, state)
      if change == 1 or change == 2 then
        redis.call('PUBLISH', channel, at.key)
      end
    end
    if blocked_until > 0 then
      local wait = blocked_until - now
      reply(4, 0, wait, wait)
    else
      reply(at.outcome, at.remaining, at.reset, at.time)
    end
  end
end

-- The policy sets of the call, and the index of its first change in `args`.
local function read_sets()
  local sets, arg = {}, 3
  for s = 1, number(2) do
    local set = {}
    for i = 1, number(arg) do
      local at = arg + 4 * i - 3
      set[i] = { algorithm = algorithms[number(at)], time = number(at + 1),
        burst = number(at + 2), max_delay = number(at + 3) }
    end
    sets[s] = set
    arg = arg + 1 + 4 * #set
  end
  return sets, arg
end

-- Runs a call (see the top of this file) and returns its reply.
local function decide(call_keys, call_args)
  keys, args, now, channel = call_keys, call_args, now_micros(), call_args[1]
  numbers, values, writes, lives, checked = {}, {}, {}, {}, {}
  replies, replied = {}, 0
  local sets, arg = read_sets()
  local first = 1
  while arg <= #args do
    local head = number(arg)
    local set = sets[math.floor(head / 5) + 1]
    apply(head % 5, number(arg + 1), set, first)
    first, arg = first + #set, arg + 2
  end
  for key, value in pairs(writes) do
    local lives_until = lives[key]
    if value == false then
      redis.call('DEL', key)
    elseif lives_until then
      redis.call('SET', key, value, 'PX', px_until(lives_until, now))
    else
      redis.call('SET', key, value)
    end
  end
  return replies
end
