-- prelude: the budget arithmetic (Redis's clock, capacity, refill, the
-- caller's deadline, expiry). scripts.go prepends it to flush.lua at load,
-- so the script sent to Redis still stands alone (EVALSHA of one body).

-- now_us is Redis's clock in microseconds: the one clock every instance's
-- refill is timed by.
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- capacity is a bucket's limit: the configured one, or the learned one
-- when none is configured (0: no limit known).
local function capacity(configured, learned)
  local c = tonumber(configured) or 0
  if c <= 0 then c = tonumber(learned) or 0 end
  return c
end

-- refill is a bucket's level at now, refilled continuously at c per minute
-- since last. A bucket not held (no level or no time) is full. Not clamped
-- to c: each script clamps as its rule says.
local function refill(l, last, now, c)
  if l == nil or last == nil then return c end
  if now > last then return l + (now - last) * c / 60000000 end
  return l
end

-- late reports whether the caller's deadline (ms on Redis's clock, 0 none)
-- has passed at now (us). A caller that gave up on a call served its request
-- from its local share, and its rejoin charges what it spent meanwhile: a
-- script that waited in a connection while Redis was stalled (SIGSTOP, a
-- long fork) and runs when it continues must change nothing, or the same
-- spending is counted twice.
local function late(now, deadline)
  local d = tonumber(deadline) or 0
  return d > 0 and now > d * 1000
end

-- keep makes key live at least ttl ms more.
local function keep(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end

