-- reserve: admit a request against one organization x class budget,
-- Runs after prelude.lua (now_us, capacity, refill, keep), prepended at load.
-- atomically across its three buckets (requests, input, output tokens).
-- KEYS[1] budget hash, KEYS[2] organization hash (same hash slot).
-- ARGV[1..3] configured caps (0: learned limit m1..m3 of the hash)
-- ARGV[4..6] what each bucket must admit (the estimate plus its margin),
-- ARGV[7..9] what is charged when all admit (the estimate),
-- ARGV[10] expiry in ms after last use. A bucket not held is full.
-- ARGV[11..13] what the request holds as unanswered until its response's
-- headers (sync.lua) or its settle release it (u1..u3: what requests
-- admitted and not yet answered hold, on any instance).
-- ARGV[14] the caller's deadline (ms, Redis's clock; 0 none): past it the
-- script changes nothing and fails (see late in prelude.lua).
-- Reply: {outcome, wait_us|until_ms, reason, l1, l2, l3, c1, c2, c3, cap1, cap2, cap3,
-- u1, u2, u3} with u the unanswered sums before this request (its ahead).
-- outcome 0 admitted, 1 wait, 2 cooling, 3 parked; levels '' when unknown.
local now = now_us()
if late(now, ARGV[14]) then return redis.error_reply('ERR deadline passed') end
local nowms = math.floor(now / 1000)
local park = redis.call('HMGET', KEYS[2], 'pu', 'pr')
local pu = tonumber(park[1])
if pu and pu > nowms then
  return {3, tostring(pu), park[2] or '', '', '', '', '', '', '', '', '', '', '', '', ''}
end
local h = redis.call('HMGET', KEYS[1], 'l1', 'l2', 'l3', 't', 'c1', 'c2', 'c3', 'm1', 'm2', 'm3', 'cu', 'cr', 'u1', 'u2', 'u3')
local cu = tonumber(h[11])
if cu and cu > nowms then
  return {2, tostring(cu), h[12] or '', '', '', '', '', '', '', '', '', '', '', '', ''}
end
local last = tonumber(h[4])
local lv, cap, ch, need, charge = {}, {}, {}, {}, {}
local wait = 0
for k = 1, 3 do
  local c = capacity(ARGV[k], h[7 + k])
  cap[k] = c
  ch[k] = tonumber(h[4 + k]) or 0
  need[k] = tonumber(ARGV[3 + k]) or 0
  charge[k] = tonumber(ARGV[6 + k]) or 0
  local l = tonumber(h[k])
  if c > 0 then
    l = math.min(refill(l, last, now, c), c)
    local n = math.min(need[k], c)
    if l < n then
      local w = (n - l) / c * 60000000
      if w > wait then wait = w end
    end
  end
  lv[k] = l
end
local function s(x) if x == nil then return '' end return tostring(x) end
if wait > 0 then
  return {1, tostring(math.ceil(wait)), '', s(lv[1]), s(lv[2]), s(lv[3]), s(ch[1]), s(ch[2]), s(ch[3]), s(cap[1]), s(cap[2]), s(cap[3]), '', '', ''}
end
local set = {'t', now}
local marks = {ch[1], ch[2], ch[3]}
local ahead = {0, 0, 0}
for k = 1, 3 do
  if cap[k] > 0 then
    -- debt is bounded: at most one capacity below zero
    lv[k] = math.max(lv[k] - charge[k], -cap[k])
    table.insert(set, 'l' .. k)
    table.insert(set, lv[k])
  end
  if charge[k] > 0 then
    ch[k] = ch[k] + charge[k]
    table.insert(set, 'c' .. k)
    table.insert(set, ch[k])
  end
  ahead[k] = tonumber(h[12 + k]) or 0
  local held = tonumber(ARGV[10 + k]) or 0
  if held > 0 then
    table.insert(set, 'u' .. k)
    table.insert(set, ahead[k] + held)
  end
end
redis.call('HSET', KEYS[1], unpack(set))
keep(KEYS[1], tonumber(ARGV[10]))
return {0, '0', '', s(lv[1]), s(lv[2]), s(lv[3]), s(marks[1]), s(marks[2]), s(marks[3]), s(cap[1]), s(cap[2]), s(cap[3]),
  s(ahead[1]), s(ahead[2]), s(ahead[3])}
