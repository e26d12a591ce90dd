"""Redis coordination backend: :class:`RedisCoordination` for ``redis://``, ``rediss://`` and ``unix://``.

What it owns: the Lua scripts that make every state change, claim and requeue atomic, and the
conversion of redis-py errors into :class:`~pilotdata.errors.CoordinationError`. The keys themselves
are spelled (and documented) in :mod:`pilotdata.coordination.keys`.

* Transitions run in a Lua script (``EVALSHA``) that checks and applies each request on its own, in
  order. The legal source states and the retry sources come from :mod:`pilotdata.states` in ``ARGV``,
  so the Python table stays the single source of truth while the check-and-write happens atomically
  on the server. A batch is split into scripts of :data:`TRANSITION_CHUNK` requests, pipelined.
* Queues are lists. :meth:`RedisCoordination.claim` moves ids with ``LMOVE`` (own queue, then the
  shared queue) into the pilot's in-progress list; when both are empty it blocks in ``BLMOVE`` on the
  shared queue in bounded slices (work arriving on the pilot's own queue is seen at the next slice).
* :meth:`RedisCoordination.requeue_lost` is one script, so of two concurrent detectors exactly one
  gets a lost pilot's work.
* Events are a Redis Stream (``XADD`` / ``XREAD BLOCK`` / ``XTRIM MINID``).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
import redis.exceptions

from pilotdata import states
from pilotdata.coordination._codec import dumps, kind_name, rules
from pilotdata.coordination.base import (
    Coordination,
    EntityRecord,
    Event,
    RequeueResult,
    TransitionRequest,
    TransitionResult,
)
from pilotdata.coordination.keys import DATA_PREFIX, TIME_PREFIX, RedisKeys
from pilotdata.errors import AlreadyExistsError, CoordinationError, DescriptionError, NotFoundError
from pilotdata.states import Kind

__all__ = ["CLAIM_BLOCK_SLICE", "TRANSITION_CHUNK", "RedisCoordination", "redact_url"]

CLAIM_BLOCK_SLICE = 0.25
"""Longest single ``BLMOVE`` wait (seconds) of a blocking claim; bounds the latency of work that
arrives on the pilot's own queue while the claim blocks on the shared queue."""

TRANSITION_CHUNK = 500
"""Transition requests per script call; a batch is several calls in one pipelined round trip."""

_STREAM_ID = re.compile(r"^\d+-\d+$")

# The Lua prelude shared by every script. ``K`` is the script's declared key array; ``ARGV`` its
# arguments. Sets of states travel as "\nA\nB\n" strings (plain substring search, no parsing).
_PRELUDE = r"""
local K = KEYS
local function member(set, value)
  return string.find(set, '\n' .. value .. '\n', 1, true) ~= nil
end
-- One checked transition of entity hash `ekey`; appends its event to `stream`.
-- Returns {1, previous, attempt} when applied, {0, current or false, attempt} when not.
local function transition(ekey, stream, kind, id, to, expected, pilot, detail, now, allowed, retry, data, release)
  local cur = redis.call('HMGET', ekey, 'state', 'attempt')
  local state = cur[1]
  if not state then return {0, false, 0} end
  local attempt = tonumber(cur[2]) or 0
  if (expected ~= '' and state ~= expected) or not member(allowed, state) then
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
  redis.call('HSET', ekey, unpack(fields))
  redis.call('XADD', stream, '*', unpack(event))
  if release and release ~= '' then redis.call('LREM', release, 1, id) end
  return {1, state, attempt}
end
"""

# K: stream, entity 1..n. ARGV: kind, now, ntargets, per target: name, allowed, retry; then per
# request: id, to, expected, pilot, detail, data pairs, in-progress list to release from.
# Returns {ok, previous, attempt} per request, flattened.
_TRANSITION_MANY = r"""
local kind, now, ntargets = ARGV[1], ARGV[2], tonumber(ARGV[3])
local rules, a = {}, 4
for _ = 1, ntargets do
  rules[ARGV[a]] = {ARGV[a + 1], ARGV[a + 2]}
  a = a + 3
end
local out = {}
for i = 2, #K do
  local to = ARGV[a + 1]
  local r = transition(K[i], K[1], kind, ARGV[a], to, ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], now,
                       rules[to][1], rules[to][2], ARGV[a + 5], ARGV[a + 6])
  out[#out + 1] = r[1]; out[#out + 1] = r[2]; out[#out + 1] = r[3]
  a = a + 7
end
return out
"""

