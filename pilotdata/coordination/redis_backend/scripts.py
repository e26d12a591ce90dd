"""The Lua scripts of the Redis backend: every state change, claim and requeue, atomic on the server.

Each script is :data:`PRELUDE` plus its body; the backend registers them once (``EVALSHA``). ``K`` is
a script's declared key array, ``ARGV`` its arguments, documented above each body. Sets of states
travel as ``"\\nA\\nB\\n"`` strings (:func:`lua_set`: a plain substring search, no parsing in Lua).
No state, kind or queue name is spelled here: the backend passes them from :mod:`pilotdata.states`
and :mod:`pilotdata.coordination.keys`.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ADOPT_UNBOUND",
    "CLAIM",
    "CREATE",
    "DEQUEUE",
    "EVENTS_AFTER",
    "GET_MANY",
    "PRELUDE",
    "REQUEUE_LOST",
    "STATES",
    "TRANSITION_MANY",
    "UNCLAIM",
    "UPDATE_DATA",
    "lua_set",
]


def lua_set(values: Iterable[str]) -> str:
    """A set of states as the scripts' ``"\\nA\\nB\\n"`` string."""
    return "\n" + "".join(f"{v}\n" for v in sorted(values))


# The Lua prelude shared by every script. ``K`` is the script's declared key array; ``ARGV`` its
# arguments. Sets of states travel as "\nA\nB\n" strings (plain substring search, no parsing).
PRELUDE = r"""
local K = KEYS
local function member(set, value)
  return string.find(set, '\n' .. value .. '\n', 1, true) ~= nil
end
-- One checked transition of entity hash `ekey`; appends its event to `stream`.
-- `owner`: an in-progress list the id must be in ('' or nil: no check). `unbound`: the prefix of the
-- binders' unbound sets, `initial` the state CUs are created in: a CU leaving `initial` leaves its
-- binder's unbound set ('' or nil: no such bookkeeping).
-- Returns {1, previous, attempt} when applied, {0, current or false, attempt} when not.
local function transition(ekey, stream, kind, id, to, expected, pilot, detail, now, allowed, retry, data, release,
                          owner, unbound, initial)
  local cur = redis.call('HMGET', ekey, 'state', 'attempt', 'binder')
  local state = cur[1]
  if not state then return {0, false, 0} end
  local attempt = tonumber(cur[2]) or 0
  if (expected ~= '' and state ~= expected) or not member(allowed, state) then
    return {0, state, attempt}
  end
  if owner and owner ~= '' and not redis.call('LPOS', owner, id) then
    return {0, state, attempt}
  end
  if member(retry, state) then attempt = attempt + 1 end
  local fields = {'state', to, 'attempt', attempt, 'updated', now, 't_' .. to, now, 'detail', detail}
  local event = {'entity', kind, 'id', id, 'from', state, 'to', to, 'time', now, 'attempt', attempt,
                 'detail', detail}
  if pilot ~= '' then
    fields[#fields + 1] = 'pilot'; fields[#fields + 1] = pilot
    event[#event + 1] = 'pilot'; event[#event + 1] = pilot
  end
  if data and data ~= '' then
    -- [[field, json value or false], ...]: set or delete data keys with the move
    for _, pair in ipairs(cjson.decode(data)) do
      if pair[2] then
        fields[#fields + 1] = pair[1]; fields[#fields + 1] = pair[2]
      else
        redis.call('HDEL', ekey, pair[1])
      end
    end
  end
  if cur[3] and unbound and unbound ~= '' and state == initial then
    redis.call('ZREM', unbound .. cur[3], id)
    redis.call('HDEL', ekey, 'binder')
  end
  redis.call('HSET', ekey, unpack(fields))
  redis.call('XADD', stream, '*', unpack(event))
  if release and release ~= '' then redis.call('LREM', release, 1, id) end
  return {1, state, attempt}
end
"""

