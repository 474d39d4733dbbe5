-- One change to one key under one or more policies. A charge checks every policy, and
-- only if all let the request through is it charged under each; a request one policy
-- refuses is reported under the others as they stand, uncharged. The other changes apply
-- to every policy and report the state after them, as a look would. A key blocked under
-- any of the policies is denied under all until its block ends.
--
-- KEYS[i]        the state of policy i (all keys share one hash tag, so one Cluster slot);
--                a blocked state is written 'b<until>;<state>' (until: microseconds of
--                Redis time)
-- ARGV[1]        the change: 0 charge, 1 reset, 2 refund, 3 penalize, 4 block
-- ARGV[2]        its amount: the cost, the units refunded or charged, or the block's
--                length in whole microseconds (0 for a reset)
-- ARGV[3]        the channel on which a reset or a refund publishes the name of each key
--                it changed, so that app servers drop what their deny caches know of it
-- ARGV[4i..4i+3] policy i: algorithm (0 token bucket, 1 shaper, 2 fixed window,
--                3 sliding window), time (interval or period, whole microseconds), burst,
--                max_delay (whole microseconds, the shaper's; 0 otherwise)
--
-- Reply: the four integers of each policy's reply, policy after policy.
local algorithms = { [0] = token_bucket, [1] = shaper, [2] = fixed_window,
  [3] = sliding_window }
local change, amount = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_micros()

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

-- Writes `value` (a state, or false for none) that says something until `lives_until`
-- (nil: for ever), behind a block that holds until `blocked` (0: none).
local function write(key, value, lives_until, blocked)
  if blocked > now then
    if not value or (lives_until and lives_until < blocked) then
      lives_until = blocked
    end
    value = string.format('b%.0f;%s', blocked, value or '')
  end
  if value == false or (lives_until and lives_until <= now) then
    redis.call('DEL', key)
  elseif lives_until then
    redis.call('SET', key, value, 'PX', px_until(lives_until, now))
  else
    redis.call('SET', key, value)
  end
end

local policies, passes, blocked_until = {}, true, 0
for i, key in ipairs(KEYS) do
  local algorithm = algorithms[tonumber(ARGV[4 * i])]
  local policy = {
    key = key,
    algorithm = algorithm,
    time = tonumber(ARGV[4 * i + 1]),
    burst = tonumber(ARGV[4 * i + 2]),
    max_delay = tonumber(ARGV[4 * i + 3]),
  }
  policy.blocked, policy.state = unwrap(redis.call('GET', key))
  function policy.decide(state, cost)
    return algorithm.decide(state, now, policy.time, policy.burst, cost, policy.max_delay)
  end
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
      policy.decide(policy.state, amount)
    if policy.reply[1] == 1 or policy.reply[1] == 2 then
      passes = false
    end
  end
  policies[i] = policy
end
if blocked_until > 0 then
  passes = false
end

local replies = {}
for _, policy in ipairs(policies) do
  if change == 0 then
    if passes and policy.value then
      write(policy.key, policy.value, policy.lives_until, 0)
    else
      if not passes and (policy.reply[1] == 0 or policy.reply[1] == 3) then
        policy.reply = policy.decide(policy.state, 0)
      end
      if policy.blocked == 0 then
        heal_ttl(policy.key, policy.expires, now)
      end
    end
  else
    local state = policy.state
    if change == 1 then
      state = false
      redis.call('DEL', policy.key)
    else
      local value, lives_until = nil, nil
      if change == 2 then
        value, lives_until = policy.algorithm.refund(state, now, policy.time, policy.burst,
          amount)
      elseif change == 3 then
        value, lives_until = policy.algorithm.penalize(state, now, policy.time, policy.burst,
          amount)
      end
      if value ~= nil then
        state = value
      else
        -- Unchanged: it stops saying anything when the algorithm says it does.
        lives_until = select(4, policy.decide(state, 0))
      end
      if value ~= nil or change == 4 then
        write(policy.key, state, lives_until, policy.blocked)
      end
    end
    policy.reply = policy.decide(state, 0)
    if change == 1 or change == 2 then
      redis.call('PUBLISH', ARGV[3], policy.key)
    end
  end
  if blocked_until > 0 then
    local wait = blocked_until - now
    policy.reply = { 4, 0, wait, wait }
  end
  for _, n in ipairs(policy.reply) do
    replies[#replies + 1] = n
  end
end
return replies
