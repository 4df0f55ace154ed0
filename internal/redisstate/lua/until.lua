-- until: a cooldown (budget hash: cu/cr) or park (organization hash: pu/pr)
-- until a time; a later one wins. KEYS[1] the hash.
-- ARGV[1] field prefix ('c' or 'p'), ARGV[2] until ms, ARGV[3] reason,
-- ARGV[4] longest allowed from now in ms, ARGV[5] expiry ms after it ends.
-- Reply: the until in force (ms).
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = ARGV[1]
local u = math.min(tonumber(ARGV[2]), nowms + tonumber(ARGV[4]))
local cur = tonumber(redis.call('HGET', KEYS[1], f .. 'u')) or 0
if u > cur then
  redis.call('HSET', KEYS[1], f .. 'u', u, f .. 'r', ARGV[3])
  cur = u
  local keep = u - nowms + tonumber(ARGV[5])
  if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
end
return tostring(cur)