# K: stream, entity 1..n. ARGV: kind, now, initial state, unbound prefix, queue-name set, ntargets, per
# target: name, allowed, retry; then per request: id, to, expected, pilot, detail, data pairs, in-progress
# list to release from, owner's in-progress list, queue key, queue's pilot ('' shared), front ('1').
# Queue pushes happen after every request was checked: backs in request order, fronts so that the
# first request ends up first. Returns {ok, previous, attempt} per request, flattened.
TRANSITION_MANY = r"""
local kind, now, initial, unbound, qnames, ntargets = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local rules, a = {}, 7
for _ = 1, ntargets do
  rules[ARGV[a]] = {ARGV[a + 1], ARGV[a + 2]}
  a = a + 3
end
local out, backs, fronts, order = {}, {}, {}, {}
for i = 2, #K do
  local id, to, queue = ARGV[a], ARGV[a + 1], ARGV[a + 8]
  local r = transition(K[i], K[1], kind, id, to, ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], now,
                       rules[to][1], rules[to][2], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], unbound, initial)
  out[#out + 1] = r[1]; out[#out + 1] = r[2]; out[#out + 1] = r[3]
  if r[1] == 1 and queue ~= '' then
    if not backs[queue] then
      backs[queue], fronts[queue] = {}, {}
      order[#order + 1] = queue
      if ARGV[a + 9] ~= '' then redis.call('SADD', qnames, ARGV[a + 9]) end
    end
    local list = ARGV[a + 10] == '1' and fronts[queue] or backs[queue]
    list[#list + 1] = id
  end
  a = a + 11
end
for _, queue in ipairs(order) do
  if #backs[queue] > 0 then redis.call('RPUSH', queue, unpack(backs[queue])) end
  local f = fronts[queue]
  for j = #f, 1, -1 do redis.call('LPUSH', queue, f[j]) end
end
return out
"""

# K: index, stream, entity 1..n. ARGV: kind, initial state, now, n, binder ('' none), its unbound set,
# the binder set, queue key ('' none), the queue's pilot ('' shared), the queue-name set, the state a
# queued entity moves to, that move's detail, then per entity: id, its creation event's detail, npairs, pairs.
# With a queue, each entity is created and moved on to that state at the back of the queue (in order),
# both events appended, as a create followed by a transition would. All or nothing: returns 0, or the
# 1-based position of the first entity whose id is taken.
CREATE = r"""
local kind, initial, now, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local binder, unbound, binders = ARGV[5], ARGV[6], ARGV[7]
local queue, qpilot, qnames, to, detail = ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local seen = {}
for i = 1, n do
  local key = K[i + 2]
  if seen[key] or redis.call('EXISTS', key) == 1 then return i end
  seen[key] = true
end
local a, base = 13, math.floor(tonumber(now) * 1000) * 1000
local queued = {}
for i = 1, n do
  local id, created, npairs = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local fields = {'state', initial, 'attempt', 0, 'created', now, 'updated', now, 't_' .. initial, now,
                  'detail', '{}'}
  if queue ~= '' then
    fields[2] = to; fields[12] = detail
    fields[#fields + 1] = 't_' .. to; fields[#fields + 1] = now
  end
  for _ = 1, npairs do
    fields[#fields + 1] = ARGV[a]; fields[#fields + 1] = ARGV[a + 1]
    a = a + 2
  end
  if binder ~= '' then
    fields[#fields + 1] = 'binder'; fields[#fields + 1] = binder
    redis.call('ZADD', unbound, base + i, id)
  end
  redis.call('HSET', K[i + 2], unpack(fields))
  redis.call('SADD', K[1], id)
  redis.call('XADD', K[2], '*', 'entity', kind, 'id', id, 'to', initial, 'time', now, 'attempt', 0,
             'detail', created)
  if queue ~= '' then queued[#queued + 1] = id end
end
-- the moves after all the creations, as a create_many and then a transition_many append them: a stream
-- node stores entries with its first entry's fields compactly, so alternating kinds of event cost more
for _, id in ipairs(queued) do
  redis.call('XADD', K[2], '*', 'entity', kind, 'id', id, 'from', initial, 'to', to, 'time', now,
             'attempt', 0, 'detail', detail)
end
if #queued > 0 then
  redis.call('RPUSH', queue, unpack(queued))
  if qpilot ~= '' then redis.call('SADD', qnames, qpilot) end
end
if binder ~= '' then redis.call('SADD', binders, binder) end
return 0
"""

