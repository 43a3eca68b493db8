-- Take a job's lease and, if the job waits for its next attempt, start it: append.lua's
-- `started` in the same call. Runs as a prelude of append.lua (rendered in front of its
-- body, app/eventlog.py), which then appends the event exactly as it appends any other.
--
-- KEYS[1..4]  as append.lua; KEYS[5] the job's lease key (jt:job:{ID}:lease), taken off
--             before append.lua reads KEYS (its own KEYS[5], the claim, is a terminal event's)
-- ARGV        as append.lua's for `started` (its attempt, key and the data's attempt are
--             set here), then two more, taken off the end before append.lua reads ARGV:
--             the lease holder's token, the lease's time to live in ms
--
-- Returns {'held'} when another holder has the lease (nothing written); {'taken', state}
-- when the lease is taken but the job is not pending, or is asked to cancel: the caller
-- decides from the job's state what the delivery does; else append.lua's reply.
local lease = table.remove(KEYS)
local ttl = table.remove(ARGV)
local token = table.remove(ARGV)
if not redis.call('SET', lease, token, 'NX', 'PX', ttl) then
  return {'held'}
end
local waiting = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'cancel_requested')
if waiting[1] ~= 'pending' or waiting[3] == '1' then
  return {'taken', waiting[1] or ABSENT}
end
local next_attempt = (tonumber(waiting[2]) or 0) + 1
-- The data as app/events.py packs StartedData: its values in order (worker, attempt), unbracketed.
local started = cjson.decode('[' .. ARGV[3] .. ']')
started[2] = next_attempt
local packed = cjson.encode(started)
ARGV[2], ARGV[3], ARGV[4] = tostring(next_attempt), string.sub(packed, 2, -2), 'started:' .. next_attempt
