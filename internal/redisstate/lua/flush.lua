-- flush: one budget's queued operations, in the order the instance made
-- them, in one script (one round trip and one script per budget per flush,
-- not one or more per request). The hash is read once and written once.
-- Runs after prelude.lua (now_us, capacity, refill, keep), prepended at load.
-- KEYS[1] budget hash, KEYS[2] organization hash (same hash slot).
-- ARGV[1..3] configured caps (0: learned limit m1..m3), ARGV[4] expiry ms,
-- ARGV[5] max limit, ARGV[6] the caller's deadline (ms, Redis's clock; 0
-- none): past it the script changes nothing and fails (see late in
-- prelude.lua); then the operations, each its kind and its fields:
--   'r' admit1..3 charge1..3: a reservation. Refused while the organization
--       is parked or the budget cools down; else admitted only if every
--       bucket (refilled continuously by Redis TIME, capacity = limit,
--       limit/60 a second) holds its admit amount (one larger than the
--       bucket when the bucket is full), then charged charge, debt bounded
--       at one capacity below zero. Refused: the wait until refill admits.
--   'c' charge1..3: a charge the instance admitted without a round trip
--       (far from the limit, its share of the level; flush.go): charged
--       whatever the level, debt bounded at one capacity.
--   'd' delta1..3 release1..3: a signed correction, the level clamped to
--       [-capacity, capacity].
--   's' observed ms, per bucket (limit, remaining, mark, own, gran, raise),
--       ahead1..3, release1..3: one response's headers. Limits: the newest
--       observation wins (mt1..3), at most the max limit. Levels: an
--       observation older than the last applied (s1..3) is ignored; else
--       the level moves into [remaining - later - ahead, remaining - later
--       + gran - 1], later = what was charged after the request (c now -
--       mark - own), rising only when raise is allowed and the mark known.
--       A mark or ahead of '#i' is what the i-th operation of this batch
--       (the request's own charge) was charged after; '' unknown.
-- Unanswered sums u1..3: 'r' and 'c' add their request and input charge
-- (and report the sums before it: the request's ahead, what requests
-- admitted earlier on any instance may still add at the upstream); 's' and
-- 'd' release what the request held.
-- Reply: {l1, l2, l3, cap1, cap2, cap3, cooldown until ms, park until ms,
-- then per operation: r: outcome (0 admitted, 1 wait, 2 cooling, 3
-- parked), wait_us|until_ms, reason, marks1..3, ahead1..3; c: marks1..3,
-- ahead1..3; d: nothing; s: moved1..3}; '' for a level or cap unknown.
local now = now_us()
if late(now, ARGV[6]) then return redis.error_reply('ERR deadline passed') end
local nowms = math.floor(now / 1000)
local maxlim = tonumber(ARGV[5])
local h = redis.call('HMGET', KEYS[1], 'l1', 'l2', 'l3', 't', 'c1', 'c2', 'c3', 'm1', 'm2', 'm3',
  'mt1', 'mt2', 'mt3', 's1', 's2', 's3', 'u1', 'u2', 'u3', 'cu', 'cr')
local park = redis.call('HMGET', KEYS[2], 'pu', 'pr')
local pu = tonumber(park[1]) or 0
local cu = tonumber(h[20]) or 0
local last = tonumber(h[4])
local raw, lv, ch, learned, lt, st, un = {}, {}, {}, {}, {}, {}, {}
local learnedSet, syncedSet = {}, {}
for k = 1, 3 do
  raw[k] = tonumber(h[k])
  ch[k] = tonumber(h[4 + k]) or 0
  learned[k] = h[7 + k]
  lt[k] = tonumber(h[10 + k]) or 0
  st[k] = tonumber(h[13 + k]) or 0
  un[k] = tonumber(h[16 + k]) or 0
end
local function cap(k) return capacity(ARGV[k], learned[k]) end
-- level is bucket k's level now, refilled once (now is one instant for the
-- whole batch) with the capacity known when first needed.
local function level(k, c)
  if lv[k] == nil then lv[k] = math.min(refill(raw[k], last, now, c), c) end
  return lv[k]
end
local function s(x) if x == nil then return '' end return tostring(x) end
local out = {}
local results = {} -- op index -> {marks, ahead}
local function charge(amounts)
  local marks, ahead = {ch[1], ch[2], ch[3]}, {un[1], un[2], un[3]}
  for k = 1, 3 do
    local c = cap(k)
    if c > 0 then lv[k] = math.max(level(k, c) - amounts[k], -c) end
    if amounts[k] > 0 then ch[k] = ch[k] + amounts[k] end
  end
  un[1] = un[1] + amounts[1]
  un[2] = un[2] + amounts[2]
  return marks, ahead
