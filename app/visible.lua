-- Read a job's state hash for one viewer: all of it if the viewer may see the job, else nothing.
--
-- KEYS[1]  job state hash  (jt:job:{ID})
-- ARGV[1]  the viewer's tenant, or '' for none
-- ARGV[2]  '1' when the viewer sees every job (an admin, or open mode), else '0'
--
-- Returns PEXPIRETIME of the hash, then HGETALL of it as a flat list; or {} both for a
-- missing job and for another tenant's: the same empty reply after the same work (one
-- HGET), so that neither the answer nor its timing tells the two apart. The rule is app/auth.py's Principal.sees.

local job, viewer, sees_all = KEYS[1], ARGV[1], ARGV[2]

if sees_all ~= '1' then
  local owner = redis.call('HGET', job, 'tenant') or ''
  if owner ~= viewer then
    return {}
  end
end
local fields = redis.call('HGETALL', job)
if #fields == 0 then
  return {}
end
-- When the job's keys expire (epoch ms; -1 while they have no TTL): JobState.expires_at.
table.insert(fields, 1, redis.call('PEXPIRETIME', job))
return fields
