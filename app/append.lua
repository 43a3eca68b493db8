-- Append one event to a job and fold it into the job's state hash, atomically.
--
-- KEYS[1]  job state hash        (jt:job:{ID})
-- KEYS[2]  job event stream      (jt:job:{ID}:events)
-- KEYS[3]  job dedupe hash       (jt:job:{ID}:dedupe)  idempotency key -> event id
-- KEYS[4]  wake shard channel    (jt:job:{ID}:events:wake)  told the new id (app/wakes.py); not a key
-- ARGV[1]  event type
-- ARGV[2]  attempt, or '' for the job's current attempt
-- ARGV[3]  data, a JSON object (stored as is)
-- ARGV[4]  idempotency key, or '' for none
-- ARGV[5]  retention in seconds, applied to every key at a terminal event
-- ARGV[6]  `at` in epoch ms, or '' for the server's clock
-- ARGV[7]  incarnation the writer works for (the id of the job's `submitted`), or '' for any
-- ARGV[8..] field, value pairs derived from the data (app/reducer.py: fields_for)
--
-- Returns {'ok', id, state, cancel_requested, at, attempt, kind, tenant}  (the last four feed app/activity.py)
--      or {'duplicate', id, state, cancel_requested}  (key seen: nothing written)
--      or {'refused', state}                          (state forbids it: nothing written)
--      or {'stale', state, current attempt}            (ARGV[2] is not the attempt the rule
--                                                      wants: nothing written)
--      or {'replaced', state}                         (ARGV[7] is not the job's incarnation: the
--                                                      job was deleted and submitted again; nothing written)
--
-- RULES, TERMINAL and ABSENT are rendered above this line from app/events.py.

local job, stream, dedupe, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local etype, attempt, data, key, retention, at = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local incarnation = ARGV[7]

local rule = RULES[etype]
if not rule then
  return redis.error_reply('unknown event type ' .. etype)
end

-- Before the dedupe: the new incarnation's keys say nothing about the old one's writes.
-- A hash without an incarnation (written before it was recorded) is not fenced.
if incarnation ~= '' then
  local own = redis.call('HMGET', job, 'incarnation', 'state')
  if own[1] and own[1] ~= incarnation then
    return {'replaced', own[2] or ABSENT}
  end
end

if key ~= '' then
  local previous = redis.call('HGET', dedupe, key)
  if previous then
    local current = redis.call('HMGET', job, 'state', 'cancel_requested')
    return {'duplicate', previous, current[1] or ABSENT, current[2] or '0'}
  end
end

local state = redis.call('HGET', job, 'state') or ABSENT
if not rule.allowed[state] then
  return {'refused', state}
end

local current = redis.call('HGET', job, 'attempt') or '0'
if attempt == '' then
  attempt = current
elseif rule.attempt then
  local expected = tonumber(current) + (rule.attempt == 'next' and 1 or 0)
  if tonumber(attempt) ~= expected then
    return {'stale', state, current}
  end
end
if at == '' then
  local now = redis.call('TIME')
  at = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
end

local entry = {'type', etype, 'at', at, 'v', '1', 'attempt', attempt, 'data', data}
if key ~= '' then
  table.insert(entry, 'key')
  table.insert(entry, key)
end
local id = redis.call('XADD', stream, '*', unpack(entry))

local fields = {'updated_at', at, 'last_event_id', id, 'attempt', attempt}
if rule.next then
  state = rule.next
  table.insert(fields, 'state')
  table.insert(fields, state)
end
if rule.stamp then
  table.insert(fields, rule.stamp)
  table.insert(fields, at)
end
if rule.opens then
  table.insert(fields, 'incarnation')
  table.insert(fields, id)
end
for i = 8, #ARGV do
  table.insert(fields, ARGV[i])
end
redis.call('HSET', job, unpack(fields))
redis.call('HINCRBY', job, 'event_count', 1)
if key ~= '' then
  redis.call('HSET', dedupe, key, id)
end

if TERMINAL[state] then
  for _, k in ipairs({job, stream, dedupe}) do
    redis.call('EXPIRE', k, retention)
  end
end
-- After the writes: a hub that reads on this wake finds the entry. The channel is in
-- the job's slot, so on a Cluster the publish stays on this node (and its replicas).
redis.call('SPUBLISH', wake, id)
local after = redis.call('HMGET', job, 'cancel_requested', 'kind', 'tenant')
return {'ok', id, state, after[1] or '0', at, attempt, after[2] or '', after[3] or ''}
