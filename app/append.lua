-- Append one event to a job and fold it into the job's state hash, atomically.
--
-- KEYS[1]  job state hash        (jt:job:{ID})
-- KEYS[2]  job event stream      (jt:job:{ID}:events)
-- KEYS[3]  job dedupe hash       (jt:job:{ID}:dedupe)  idempotency key -> event id, for the keys
--                                the state hash does not keep (below)
-- KEYS[4]  wake shard channel    (jt:job:{ID}:events:wake)  told the new id (app/wakes.py); not a key
-- KEYS[5]  enqueue claim         (jt:job:{ID}:enqueued)  app/service.py's, deleted: of no use once the
--                                job ended. Given with terminal events only (the others pay for a key).
-- ARGV[1]  event type
-- ARGV[2]  attempt, or '' for the job's current attempt
-- ARGV[3]  data, as app/events.py packs it (stored as is)
-- ARGV[4]  idempotency key, or '' for none
-- ARGV[5]  retention in seconds, applied to every key at a terminal event
-- ARGV[6]  `at` in epoch ms, or '' for the server's clock: the new entry id's milliseconds
-- ARGV[7]  incarnation the writer works for (the id of the job's `submitted`), or '' for any
-- ARGV[8]  dedupe slot, or '' to remember the key under itself. A writer whose writes go
--          out one at a time (a job context) names one slot for all of them: a retry can
--          only be of its latest write, so the slot holds that one alone ("key id"), and a
--          job remembers a few keys however many reports it took.
-- ARGV[9..] field, value pairs derived from the data (app/reducer.py: fields_for)
--
-- Returns 'ok <id> <state> <cancel_requested> <attempt> <tenant> <kind>'  (one string; `at` is the
--      id's ms unless ARGV[6] gave it; attempt, tenant and kind feed app/activity.py)
--      or {'duplicate', id, state, cancel_requested}  (key seen: nothing written)
--      or {'refused', state}                          (state forbids it: nothing written)
--      or {'stale', state, current attempt}            (ARGV[2] is not the attempt the rule
--                                                      wants: nothing written)
--      or {'replaced', state}                         (ARGV[7] is not the job's incarnation: the
--                                                      job was deleted and submitted again; nothing written)
--
-- The entry is {e = attempt * 100 + type code (then ' ' .. ARGV[6] if given), d = data,
-- k = key or ''}: always the same fields in the same order (app/events.py: ENTRY_FIELDS), so
-- a stream node stores their names once.
--
-- Where a key is remembered: a job's keys are mostly its own writers' (the submission's,
-- `started:<n>`, `retrying:<n>`, the outcome's, a job context's), and those are fields of the
-- state hash: '@' .. slot -> 'key id' for a job context's; '@' -> the submission's key (its id
-- is the incarnation); '@' .. key -> id for another event that changes the job's state (a few
-- per attempt; a migration re-sends them all, not only the latest). The HMGET below reads the
-- field: no command of its own, and no dedupe hash (a key, an object and an expiry entry) for
-- most jobs. A terminal event drops them but the submission's and its own: once the job has
-- ended every earlier write is refused or stale (a job context's writes, retries included, end
-- before the outcome: workers/context.py, close), and a listpack's every lookup walks its
-- fields, for the job's whole retention in bytes. Other keys (an API client's
-- keyed reports, any number per job) go in the dedupe hash, so that the hash GET /jobs/{id}
-- reads does not grow with them. No field of the state starts with '@' (JobState.from_hash
-- picks the fields it knows; app/jobstate.py: state_fields drops these for the fold's equality).
-- A job written before (its keys in the dedupe hash): a slot is one writer process's and one
-- attempt's, and a process keeps its script, so no retry reaches this script for an old slot;
-- an event that changes the job, repeated once written, is refused or stale (submitted, started,
-- retrying and the outcomes all are), and only then is the dedupe hash asked.
--
-- RULE_OF, IS_TERMINAL and ABSENT are rendered above this line from app/events.py (RULES).

local job, stream, dedupe, wake, claim = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local etype, attempt, data, key, retention, at = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local incarnation, slot = ARGV[7], ARGV[8]
local COMPACT_MAX_ENTRIES = 1000

local allowed, next_state, stamp, attempt_rule, opens, code, digits = RULE_OF(etype)
if not allowed then
  return redis.error_reply('unknown event type ' .. etype)
end

-- The state hash's field that remembers the key (header), or nil: the key goes in the dedupe hash.
local remembered
if key ~= '' then
  if slot ~= '' then
    remembered = '@' .. slot
  elseif opens then
    remembered = '@'
  elseif next_state then
    remembered = '@' .. key
  end
end

-- Every field the script reads, in one command: the script's cost is its command count.
local own
if remembered then
  own = redis.call('HMGET', job, 'incarnation', 'state', 'cancel_requested', 'attempt', 'event_count', 'kind',
                   'tenant', 'last_event_id', remembered)
else
  own = redis.call('HMGET', job, 'incarnation', 'state', 'cancel_requested', 'attempt', 'event_count', 'kind',
                   'tenant', 'last_event_id')
end
local state = own[2] or ABSENT
local cancel_requested = own[3] or '0'

-- Before the dedupe: the new incarnation's keys say nothing about the old one's writes.
-- A hash without an incarnation (written before it was recorded) is not fenced.
if incarnation ~= '' and own[1] and own[1] ~= incarnation then
  return {'replaced', state}
end

if remembered then
  local previous = own[9]
  if slot ~= '' then
    if previous and string.sub(previous, 1, #key + 1) == key .. ' ' then
      return {'duplicate', string.sub(previous, #key + 2), state, cancel_requested}
    end
  elseif opens then
    if previous == key then  -- the submission's id is the incarnation
      return {'duplicate', own[1], state, cancel_requested}
    end
  elseif previous then
    return {'duplicate', previous, state, cancel_requested}
  end
elseif key ~= '' then
  local previous = redis.call('HGET', dedupe, key)
  if previous then
    return {'duplicate', previous, state, cancel_requested}
  end
end

-- Attempts are integers as Python and tostring spell them, so strings compare as numbers do
-- and the entry's `e` is a concatenation: a number's tostring costs more than a command's key.
local current = own[4] or '0'
local refusal
if not string.find(allowed, ' ' .. state .. ' ', 1, true) then
  refusal = {'refused', state}
elseif attempt == '' then
  attempt = current
elseif attempt_rule == 'next' then
  if tonumber(attempt) ~= tonumber(current) + 1 then
    refusal = {'stale', state, current}
  end
elseif attempt_rule and attempt ~= current then
  refusal = {'stale', state, current}
end
if refusal then
  -- It may be the retry of a write an older script made, which kept every key in the dedupe
  -- hash (header): asked only here, where nothing is written anyway. Inline, not a function:
  -- a closure (and its upvalues) would be built on every call.
  if remembered and slot == '' and state ~= ABSENT then
    local previous = redis.call('HGET', dedupe, key)
    if previous then
      return {'duplicate', previous, state, cancel_requested}
    end
  end
  return refusal
end
local meta = attempt == '0' and tostring(code) or attempt .. digits
if at ~= '' then
  meta = meta .. ' ' .. at
end
-- The stream's entry before this one, for the wake: the hash's last event, when the stream
-- holds exactly as many entries as the hash counted events. Every writer of a job's stream
-- (this script, append_many.lua, start.lua through it) moves the three together, and the
-- terminal RESTORE and repair (EventLog.rebuild) keep them equal; an entry written some other
-- way changes the length, and the stream is read (XREVRANGE, below) as it always was.
local before = own[8]
if before and tonumber(own[5]) ~= redis.call('XLEN', stream) then
  before = nil
end
local id = redis.call('XADD', stream, '*', 'e', meta, 'd', data, 'k', key)
if at == '' then
  at = string.sub(id, 1, string.find(id, '-', 1, true) - 1)
end

local count = tostring((tonumber(own[5]) or 0) + 1)
local kind, tenant = own[6] or '', own[7] or ''
for i = 9, #ARGV, 2 do
  -- What the reply reports is the hash after this write, which these fields may set.
  local field = ARGV[i]
  if field == 'cancel_requested' then
    cancel_requested = ARGV[i + 1]
  elseif field == 'kind' then
    kind = ARGV[i + 1]
  elseif field == 'tenant' then
    tenant = ARGV[i + 1]
  end
end
-- Most events (every progress report) change no bookkeeping beyond these three, and
-- leave the attempt as it is: one HSET of them and the data's fields, no table built.
if attempt == own[4] and not (next_state or stamp or opens) then
  if remembered then
    redis.call('HSET', job, remembered, slot ~= '' and key .. ' ' .. id or id, 'updated_at', at, 'last_event_id',
               id, 'event_count', count, unpack(ARGV, 9))
  else
    redis.call('HSET', job, 'updated_at', at, 'last_event_id', id, 'event_count', count, unpack(ARGV, 9))
  end
else
  local fields = {'updated_at', at, 'last_event_id', id, 'event_count', count}
  if attempt ~= own[4] then
    fields[#fields + 1] = 'attempt'
    fields[#fields + 1] = attempt
  end
  if next_state then
    state = next_state
    fields[#fields + 1] = 'state'
    fields[#fields + 1] = state
  end
  if stamp then
    fields[#fields + 1] = stamp
    fields[#fields + 1] = at
  end
  if opens then
    fields[#fields + 1] = 'incarnation'
    fields[#fields + 1] = id
  end
  for i = 9, #ARGV do
    fields[#fields + 1] = ARGV[i]
  end
  if remembered then  -- last: a new field goes at the listpack's end, behind those read more often
    fields[#fields + 1] = remembered
    fields[#fields + 1] = slot ~= '' and key .. ' ' .. id or opens and key or id
  end
  redis.call('HSET', job, unpack(fields))
end
if key ~= '' and not remembered then
  redis.call('HSET', dedupe, key, id)
end

if IS_TERMINAL(state) then
  -- Every key's field but the submission's and this event's own (header).
  local ended = {}
  for _, name in ipairs(redis.call('HKEYS', job)) do
    if string.byte(name) == 64 and name ~= '@' and name ~= remembered then  -- 64: '@'
      ended[#ended + 1] = name
    end
  end
  if #ended > 0 then
    redis.call('HDEL', job, unpack(ended))
  end
  redis.call('EXPIRE', job, retention)
  redis.call('EXPIRE', dedupe, retention)
  if claim then
    redis.call('DEL', claim)
  end
  -- A finished stream rarely grows again, yet its last node keeps the 4 KB Redis gives a
  -- new node ahead: written back from its own dump, each node takes only what it holds.
  -- Not for a long stream, whose dump would hold up the server, for a gain it hardly sees.
  if tonumber(retention) > 0 and redis.call('XLEN', stream) <= COMPACT_MAX_ENTRIES then
    redis.call('RESTORE', stream, retention .. '000', redis.call('DUMP', stream), 'REPLACE')
  else
    redis.call('EXPIRE', stream, retention)
  end
end
-- After the writes: a hub that reads on this wake finds the entry. The channel is in
-- the job's slot, so on a Cluster the publish stays on this node (and its replicas).
-- '~<id> <the stream's entry before it, '' if none> <bytes of d> <e>\n<d><k>' (app/hub.py:
-- parse_wake): a hub whose cursor is that previous entry delivers this one without reading.
-- Concatenated, not cjson: encoding the entry cost more than the publish. The `~` makes an
-- older hub, which knows JSON and bare ids only, read the stream instead.
if not before then
  before = redis.call('XREVRANGE', stream, '(' .. id, '-', 'COUNT', 1)[1]
  before = before and before[1] or ''
end
redis.call('SPUBLISH', wake, '~' .. id .. ' ' .. before .. ' ' .. #data .. ' ' .. meta .. '\n' .. data .. key)
-- One string, not a list: a reply's elements are what a script pays most for after its
-- commands. The kind comes last, so that nothing it holds can shift the others.
return 'ok ' .. id .. ' ' .. state .. ' ' .. cancel_requested .. ' ' .. attempt .. ' ' .. tenant .. ' ' .. kind
