-- Renew or release a job lease, only if this worker still holds it; or take back a lapsed one.
--
-- KEYS[1]  the lease key (jt:job:{ID}:lease), its value the holder's token
-- KEYS[2]  the job's state hash (jt:job:{ID})
-- ARGV[1]  'renew', 'release', or 'finish': release only if the job is finished (or gone)
-- ARGV[2]  the holder's token
-- ARGV[3]  new time to live in ms (renew only)
-- ARGV[4]  the attempt the holder runs, or '' before it has loaded the job (renew only)
-- ARGV[5]  the incarnation it runs, or '' for a job without one (renew only)
--
-- Returns 1 when done, 0 when the lease is held by someone else or has expired for good.
--
-- A lease lapses without its holder dying when Redis is away longer than its TTL (down,
-- frozen, read-only, full): the holder could not renew it. Renewing takes it back when
-- nobody else has taken it and the job is still where the holder left it: its attempt,
-- its incarnation, not finished. Whoever took it over instead wins, and the holder stops.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[2] then
  if ARGV[1] == 'renew' then
    return redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  -- Sent behind the outcome's append in one round trip: an append that did not land
  -- (an error reply, a script Redis lost) leaves the lease held.
  if ARGV[1] == 'finish' then
    local state = redis.call('HGET', KEYS[2], 'state')
    if state == 'running' or state == 'pending' then
      return 0
    end
  end
  return redis.call('DEL', KEYS[1])
end
if holder or ARGV[1] ~= 'renew' or ARGV[4] == '' then
  return 0
end
local job = redis.call('HMGET', KEYS[2], 'state', 'attempt', 'incarnation')
if (job[1] == 'running' or job[1] == 'pending') and job[2] == ARGV[4] and (job[3] or '') == ARGV[5] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
