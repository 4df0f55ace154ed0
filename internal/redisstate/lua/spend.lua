-- spend: clients' shared spend, one hash per client name and budget period:
-- s picodollars spent, r resets, and h:<instance> what that instance's
-- requests in flight hold ("<picodollars> <deadline ms>").
-- KEYS[i] the hashes (one hash slot). ARGV[1] this instance, ARGV[2] how
-- long its holds count (ms), ARGV[3] the caller's deadline (ms, Redis's
-- clock; 0 none): past it the script changes nothing and fails (an
-- exchange that timed out is sent again with what was spent since: run
-- late, as after a stall, it would count twice); then per key, 6 values
-- from 3 + 6 * (i - 1) + 1:
--   op ('add' or 'set'), amount, floor, resets seen, held, expire-at ms.
-- Amounts stay decimal strings: Lua numbers are doubles, exact only up to
-- 2^53 picodollars ($9007); HINCRBY and HGET are exact up to 2^63. Holds
-- are summed as doubles: they are worst-case estimates.
-- add: a total that is missing, or lower than floor with the same resets
-- (a Redis restarted empty), is raised to floor; then amount is added.
-- set: an operator's reset; the total becomes amount, one more reset.
-- A total lives at least an hour past Redis's now, whatever the instance's
-- clock says of its period's end; a hold past its deadline is dropped.
-- Reply: flat {s1, r1, others1, s2, r2, others2, ...}, decimal strings.
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[3]) or 0
if deadline > 0 and nowms > deadline then return redis.error_reply('ERR deadline passed') end
local soonest = nowms + 3600000
local me = 'h:' .. ARGV[1]
local alive = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local a = 3 + 6 * (i - 1)
  local k, op, amt, floor, seen, held = KEYS[i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  if op == 'set' then
    redis.call('HSET', k, 's', amt)
    redis.call('HINCRBY', k, 'r', 1)
  else
    local cur = redis.call('HMGET', k, 's', 'r')
    if not cur[1] then
      if floor ~= '0' or amt ~= '0' or held ~= '0' then redis.call('HSET', k, 's', floor, 'r', seen) end
    elseif (cur[2] or '0') == seen and less(cur[1], floor) then
      redis.call('HSET', k, 's', floor)
    end
    if amt ~= '0' then redis.call('HINCRBY', k, 's', amt) end
  end
  if held ~= '0' then
    redis.call('HSET', k, me, held .. ' ' .. (nowms + alive))
  else
    redis.call('HDEL', k, me)
  end
  local others = 0
  local all = redis.call('HGETALL', k)
  for j = 1, #all, 2 do
    local f = all[j]
    if f ~= me and string.sub(f, 1, 2) == 'h:' then
      local sp = string.find(all[j + 1], ' ', 1, true)
      local dl = sp and tonumber(string.sub(all[j + 1], sp + 1))
      if dl == nil or dl < nowms then
        redis.call('HDEL', k, f)
      else
        others = others + (tonumber(string.sub(all[j + 1], 1, sp - 1)) or 0)
      end
    end
  end
  redis.call('PEXPIREAT', k, math.max(tonumber(ARGV[a + 6]), soonest))
  local now = redis.call('HMGET', k, 's', 'r')
  out[#out + 1] = now[1] or '0'
  out[#out + 1] = now[2] or '0'
  out[#out + 1] = string.format('%.0f', others)
end
return out
