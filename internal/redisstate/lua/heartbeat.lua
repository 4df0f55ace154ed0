-- heartbeat: register this instance and read the pool-wide state.
-- KEYS[1] instances zset, KEYS[2] disabled hash, KEYS[3] org ids hash.
-- ARGV[1] instance id, ARGV[2] liveness ms.
-- Reply: {now_ms, alive, disabled (flat), org ids (flat)}
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], nowms + live, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', nowms)
redis.call('PEXPIRE', KEYS[1], live * 10)
return {nowms, redis.call('ZCARD', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3])}