# K: index, stream, entity 1..n. ARGV: kind, initial state, now, n, then per entity: id, npairs, pairs.
# All or nothing: returns 0, or the 1-based position of the first entity whose id is taken.
_CREATE = r"""
local kind, initial, now, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local seen = {}
for i = 1, n do
  local key = K[i + 2]
  if seen[key] or redis.call('EXISTS', key) == 1 then return i end
  seen[key] = true
end
local a = 5
for i = 1, n do
  local id, npairs = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local fields = {'state', initial, 'attempt', 0, 'created', now, 'updated', now, 't_' .. initial, now,
                  'detail', '{}'}
  for _ = 1, npairs do
    fields[#fields + 1] = ARGV[a]; fields[#fields + 1] = ARGV[a + 1]
    a = a + 2
  end
  redis.call('HSET', K[i + 2], unpack(fields))
  redis.call('SADD', K[1], id)
  redis.call('XADD', K[2], '*', 'entity', kind, 'id', id, 'to', initial, 'time', now, 'attempt', 0,
             'detail', '{}')
end
return 0
"""

# K: entity. ARGV: now, nset, field/value pairs, then fields to delete. Returns 0 if the entity is missing.
_UPDATE_DATA = r"""
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
_CLAIM = r"""
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
_UNCLAIM = r"""
local moved = {}
for i = 1, #ARGV do
  if redis.call('LREM', K[1], 1, ARGV[i]) > 0 then moved[#moved + 1] = ARGV[i] end
end
for i = #moved, 1, -1 do redis.call('LPUSH', K[2], moved[i]) end
return moved
"""

# K: shared queue, queue-name set. ARGV: id, per-pilot queue prefix. Removes the first queued copy.
_DEQUEUE = r"""
if redis.call('LREM', K[1], 1, ARGV[1]) > 0 then return 1 end
for _, pilot in ipairs(redis.call('SMEMBERS', K[2])) do
  if redis.call('LREM', ARGV[2] .. pilot, 1, ARGV[1]) > 0 then return 1 end
end
return 0
"""

# K: live set, heartbeat, in-progress list, shared queue, own queue, queue-name set, stream.
# ARGV: pilot, max_reassign, force, now, cu entity prefix, final states, retry sources,
#       sources of Pending, sources of Failed, requeue detail, failed detail.
# Returns {requeued, failed, dropped}; all empty when the pilot is not (or no longer) lost.
_REQUEUE_LOST = r"""
local pilot, max_reassign, force, now = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local prefix, final, retry, to_pending, to_failed = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
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
  elseif member(retry, state) then
    local r
    if (tonumber(cur[2]) or 0) < max_reassign then
      r = transition(ekey, K[7], 'cu', id, 'Pending', state, pilot, ARGV[10], now, to_pending, retry)
      if r[1] == 1 then requeued[#requeued + 1] = id end
    else
      r = transition(ekey, K[7], 'cu', id, 'Failed', state, pilot, ARGV[11], now, to_failed, '')
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


def _secrets_of(url: str) -> list[str]:
    """Passwords in ``url`` (userinfo or a ``password=`` query parameter), raw and unquoted."""
    parts = urlsplit(url)
    found = [parts.password or ""]
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() == "password"]
    out: list[str] = []
    for secret in found:
        if secret:
            out += [secret, unquote(secret)]
    return out


def redact_url(url: str) -> str:
    """``url`` without its password (userinfo or ``password=`` query parameter); keeps the user name."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}@{host}" if user else host
        query = urlencode(
            [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "password"]
        )
        # Built by hand: urlunsplit would turn "unix:///path" (empty host) into "unix:/path".
        return (
            f"{parts.scheme}://{netloc}{parts.path}"
            + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else "")
        )
    except ValueError:
        return "<unparseable redis URL>"


