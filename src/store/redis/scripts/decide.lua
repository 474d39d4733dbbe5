-- One decision under one or more policies of one key: every policy is checked, and only
-- if all let the request through is it charged under each. A request one policy refuses
-- is reported under the others as they stand, uncharged.
--
-- KEYS[i]        the state of policy i (all keys share one hash tag, so one Cluster slot)
-- ARGV[1]        cost
-- ARGV[4i-2..4i+1]  policy i: algorithm (0 token bucket, 1 shaper, 2 fixed window,
--                3 sliding window), time (interval or period, whole microseconds), burst,
--                max_delay (whole microseconds, the shaper's; 0 otherwise)
--
-- Reply: the four integers of each policy's reply, policy after policy.
local algorithms = { [0] = token_bucket, [1] = shaper, [2] = fixed_window,
  [3] = sliding_window }
local cost = tonumber(ARGV[1])
local now = now_micros()

local policies, passes = {}, true
for i, key in ipairs(KEYS) do
  local policy = {
    decide = algorithms[tonumber(ARGV[4 * i - 2])],
    time = tonumber(ARGV[4 * i - 1]),
    burst = tonumber(ARGV[4 * i]),
    max_delay = tonumber(ARGV[4 * i + 1]),
    state = redis.call('GET', key),
  }
  policy.reply, policy.value, policy.lives_until, policy.expires =
    policy.decide(policy.state, now, policy.time, policy.burst, cost, policy.max_delay)
  if policy.reply[1] == 1 or policy.reply[1] == 2 then
    passes = false
  end
  policies[i] = policy
end

local replies = {}
for i, key in ipairs(KEYS) do
  local policy = policies[i]
  if passes and policy.value then
    if policy.lives_until then
      redis.call('SET', key, policy.value, 'PX', px_until(policy.lives_until, now))
    else
      redis.call('SET', key, policy.value)
    end
  else
    if not passes and (policy.reply[1] == 0 or policy.reply[1] == 3) then
      policy.reply = policy.decide(policy.state, now, policy.time, policy.burst, 0,
        policy.max_delay)
    end
    heal_ttl(key, policy.expires, now)
  end
  for _, n in ipairs(policy.reply) do
    replies[#replies + 1] = n
  end
end
return replies
