-- Take a place for one job in a tenant's submission window, if one is left.
--
-- KEYS[1]  the tenant's counter for this window (jt:tenant:{T}:submits:{window})
-- ARGV[1]  the counter's time to live in seconds (two windows)
-- ARGV[2]  the tenant's limit per window
--
-- Returns 1 when a place is taken, 0 when the window is full (and then nothing is
-- counted). Taking, not looking: parallel submissions cannot slip past the limit together.
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
if count > tonumber(ARGV[2]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1