def _set(values: Iterable[str]) -> str:
    """A set of states as the scripts' ``"\\nA\\nB\\n"`` string."""
    return "\n" + "".join(f"{v}\n" for v in sorted(values))






@functools.lru_cache(maxsize=128)
def _rules(kind: str, to: str) -> tuple[str, str]:
    """(legal sources of ``to``, sources from which ``to`` is a retry) as script sets."""
    allowed, retry = rules(kind, to)
    return _set(allowed), _set(retry)


def _record(kind: str, entity_id: str, fields: Mapping[str, str]) -> EntityRecord:
    data: dict[str, Any] = {}
    times: dict[str, float] = {}
    for name, value in fields.items():
        if name.startswith(DATA_PREFIX):
            data[name[len(DATA_PREFIX) :]] = json.loads(value)
        elif name.startswith(TIME_PREFIX):
            times[name[len(TIME_PREFIX) :]] = float(value)
    return EntityRecord(
        kind=kind,
        id=entity_id,
        state=fields["state"],
        attempt=int(fields["attempt"]),
        pilot=fields.get("pilot") or None,
        data=data,
        created=float(fields["created"]),
        updated=float(fields["updated"]),
        times=times,
        detail=json.loads(fields.get("detail") or "{}"),
    )


def _event(cursor: str, fields: Mapping[str, str]) -> Event:
    return Event(
        cursor=cursor,
        entity=fields.get("entity", ""),
        id=fields.get("id", ""),
        from_state=fields.get("from") or None,
        to_state=fields.get("to") or None,
        time=float(fields.get("time", 0.0)),
        pilot=fields.get("pilot") or None,
        attempt=int(fields.get("attempt", 0)),
        detail=json.loads(fields.get("detail") or "{}"),
    )


