-- heartbeat: register this instance and read the pool-wide state.
-- KEYS[1] instances zset, KEYS[2] disabled hash, KEYS[3] org ids hash,
-- KEYS[4] the pool's epoch (a string that lives as long as Redis keeps the
-- pool's state: missing means Redis lost it, e.g. restarted empty).
-- ARGV[1] instance id, ARGV[2] liveness ms, ARGV[3] a new epoch, set when
-- none is there.
-- Reply: {now_ms, alive, disabled (flat), org ids (flat), epoch, 1 if this
-- call set the epoch else 0}
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], nowms + live, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', nowms)
redis.call('PEXPIRE', KEYS[1], live * 10)
local epoch = redis.call('GET', KEYS[4])
local created = 0
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[4], epoch)
  created = 1
end
return {nowms, redis.call('ZCARD', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]), epoch, created}
