-- settle: signed corrections to one budget's buckets.
-- KEYS[1] budget hash. ARGV[1..3] configured caps (0: learned),
-- ARGV[4..6] deltas (positive charges, negative refunds), ARGV[7] expiry ms.
-- A bucket the store does not hold counts as full (an expired bucket is
-- full: the expiry is longer than a refill from the debt bound).
-- Reply: {l1, l2, l3} ('' unknown).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local h = redis.call('HMGET', KEYS[1], 'l1', 'l2', 'l3', 't', 'c1', 'c2', 'c3', 'm1', 'm2', 'm3')
local last = tonumber(h[4])
local set = {'t', now}
local out = {'', '', ''}
for k = 1, 3 do
  local c = tonumber(ARGV[k]) or 0
  if c <= 0 then c = tonumber(h[7 + k]) or 0 end
  local d = tonumber(ARGV[3 + k]) or 0
  local l = tonumber(h[k])
  if c > 0 then
    if l == nil or last == nil then
      l = c
    elseif now > last then
      l = l + (now - last) * c / 60000000
    end
    l = math.max(math.min(l - d, c), -c)
    table.insert(set, 'l' .. k)
    table.insert(set, l)
    out[k] = tostring(l)
  end
  if d > 0 then
    table.insert(set, 'c' .. k)
    table.insert(set, (tonumber(h[4 + k]) or 0) + d)
  end
end
redis.call('HSET', KEYS[1], unpack(set))
local ttl = tonumber(ARGV[7])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return out
