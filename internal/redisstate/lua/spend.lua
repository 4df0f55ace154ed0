-- spend: clients' shared spend, one hash per client name and budget period:
-- s picodollars spent, r resets. KEYS[i] the hashes (one hash slot).
-- ARGV per key, 5 values from 5 * (i - 1) + 1:
--   op ('add' or 'set'), amount, floor, resets seen, expire-at ms.
-- Amounts stay decimal strings: Lua numbers are doubles, exact only up to
-- 2^53 picodollars ($9007); HINCRBY and HGET are exact up to 2^63.
-- add: a total that is missing, or lower than floor with the same resets
-- (a Redis restarted empty), is raised to floor; then amount is added.
-- set: an operator's reset; the total becomes amount, one more reset.
-- A total lives at least an hour past Redis's now, whatever the instance's
-- clock says of its period's end.
-- Reply: flat {s1, r1, s2, r2, ...}, decimal strings.
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local t = redis.call('TIME')
local soonest = (tonumber(t[1]) + 3600) * 1000
local out = {}
for i = 1, #KEYS do
  local a = 5 * (i - 1)
  local k, op, amt, floor, seen = KEYS[i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  if op == 'set' then
    redis.call('HSET', k, 's', amt)
    redis.call('HINCRBY', k, 'r', 1)
  else
    local cur = redis.call('HMGET', k, 's', 'r')
    if not cur[1] then
      if floor ~= '0' or amt ~= '0' then redis.call('HSET', k, 's', floor, 'r', seen) end
    elseif (cur[2] or '0') == seen and less(cur[1], floor) then
      redis.call('HSET', k, 's', floor)
    end
    if amt ~= '0' then redis.call('HINCRBY', k, 's', amt) end
  end
  redis.call('PEXPIREAT', k, math.max(tonumber(ARGV[a + 5]), soonest))
  local now = redis.call('HMGET', k, 's', 'r')
  out[#out + 1] = now[1] or '0'
  out[#out + 1] = now[2] or '0'
end
return out
