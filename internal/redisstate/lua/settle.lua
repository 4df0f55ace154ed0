-- settle: signed corrections to one budget's buckets.
-- Runs after prelude.lua (now_us, capacity, refill, keep), prepended at load.
-- KEYS[1] budget hash. ARGV[1..3] configured caps (0: learned),
-- ARGV[4..6] deltas (positive charges, negative refunds), ARGV[7] expiry ms,
-- ARGV[8..10] unanswered sums to release (a request that ends with no
-- headers synced), ARGV[11] the caller's deadline (ms, Redis's clock; 0
-- none): past it the script changes nothing and fails (see late).
-- A bucket the store does not hold counts as full (an expired bucket is
-- full: the expiry is longer than a refill from the debt bound).
-- Reply: {l1, l2, l3} ('' unknown).
local now = now_us()
if late(now, ARGV[11]) then return redis.error_reply('ERR deadline passed') end
local h = redis.call('HMGET', KEYS[1], 'l1', 'l2', 'l3', 't', 'c1', 'c2', 'c3', 'm1', 'm2', 'm3', 'u1', 'u2', 'u3')
local last = tonumber(h[4])
local set = {'t', now}
local out = {'', '', ''}
for k = 1, 3 do
  local c = capacity(ARGV[k], h[7 + k])
  local d = tonumber(ARGV[3 + k]) or 0
  local l = tonumber(h[k])
  if c > 0 then
    l = math.max(math.min(refill(l, last, now, c) - d, c), -c)
    table.insert(set, 'l' .. k)
    table.insert(set, l)
    out[k] = tostring(l)
  end
  if d > 0 then
    table.insert(set, 'c' .. k)
    table.insert(set, (tonumber(h[4 + k]) or 0) + d)
  end
  local rel = tonumber(ARGV[7 + k]) or 0
  if rel > 0 then
    table.insert(set, 'u' .. k)
    table.insert(set, math.max(0, (tonumber(h[10 + k]) or 0) - rel))
  end
end
redis.call('HSET', KEYS[1], unpack(set))
keep(KEYS[1], tonumber(ARGV[7]))
return out
