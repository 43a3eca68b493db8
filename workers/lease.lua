-- Renew or release a job lease, only if this worker still holds it.
--
-- KEYS[1]  the lease key (jt:job:{ID}:lease), its value the holder's token
-- ARGV[1]  'renew' or 'release'
-- ARGV[2]  the holder's token
-- ARGV[3]  new time to live in ms (renew only)
--
-- Returns 1 when done, 0 when the lease is held by someone else or has expired.
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return 0
end
if ARGV[1] == 'renew' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('DEL', KEYS[1])
