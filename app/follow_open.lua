-- The opening read of a job's SSE follow: the job's state for one viewer (visible.lua, run
-- first as the function `visible`, app/opening.py), what its stream lost, and the stream's
-- first page after the client's offset, in one round trip on the job's slot.
--
-- KEYS[1]  job state hash   (jt:job:{ID})
-- KEYS[2]  job event stream (jt:job:{ID}:events)
-- ARGV[1]  the viewer's tenant, or '' for none (visible.lua's)
-- ARGV[2]  '1' when the viewer sees every job, else '0' (visible.lua's)
-- ARGV[3]  the client's offset: the entries after it are read
-- ARGV[4]  at most this many entries
--
-- Returns {} when visible.lua does (a missing job and another tenant's alike, after the
-- same work); else {visible.lua's reply, {max-deleted-entry-id, last-generated-id,
-- first-entry} of XINFO STREAM (each false when the stream has none), the XRANGE's
-- entries}. Read in one script, the page and the state are of one moment: the page ends
-- at the state's last event unless it is full.

local state = visible()
if #state == 0 then
  return {}
end
local stream = KEYS[2]
local info = {false, false, false}
if redis.call('EXISTS', stream) == 1 then
  local raw = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #raw, 2 do
    local name = raw[i]
    if name == 'max-deleted-entry-id' then
      info[1] = raw[i + 1]
    elseif name == 'last-generated-id' then
      info[2] = raw[i + 1]
    elseif name == 'first-entry' then
      info[3] = raw[i + 1]
    end
  end
end
return {state, info, redis.call('XRANGE', stream, '(' .. ARGV[3], '+', 'COUNT', ARGV[4])}