# K: binder set, shared queue, stream. ARGV: unbound prefix, lease prefix, entity prefix, kind, initial
# state, pending state, sources of pending, detail prefix, detail suffix (the binder's name, JSON-quoted,
# goes between), now.
# Every binder whose lease key is gone: its still-New CUs move to Pending onto the back of the shared
# queue (creation order); its unbound set is deleted. Returns the adopted ids.
ADOPT_UNBOUND = r"""
local ubp, leasep, prefix, kind, initial = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local pending, to_pending, pre, post, now = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local adopted = {}
local binders = redis.call('SMEMBERS', K[1])
table.sort(binders)
for _, b in ipairs(binders) do
  if redis.call('EXISTS', leasep .. b) == 0 then
    local ub = ubp .. b
    local detail = pre .. cjson.encode(b) .. post
    for _, id in ipairs(redis.call('ZRANGE', ub, 0, -1)) do
      local r = transition(prefix .. id, K[3], kind, id, pending, initial, '', detail, now, to_pending, '', '',
                           '', '', ubp, initial)
      if r[1] == 1 then adopted[#adopted + 1] = id end
    end
    redis.call('DEL', ub)
    redis.call('SREM', K[1], b)
  end
end
if #adopted > 0 then redis.call('RPUSH', K[2], unpack(adopted)) end
return adopted
"""

# K: entity. ARGV: now, nset, field/value pairs, then fields to delete. Returns 0 if the entity is missing.
UPDATE_DATA = r"""
if redis.call('EXISTS', K[1]) == 0 then return 0 end
local nset = tonumber(ARGV[2])
local fields = {'updated', ARGV[1]}
for i = 3, 2 + 2 * nset do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', K[1], unpack(fields))
local gone = {}
for i = 3 + 2 * nset, #ARGV do gone[#gone + 1] = ARGV[i] end
if #gone > 0 then redis.call('HDEL', K[1], unpack(gone)) end
return 1
"""

# K: own queue, shared queue, in-progress list. ARGV: limit. Non-blocking claim, own queue first.
CLAIM = r"""
local out, limit = {}, tonumber(ARGV[1])
for q = 1, 2 do
  while #out < limit do
    local id = redis.call('LMOVE', K[q], K[3], 'LEFT', 'RIGHT')
    if not id then break end
    out[#out + 1] = id
  end
end
return out
"""

# K: in-progress list, target queue. ARGV: ids. Moves the ids that are claimed to the queue's front.
UNCLAIM = r"""
local moved = {}
for i = 1, #ARGV do
  if redis.call('LREM', K[1], 1, ARGV[i]) > 0 then moved[#moved + 1] = ARGV[i] end
end
for i = #moved, 1, -1 do redis.call('LPUSH', K[2], moved[i]) end
return moved
"""

# K: shared queue, queue-name set. ARGV: id, per-pilot queue prefix. Removes the first queued copy.
DEQUEUE = r"""
if redis.call('LREM', K[1], 1, ARGV[1]) > 0 then return 1 end
for _, pilot in ipairs(redis.call('SMEMBERS', K[2])) do
  if redis.call('LREM', ARGV[2] .. pilot, 1, ARGV[1]) > 0 then return 1 end
end
return 0
"""

