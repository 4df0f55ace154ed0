-- sync: learn limits and remaining counts from one response's headers.
-- Runs after prelude.lua (now_us, capacity, refill, keep), prepended at load.
-- KEYS[1] budget hash.
-- ARGV[1] observed ms (0: TIME), ARGV[2] expiry ms, ARGV[3] max limit,
-- then per bucket k (7 values from ARGV[4 + 7*(k-1)]):
--   configured cap, limit (-1), remaining (-1), mark ('' unknown), own, gran, raise (1/0)
-- then ARGV[25..27] ahead (the unanswered sums at the request's admission)
-- and ARGV[28..30] what the request held as unanswered, released here;
-- ARGV[31] the caller's deadline (ms, Redis's clock; 0 none): past it the
-- script changes nothing and fails (see late in prelude.lua).
-- Limits: the newest observation wins (mt1..3). Levels: an observation
-- older than the last one applied (s1..3) is ignored; otherwise the level
-- moves into [remaining - later - ahead, remaining - later + gran - 1],
-- where later is what was charged after the request was admitted and ahead
-- what requests admitted before it and unanswered then hold (one admitted
-- earlier may reach the upstream later: its remaining need not count them),
-- rising only when raise is allowed and later is known.
-- Reply: {moved1, moved2, moved3, l1, l2, l3, cap1, cap2, cap3}
local now = now_us()
if late(now, ARGV[31]) then return redis.error_reply('ERR deadline passed') end
local obs = tonumber(ARGV[1]) or 0
if obs <= 0 then obs = math.floor(now / 1000) end
local maxlim = tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'l1', 'l2', 'l3', 't', 'c1', 'c2', 'c3', 'm1', 'm2', 'm3', 'mt1', 'mt2', 'mt3', 's1', 's2', 's3', 'u1', 'u2', 'u3')
local last = tonumber(h[4])
local set = {'t', now}
local moved, lvs, caps = {0, 0, 0}, {'', '', ''}, {'', '', ''}
for k = 1, 3 do
  local a = 4 + 7 * (k - 1)
  local cfg = tonumber(ARGV[a]) or 0
  local lim = tonumber(ARGV[a + 1]) or -1
  local rem = tonumber(ARGV[a + 2]) or -1
  local mark = tonumber(ARGV[a + 3])
  local own = tonumber(ARGV[a + 4]) or 0
  local gran = tonumber(ARGV[a + 5]) or 1
  local raise = ARGV[a + 6] == '1'
  local ahead = tonumber(ARGV[24 + k]) or 0
  local held = tonumber(ARGV[27 + k]) or 0
  if held > 0 then
    table.insert(set, 'u' .. k)
    table.insert(set, math.max(0, (tonumber(h[16 + k]) or 0) - held))
  end
  local learned = tonumber(h[7 + k])
  if lim > 0 and obs >= (tonumber(h[10 + k]) or 0) then
    learned = math.min(lim, maxlim)
    table.insert(set, 'm' .. k)
    table.insert(set, learned)
    table.insert(set, 'mt' .. k)
    table.insert(set, obs)
  end
  local c = capacity(cfg, learned)
  local l = tonumber(h[k])
  if c > 0 then
    l = math.min(refill(l, last, now, c), c)
    if rem >= 0 and obs >= (tonumber(h[13 + k]) or 0) then
      local later = 0
      if mark ~= nil then later = math.max(0, (tonumber(h[4 + k]) or 0) - mark - own) end
      local hi = rem - later + gran - 1
      local lo = rem - later - ahead
      if l < lo then
        if raise and mark ~= nil then l = math.min(lo, c); moved[k] = 1 end
      elseif l > hi then
        l = math.max(hi, -c); moved[k] = 1
      end
      table.insert(set, 's' .. k)
      table.insert(set, obs)
    end
    table.insert(set, 'l' .. k)
    table.insert(set, l)
    lvs[k] = tostring(l)
    caps[k] = tostring(c)
  end
end
redis.call('HSET', KEYS[1], unpack(set))
keep(KEYS[1], tonumber(ARGV[2]))
return {moved[1], moved[2], moved[3], lvs[1], lvs[2], lvs[3], caps[1], caps[2], caps[3]}
