-- Append several reports (events that change no state: progress, phase, log) of one job's
-- attempt, in order, as append.lua would append them one by one; atomically.
--
-- KEYS     as append.lua: state hash, event stream, dedupe hash (not used), wake shard channel
-- ARGV[1]  attempt (the job's current one; required)
-- ARGV[2]  incarnation the writer works for, or '' for any
-- ARGV[3]  dedupe slot (append.lua's ARGV[8]): the state hash's field '@' .. slot holds "key id"
--          of the writer's latest write (append.lua's header says why there)
-- ARGV[4]  how many events follow
-- ARGV[5..] per event: type, data (as app/events.py packs it), idempotency key, field count n, then n field, value pairs
--          (app/reducer.py: fields_for)
--
-- The batch lands whole or not at all, so its last key tells a retry: the slot naming it
-- means this very batch was written (its reply lost), and nothing is written again.
--
-- Returns {'ok', last id, state, cancel_requested, kind, tenant}
--      or {'duplicate', last id, state, cancel_requested}
--      or {'refused', state} / {'stale', state, current attempt} / {'replaced', state}, as append.lua
-- and an error reply for an event type that changes the job's state (append.lua's alone).
--
-- RULE_OF, IS_TERMINAL and ABSENT are rendered above this line from app/events.py (RULES).

local job, stream, dedupe, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- The most a carried wake holds (its data and keys, and about 48 bytes per entry for the
-- rest): a pub/sub message every hub parses whole, and buffers until it reads it.
local WAKE_MAX_BYTES = 16384
local attempt, incarnation, slot, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local remembered = '@' .. slot
local own = redis.call('HMGET', job, 'incarnation', 'state', 'cancel_requested', 'attempt', 'event_count', 'kind',
                       'tenant', remembered)
local state = own[2] or ABSENT
local cancel_requested = own[3] or '0'
if incarnation ~= '' and own[1] and own[1] ~= incarnation then
  return {'replaced', state}
end

-- Where each event's arguments start, and its rule: all checked before anything is written.
local starts, last_key = {}, ''
local i = 5
local codes = {}
for n = 1, count do
  local allowed, next_state, stamp, _, opens, code = RULE_OF(ARGV[i])
  if not allowed then
    return redis.error_reply('unknown event type ' .. ARGV[i])
  end
  if next_state or stamp or opens then
    return redis.error_reply('event type ' .. ARGV[i] .. ' changes the job: append it alone')
  end
  starts[n], codes[n], last_key = i, code, ARGV[i + 2]
  i = i + 4 + 2 * tonumber(ARGV[i + 3])
end

local previous = own[8]
if previous and last_key ~= '' and string.sub(previous, 1, #last_key + 1) == last_key .. ' ' then
  return {'duplicate', string.sub(previous, #last_key + 2), state, cancel_requested}
end

local current = own[4] or '0'
for n = 1, count do
  local allowed, _, _, attempt_rule = RULE_OF(ARGV[starts[n]])
  if not string.find(allowed, ' ' .. state .. ' ', 1, true) then
    return {'refused', state}
  end
  if attempt_rule and tonumber(attempt) ~= tonumber(current) then
    return {'stale', state, current}
  end
end

-- The wake carries the batch when it is small (the hub then delivers it without a read,
-- app/hub.py): {p = the stream's entry before the first new one, e = {{id, fields}, ...}}.
-- Over WAKE_MAX_BYTES it is the last id alone, and the hub reads.
local size = 0
for n = 1, count do
  size = size + #ARGV[starts[n] + 1] + #ARGV[starts[n] + 2] + 48
end
local carried, before = size <= WAKE_MAX_BYTES, nil
if carried then
  -- Before the XADDs: the stream's own last entry, not the hash's last_event_id (an entry
  -- that something else wrote must be read, never skipped).
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  before = last and last[1] or ''
end

-- Entries as append.lua writes them (e, d, k; `at` is the id's milliseconds).
local fields, id, written = {}, nil, {}
for n = 1, count do
  local s = starts[n]
  local e = tostring(tonumber(attempt) * 100 + codes[n])
  id = redis.call('XADD', stream, '*', 'e', e, 'd', ARGV[s + 1], 'k', ARGV[s + 2])
  if carried then
    written[n] = {id, {'e', e, 'd', ARGV[s + 1], 'k', ARGV[s + 2]}}
  end
  -- Later events' fields overwrite earlier ones', as one HSET per event would.
  for f = s + 4, s + 3 + 2 * tonumber(ARGV[s + 3]), 2 do
    fields[ARGV[f]] = ARGV[f + 1]
  end
end

local at = string.sub(id, 1, string.find(id, '-', 1, true) - 1)
local hash = {'updated_at', at, 'last_event_id', id, 'attempt', attempt,
              'event_count', tostring((tonumber(own[5]) or 0) + count)}
for field, value in pairs(fields) do
  table.insert(hash, field)
  table.insert(hash, value)
end
if last_key ~= '' then
  table.insert(hash, remembered)
  table.insert(hash, last_key .. ' ' .. id)
end
redis.call('HSET', job, unpack(hash))
-- One wake for the batch. Carried, a hub whose cursor is `p` delivers it as is; the id
-- alone, the hub reads the stream after its cursor, the whole batch in one XRANGE.
if carried then
  redis.call('SPUBLISH', wake, cjson.encode({p = before, e = written}))
else
  redis.call('SPUBLISH', wake, id)
end
return {'ok', id, state, cancel_requested, own[6] or '', own[7] or ''}