# K: live set, heartbeat, in-progress list, shared queue, own queue, queue-name set, stream.
# ARGV: pilot, max_reassign, force, now, entity prefix, kind, final states, started states,
#       pending state, sources of pending, requeue detail, failed state, sources of failed, failed detail.
# Returns {requeued, failed, dropped}; all empty when the pilot is not (or no longer) lost.
# The decisions are pilotdata.coordination.requeue.plan_requeue's (the conformance suite checks it).
REQUEUE_LOST = r"""
local pilot, max_reassign, force, now = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local prefix, kind, final, started = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local pending, to_pending, pending_detail = ARGV[9], ARGV[10], ARGV[11]
local failed_state, to_failed, failed_detail = ARGV[12], ARGV[13], ARGV[14]
local requeued, failed, dropped = {}, {}, {}
if not force then
  if redis.call('SISMEMBER', K[1], pilot) == 0 or redis.call('EXISTS', K[2]) == 1 then
    return {requeued, failed, dropped}
  end
end
redis.call('SREM', K[1], pilot)
redis.call('DEL', K[2])
local ids = redis.call('LRANGE', K[3], 0, -1)
redis.call('DEL', K[3])
for _, id in ipairs(ids) do
  local ekey = prefix .. id
  local cur = redis.call('HMGET', ekey, 'state', 'attempt')
  local state = cur[1]
  if not state or member(final, state) then
    dropped[#dropped + 1] = id
  elseif member(started, state) then
    local r
    if (tonumber(cur[2]) or 0) < max_reassign then
      r = transition(ekey, K[7], kind, id, pending, state, pilot, pending_detail, now, to_pending, started,
                     '', '', '', '', '')
      if r[1] == 1 then requeued[#requeued + 1] = id end
    else
      r = transition(ekey, K[7], kind, id, failed_state, state, pilot, failed_detail, now, to_failed, '',
                     '', '', '', '', '')
      if r[1] == 1 then failed[#failed + 1] = id end
    end
    if r[1] == 0 then dropped[#dropped + 1] = id end
  else
    requeued[#requeued + 1] = id
  end
end
for _, id in ipairs(redis.call('LRANGE', K[5], 0, -1)) do requeued[#requeued + 1] = id end
redis.call('DEL', K[5])
redis.call('SREM', K[6], pilot)
for i = #requeued, 1, -1 do redis.call('LPUSH', K[4], requeued[i]) end
return {requeued, failed, dropped}
"""


# K: stream. ARGV: the first id to return (inclusive) or '-', count. The entries as one JSON text of
# rows in a fixed order, ``[[id, entity, entity id, from, to, time, pilot, attempt, detail], ...]`` (a
# missing field is ``''``; ``detail`` stays the JSON text it was written as): one bulk reply that the client
# decodes in C, then reads each row by position, where the entries as a RESP reply (about 20 elements
# each) cost the pure-Python parser most of a reader's time and field lists cost a dict per entry.
EVENTS_AFTER = r"""
local entries = redis.call('XRANGE', K[1], ARGV[1], '+', 'COUNT', ARGV[2])
if #entries == 0 then return '[]' end
local rows = {}
for i, entry in ipairs(entries) do
  local f, m = entry[2], {}
  for j = 1, #f, 2 do m[f[j]] = f[j + 1] end
  rows[i] = {entry[1], m['entity'] or '', m['id'] or '', m['from'] or '', m['to'] or '', m['time'] or '',
             m['pilot'] or '', m['attempt'] or '', m['detail'] or ''}
end
return cjson.encode(rows)
"""


# K: entity hashes. The hashes' fields as one JSON text, ``[[field, value, ...], ...]`` in key order (an
# empty table, ``{}``, for a missing hash). Reading a batch of records this way costs the client one JSON
# decode in C instead of one pipelined HGETALL per record, each packed, queued and parsed in Python.
GET_MANY = r"""
local out = {}
for i = 1, #K do out[i] = redis.call('HGETALL', K[i]) end
return cjson.encode(out)
"""

# K: entity hashes. Their ``state`` fields as one JSON text, ``[state or false, ...]`` in key order.
STATES = r"""
local out = {}
for i = 1, #K do out[i] = redis.call('HGET', K[i], 'state') end
return cjson.encode(out)
"""