class RedisCoordination(Coordination):
    """Coordination in Redis (``redis://``, ``rediss://`` for TLS, ``unix://`` for a socket).

    ``url`` may carry a password; it is used to connect and never shown (see :attr:`url`).
    """

    def __init__(self, url: str, namespace: str = "default") -> None:
        self.namespace = namespace
        self.keys = RedisKeys(namespace)
        self._url = redact_url(url)
        self._secrets = _secrets_of(url)
        self._closed = False
        # Any: redis-py types every sync reply as "Awaitable[T] | T", which says nothing useful here.
        self._r: Any
        try:
            self._r = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=10)
        except ValueError as exc:
            raise DescriptionError(
                f"bad Redis coordination URL {self._url!r}: {self._scrub(str(exc))}", field="url"
            ) from exc
        reg = self._r.register_script
        self._s_transition = reg(_PRELUDE + _TRANSITION_MANY)
        self._s_create = reg(_PRELUDE + _CREATE)
        self._s_update = reg(_PRELUDE + _UPDATE_DATA)
        self._s_claim = reg(_PRELUDE + _CLAIM)
        self._s_unclaim = reg(_PRELUDE + _UNCLAIM)
        self._s_dequeue = reg(_PRELUDE + _DEQUEUE)
        self._s_requeue = reg(_PRELUDE + _REQUEUE_LOST)

    def __repr__(self) -> str:
        return f"RedisCoordination(url={self._url!r}, namespace={self.namespace!r})"

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        """The Redis URL without its password."""
        return self._url

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Convert redis-py errors into :class:`CoordinationError` naming the (redacted) URL."""
        if self._closed:
            raise CoordinationError(f"{what}: coordination {self._url} is closed")
        try:
            yield
        except (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
            raise CoordinationError(
                f"{what}: Redis at {self._url} rejected the credentials: {self._scrub(str(exc))}"
            ) from exc
        except redis.exceptions.ResponseError as exc:
            msg = self._scrub(str(exc))
            raise CoordinationError(f"{what}: Redis at {self._url} answered an error: {msg}") from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            msg = self._scrub(str(exc))
            raise CoordinationError(f"{what}: cannot reach Redis at {self._url}: {msg}") from exc
        except redis.exceptions.RedisError as exc:
            raise CoordinationError(f"{what}: Redis at {self._url} failed: {self._scrub(str(exc))}") from exc

    def ping(self) -> None:
        """Raise :class:`CoordinationError` unless Redis answers (and accepts the credentials)."""
        with self._errors("ping"):
            self._r.ping()

    def close(self) -> None:
        """Disconnect every pooled connection; later calls raise :class:`CoordinationError`."""
        if not self._closed:
            self._closed = True
            self._r.close()

    # ------------------------------------------------------------------ entities
    def _flatten(self, kind: str, entity_id: str, data: Mapping[str, Any]) -> list[str]:
        out: list[str] = []
        for key, value in data.items():
            if not isinstance(key, str):
                raise DescriptionError(f"{kind} {entity_id!r}: data key {key!r} is not a str", field="data")
            if value is not None:
                out += [DATA_PREFIX + key, dumps(value, f"{kind} {entity_id!r}", f"data.{key}")]
        return out

    def _data_pairs(self, kind: str, entity_id: str, patch: Mapping[str, Any]) -> str:
        """A transition's data patch for the Lua script: ``[[field, json or false], ...]`` as JSON."""
        pairs = self._flatten(kind, entity_id, patch)
        setting = [[pairs[i], pairs[i + 1]] for i in range(0, len(pairs), 2)]
        deleting: list[list[Any]] = [[DATA_PREFIX + key, False] for key, value in patch.items() if value is None]
        return json.dumps(setting + deleting)

    def create_many(self, kind: Kind | str, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Create many entities in one script call: all of them, or none if any id is taken."""
        k = kind_name(kind)
        if not items:
            return
        keys = [self.keys.index(k), self.keys.events]
        args: list[str | int] = [k, "New", repr(time.time()), len(items)]
        for entity_id, data in items:
            pairs = self._flatten(k, entity_id, data)
            keys.append(self.keys.entity(k, entity_id))
            args += [entity_id, len(pairs) // 2, *pairs]
        with self._errors(f"create {k}"):
            taken = int(self._s_create(keys=keys, args=args))
        if taken:
            raise AlreadyExistsError(f"{k} {items[taken - 1][0]!r} already exists")

    def get(self, kind: Kind | str, entity_id: str) -> EntityRecord:
        """One entity, or :class:`NotFoundError`."""
        k = kind_name(kind)
        with self._errors(f"get {k} {entity_id!r}"):
            fields = self._r.hgetall(self.keys.entity(k, entity_id))
        if not fields:
            raise NotFoundError(f"{k} {entity_id!r} does not exist")
        return _record(k, entity_id, fields)

    def get_many(self, kind: Kind | str, entity_ids: Sequence[str]) -> list[EntityRecord | None]:
        """Entities in the order asked (one pipelined round trip); ``None`` where missing."""
        k = kind_name(kind)
        with self._errors(f"get {k}"):
            pipe = self._r.pipeline(transaction=False)
            for entity_id in entity_ids:
                pipe.hgetall(self.keys.entity(k, entity_id))
            rows = pipe.execute() if entity_ids else []
        return [_record(k, i, f) if f else None for i, f in zip(entity_ids, rows, strict=True)]

    def states(self, kind: Kind | str, entity_ids: Sequence[str]) -> list[str | None]:
        """States in the order asked (``HGET state``, one pipelined round trip); ``None`` where missing."""
        k = kind_name(kind)
        with self._errors(f"get {k} states"):
            pipe = self._r.pipeline(transaction=False)
            for entity_id in entity_ids:
                pipe.hget(self.keys.entity(k, entity_id), "state")
            return list(pipe.execute()) if entity_ids else []

    def list_ids(self, kind: Kind | str) -> list[str]:
        """All ids of ``kind`` (from the index set), sorted."""
        k = kind_name(kind)
        with self._errors(f"list {k}"):
            return sorted(self._r.smembers(self.keys.index(k)))

    def update_data(self, kind: Kind | str, entity_id: str, patch: Mapping[str, Any]) -> None:
        """Set / delete (``None``) top-level data keys in one atomic script."""
        k = kind_name(kind)
        pairs = self._flatten(k, entity_id, patch)
        gone = [DATA_PREFIX + key for key, value in patch.items() if value is None]
        with self._errors(f"update {k} {entity_id!r}"):
            args: list[str | int] = [repr(time.time()), len(pairs) // 2, *pairs, *gone]
            found = self._s_update(keys=[self.keys.entity(k, entity_id)], args=args)
        if not found:
            raise NotFoundError(f"{k} {entity_id!r} does not exist")

    def delete(self, kind: Kind | str, entity_id: str) -> None:
        """Remove the entity hash and its index entry (events stay)."""
        k = kind_name(kind)
        with self._errors(f"delete {k} {entity_id!r}"):
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self.keys.entity(k, entity_id))
            pipe.srem(self.keys.index(k), entity_id)
            pipe.execute()

    # ---------------------------------------------------------------- transitions
    def transition_many(
        self, kind: Kind | str, requests: Sequence[TransitionRequest]
    ) -> list[TransitionResult]:
        """Checked transitions: scripts of up to :data:`TRANSITION_CHUNK` requests, pipelined.

        Each request is checked and applied on its own, in order, inside the script.
        """
        k = kind_name(kind)
        if not requests:
            return []
        now = time.time()
        stamp = repr(now)
        table: dict[str, tuple[str, str]] = {}
        calls: list[tuple[list[str], list[str]]] = []
        for first in range(0, len(requests), TRANSITION_CHUNK):
            chunk = requests[first : first + TRANSITION_CHUNK]
            keys = [self.keys.events]
            body: list[str] = []
            targets: dict[str, tuple[str, str]] = {}
            for req in chunk:
                to = str(req.to)
                if to not in table:
                    table[to] = _rules(k, to)
                targets[to] = table[to]
                keys.append(self.keys.entity(k, req.id))
                detail = dumps(dict(req.detail), f"{k} {req.id!r}", "detail") if req.detail else "{}"
                body += [req.id, to, str(req.expected or ""), req.pilot or "", detail,
                         self._data_pairs(k, req.id, req.data) if req.data else "",
                         self.keys.claimed(req.pilot) if req.release and req.pilot else ""]
            head = [k, stamp, str(len(targets))]
            for to, (allowed, retry) in targets.items():
                head += [to, allowed, retry]
            calls.append((keys, head + body))
        with self._errors(f"transition {k}"):
            if len(calls) == 1:
                replies = [self._s_transition(keys=calls[0][0], args=calls[0][1])]
            else:
                pipe = self._r.pipeline(transaction=False)
                for keys, args in calls:
                    self._s_transition(keys=keys, args=args, client=pipe)
                replies = pipe.execute()
        flat = iter([x for reply in replies for x in reply])
        return [
            TransitionResult(k, req.id, bool(next(flat)), next(flat), str(req.to), int(next(flat)), now)
            for req in requests
        ]

    # -------------------------------------------------------------------- queues
    def enqueue(self, cu_ids: Sequence[str], pilot: str | None = None, *, front: bool = False) -> None:
        """Append ids to a queue (``front``: so that the next claims take them first, in order)."""
        if not cu_ids:
            return
        queue = self.keys.queue(pilot)
        with self._errors("enqueue"):
            pipe = self._r.pipeline(transaction=True)
            if front:
                pipe.lpush(queue, *reversed(cu_ids))
            else:
                pipe.rpush(queue, *cu_ids)
            if pilot:
                pipe.sadd(self.keys.queue_names, pilot)
            pipe.execute()

    def claim(self, pilot: str, *, limit: int = 1, timeout: float = 0.0) -> list[str]:
        """Reliable claim: own queue, then shared; ``BLMOVE`` up to ``timeout`` while both are empty."""
        if not pilot:
            raise ValueError("claim needs a pilot id")
        if limit < 1:
            return []
        own, shared, claimed = self.keys.queue(pilot), self.keys.shared_queue, self.keys.claimed(pilot)
        deadline = time.monotonic() + timeout
        with self._errors(f"claim for pilot {pilot!r}"):
            while True:
                got: list[str] = list(self._s_claim(keys=[own, shared, claimed], args=[limit]))
                if got:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                # Redis reads a wait under 1 ms as 0, which means "forever": never ask for less.
                wait = max(0.01, min(remaining, CLAIM_BLOCK_SLICE))
                first = self._r.blmove(shared, claimed, wait, "LEFT", "RIGHT")
                if first is not None:
                    if limit > 1:
                        return [first, *self._s_claim(keys=[own, shared, claimed], args=[limit - 1])]
                    return [first]

    def claimed(self, pilot: str) -> list[str]:
        """The pilot's in-progress list, in claim order."""
        with self._errors(f"claimed of pilot {pilot!r}"):
            return list(self._r.lrange(self.keys.claimed(pilot), 0, -1))

    def release(self, pilot: str, cu_ids: Sequence[str]) -> None:
        """Remove finished ids from the pilot's in-progress list."""
        if not cu_ids:
            return
        with self._errors(f"release for pilot {pilot!r}"):
            pipe = self._r.pipeline(transaction=True)
            for cu_id in cu_ids:
                pipe.lrem(self.keys.claimed(pilot), 1, cu_id)
            pipe.execute()

    def unclaim(self, pilot: str, cu_ids: Sequence[str], *, to_pilot: str | None = None) -> None:
        """Move claimed ids back to the front of a queue (ids not claimed by ``pilot`` are ignored)."""
        if not cu_ids:
            return
        with self._errors(f"unclaim for pilot {pilot!r}"):
            pipe = self._r.pipeline(transaction=True)
            keys = [self.keys.claimed(pilot), self.keys.queue(to_pilot)]
            self._s_unclaim(keys=keys, args=cu_ids, client=pipe)
            if to_pilot:
                pipe.sadd(self.keys.queue_names, to_pilot)
            pipe.execute()

    def queued(self, pilot: str | None = None) -> list[str]:
        """The ids waiting in a queue, in claim order."""
        with self._errors("queued"):
            return list(self._r.lrange(self.keys.queue(pilot), 0, -1))

    def queue_lengths(self, pilots: Iterable[str]) -> dict[str, int]:
        """Queue length per pilot (``""``: the shared queue), one round trip."""
        names = list(pilots)
        with self._errors("queue lengths"):
            pipe = self._r.pipeline(transaction=False)
            for name in names:
                pipe.llen(self.keys.queue(name))
            lengths = pipe.execute() if names else []
        return {name: int(n) for name, n in zip(names, lengths, strict=True)}

    def dequeue(self, cu_id: str) -> bool:
        """Remove a queued id from the shared queue or whichever pilot queue holds it."""
        with self._errors(f"dequeue {cu_id!r}"):
            found = self._s_dequeue(
                keys=[self.keys.shared_queue, self.keys.queue_names], args=[cu_id, self.keys.queue_prefix]
            )
        return bool(found)

    # ------------------------------------------------------------------ liveness
    def heartbeat(self, pilot: str, ttl: float) -> None:
        """``SET hb PX ttl`` and ``SADD live`` in one transaction."""
        with self._errors(f"heartbeat of pilot {pilot!r}"):
            pipe = self._r.pipeline(transaction=True)
            pipe.set(self.keys.heartbeat(pilot), repr(time.time()), px=max(1, int(ttl * 1000)))
            pipe.sadd(self.keys.live, pilot)
            pipe.execute()

    def is_alive(self, pilot: str) -> bool:
        """Whether the heartbeat key still exists."""
        with self._errors(f"liveness of pilot {pilot!r}"):
            return bool(self._r.exists(self.keys.heartbeat(pilot)))

    def expired_pilots(self) -> list[str]:
        """Live-set pilots whose heartbeat key has expired, sorted."""
        with self._errors("expired pilots"):
            live = sorted(self._r.smembers(self.keys.live))
            pipe = self._r.pipeline(transaction=False)
            for pilot in live:
                pipe.exists(self.keys.heartbeat(pilot))
            alive = pipe.execute() if live else []
        return [pilot for pilot, up in zip(live, alive, strict=True) if not up]

    def retire(self, pilot: str) -> None:
        """Leave the live set and drop the heartbeat."""
        with self._errors(f"retire pilot {pilot!r}"):
            pipe = self._r.pipeline(transaction=True)
            pipe.srem(self.keys.live, pilot)
            pipe.delete(self.keys.heartbeat(pilot))
            pipe.execute()

    def requeue_lost(self, pilot: str, max_reassign: int, *, force: bool = False) -> RequeueResult:
        """One script: check lost, leave the live set, requeue / fail / drop each claimed CU.

        The lost pilot's own (unclaimed) queue goes back to the shared queue too, so nothing placed
        on a dead pilot is stranded; those ids are reported in ``requeued``.
        """
        cu = Kind.CU.value
        reason = f"pilot {pilot!r} lost"
        keys = self.keys
        to_pending, retry = _rules(cu, "Pending")
        args: list[str | int] = [
            pilot, max_reassign, "1" if force else "0", repr(time.time()), keys.entity_prefix(cu),
            _set(states.FINAL_STATES), retry, to_pending, _rules(cu, "Failed")[0],
            json.dumps({"reason": f"{reason}; requeued", "lost_pilot": pilot}),
            json.dumps({"reason": f"{reason}; reassign limit {max_reassign} reached", "lost_pilot": pilot}),
        ]
        with self._errors(f"requeue work of pilot {pilot!r}"):
            requeued, failed, dropped = self._s_requeue(
                keys=[keys.live, keys.heartbeat(pilot), keys.claimed(pilot), keys.shared_queue,
                      keys.queue(pilot), keys.queue_names, keys.events],
                args=args,
            )
        return RequeueResult(pilot, list(requeued), list(failed), list(dropped))

    # -------------------------------------------------------------------- events
    def record_event(
        self,
        entity: str,
        entity_id: str,
        detail: Mapping[str, Any],
        *,
        pilot: str | None = None,
    ) -> None:
        """``XADD`` a non-transition event."""
        fields = {
            "entity": entity,
            "id": entity_id,
            "time": repr(time.time()),
            "attempt": "0",
            "detail": dumps(dict(detail), f"{entity} {entity_id!r}", "detail"),
        }
        if pilot:
            fields["pilot"] = pilot
        with self._errors(f"record {entity} event"):
            self._r.xadd(self.keys.events, fields)

    def events_after(self, cursor: str | None, *, limit: int = 1000, block: float = 0.0) -> list[Event]:
        """``XREAD`` after ``cursor`` (``BLOCK`` when ``block`` > 0)."""
        start = self._cursor(cursor) if cursor is not None else "0-0"
        block_ms = max(1, int(block * 1000)) if block > 0 else None
        with self._errors("read events"):
            reply = self._r.xread({self.keys.events: start}, count=max(1, limit), block=block_ms)
        if not reply:
            return []
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        return [_event(entry_id, fields) for entry_id, fields in entries]

    def last_cursor(self) -> str | None:
        """Id of the newest stream entry."""
        with self._errors("last event"):
            newest = self._r.xrevrange(self.keys.events, count=1)
        return str(newest[0][0]) if newest else None

    def trim_events(self, upto: str) -> int:
        """``XTRIM MINID`` just past ``upto`` (exact, not approximate)."""
        ms, seq = self._cursor(upto).split("-")
        with self._errors("trim events"):
            return int(self._r.xtrim(self.keys.events, minid=f"{ms}-{int(seq) + 1}", approximate=False))

    @staticmethod
    def _cursor(cursor: str) -> str:
        if not _STREAM_ID.match(str(cursor)):
            raise ValueError(f"bad event cursor {cursor!r}: expected a stream id like '1700000000000-0'")
        return str(cursor)