end
local i, n = 7, 0
while i <= #ARGV do
  local kind = ARGV[i]
  n = n + 1
  if kind == 'r' or kind == 'c' then
    local admit, amounts = {}, {}
    local w = (kind == 'r') and 3 or 0
    for k = 1, 3 do
      admit[k] = tonumber(ARGV[i + k]) or 0
      amounts[k] = tonumber(ARGV[i + w + k]) or 0
    end
    i = i + 1 + w + 3
    if kind == 'r' and pu > nowms then
      table.insert(out, 3); table.insert(out, tostring(pu)); table.insert(out, park[2] or '')
      for _ = 1, 6 do table.insert(out, '') end
    elseif kind == 'r' and cu > nowms then
      table.insert(out, 2); table.insert(out, tostring(cu)); table.insert(out, h[21] or '')
      for _ = 1, 6 do table.insert(out, '') end
    else
      local wait = 0
      if kind == 'r' then
        for k = 1, 3 do
          local c = cap(k)
          if c > 0 then
            local l, need = level(k, c), math.min(admit[k], c)
            if l < need then wait = math.max(wait, (need - l) / c * 60000000) end
          end
        end
      end
      if wait > 0 then
        table.insert(out, 1); table.insert(out, tostring(math.ceil(wait))); table.insert(out, '')
        for _ = 1, 6 do table.insert(out, '') end
      else
        local marks, ahead = charge(amounts)
        results[n] = {marks, ahead}
        if kind == 'r' then
          table.insert(out, 0); table.insert(out, '0'); table.insert(out, '')
        end
        for k = 1, 3 do table.insert(out, s(marks[k])) end
        for k = 1, 3 do table.insert(out, s(ahead[k])) end
      end
    end
  elseif kind == 'd' then
    for k = 1, 3 do
      local c = cap(k)
      local d = tonumber(ARGV[i + k]) or 0
      if c > 0 then lv[k] = math.max(math.min(level(k, c) - d, c), -c) end
      if d > 0 then ch[k] = ch[k] + d end
      local rel = tonumber(ARGV[i + 3 + k]) or 0
      if rel > 0 then un[k] = math.max(0, un[k] - rel) end
    end
    i = i + 7
  else -- 's'
    local obs = tonumber(ARGV[i + 1]) or 0
    if obs <= 0 then obs = nowms end
    local function ref(v, field)
      if string.sub(v, 1, 1) == '#' then
        local r = results[tonumber(string.sub(v, 2))]
        if r == nil then return nil end
        return r[field]
      end
      return nil
    end
    for k = 1, 3 do
      local a = i + 2 + 6 * (k - 1)
      local lim = tonumber(ARGV[a]) or -1
      local rem = tonumber(ARGV[a + 1]) or -1
      local mark = tonumber(ARGV[a + 2])
      if mark == nil then
        local m = ref(ARGV[a + 2], 1)
        if m then mark = m[k] end
      end
      local own = tonumber(ARGV[a + 3]) or 0
      local gran = tonumber(ARGV[a + 4]) or 1
      local raise = ARGV[a + 5] == '1'
      local av = ARGV[i + 19 + k]
      local ahead = tonumber(av)
      if ahead == nil then
        local r = ref(av, 2)
        ahead = r and r[k] or 0
      end
      local held = tonumber(ARGV[i + 22 + k]) or 0
      if held > 0 then un[k] = math.max(0, un[k] - held) end
      if lim > 0 and obs >= lt[k] then
        learned[k] = math.min(lim, maxlim)
        lt[k] = obs
        learnedSet[k] = true
      end
      local c = cap(k)
      local moved = 0
      if c > 0 then
        local l = level(k, c)
        l = math.min(l, c)
        if rem >= 0 and obs >= st[k] then
          local later = 0
          if mark ~= nil then later = math.max(0, ch[k] - mark - own) end
          local hi = rem - later + gran - 1
          local lo = rem - later - ahead
          if l < lo then
            if raise and mark ~= nil then l = math.min(lo, c); moved = 1 end
          elseif l > hi then
            l = math.max(hi, -c); moved = 1
          end
          st[k] = obs
          syncedSet[k] = true
        end
        lv[k] = l
      end
      table.insert(out, moved)
    end
    i = i + 26
  end
end
local set = {'t', now}
local head = {}
for k = 1, 3 do
  local c = cap(k)
  if c > 0 then
    local l = level(k, c)
    table.insert(set, 'l' .. k); table.insert(set, l)
    head[k] = s(l)
    head[3 + k] = s(c)
  else
    head[k] = ''
    head[3 + k] = ''
  end
  table.insert(set, 'c' .. k); table.insert(set, ch[k])
  table.insert(set, 'u' .. k); table.insert(set, un[k])
  if learnedSet[k] then
    table.insert(set, 'm' .. k); table.insert(set, learned[k])
    table.insert(set, 'mt' .. k); table.insert(set, lt[k])
  end
  if syncedSet[k] then table.insert(set, 's' .. k); table.insert(set, st[k]) end
end
redis.call('HSET', KEYS[1], unpack(set))
keep(KEYS[1], tonumber(ARGV[4]))
head[7] = tostring(cu)
head[8] = tostring(pu)
for j = 1, #out do head[8 + j] = out[j] end
return head
