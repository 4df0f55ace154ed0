-- enable: clear an organization's park and the cooldowns of its budgets.
-- KEYS[1] organization hash, KEYS[2..] budget hashes (one hash slot).
redis.call('HDEL', KEYS[1], 'pu', 'pr')
for i = 2, #KEYS do redis.call('HDEL', KEYS[i], 'cu', 'cr') end
return 1
