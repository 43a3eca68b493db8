-- Take one of a tenant's SSE connection slots, if one is free.
--
-- KEYS[1]  the tenant's slot set (jt:tenant:{T}:sse), member -> expiry in epoch ms
-- ARGV[1]  now, epoch ms
-- ARGV[2]  the slot's time to live in ms (its API process renews it while the connection is open)
-- ARGV[3]  the tenant's limit
-- ARGV[4]  the slot's member name
--
-- Returns 1 when the slot is taken, 0 when the tenant is at its limit. Slots whose
-- process died (a killed API process) expire by themselves, within one TTL.
local now, ttl, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
