"""The Redis backend class: :class:`RedisCoordination` (connection, errors, and the calls that run the scripts).

What it owns: building each script call from :mod:`pilotdata.states` (the legal and retry sources of a
target travel in ``ARGV``, so the Python table stays the single source of truth), redis-py's
connection, and the conversion of redis-py errors into :class:`~pilotdata.errors.CoordinationError`
naming the URL without its password. The Lua is in :mod:`.scripts`, the keys in
:mod:`pilotdata.coordination.keys`.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import redis
import redis.exceptions

from pilotdata.coordination import requeue
from pilotdata.coordination._codec import (
    ADOPTED_REASON,
    BINDER_FIELD,
    check_binder,
    check_queued,
    check_unbound_kind,
    creation_detail,
    dumps,
    initial_state,
    kind_name,
    loads_many,
    rules,
)
from pilotdata.coordination.base import (
    Coordination,
    EntityRecord,
    Event,
    RequeueResult,
    TransitionRequest,
    TransitionResult,
)
from pilotdata.coordination.keys import DATA_PREFIX, TIME_PREFIX, RedisKeys
from pilotdata.coordination.redis_backend import scripts
from pilotdata.coordination.redis_backend.scripts import lua_set
from pilotdata.errors import (
    AlreadyExistsError,
    CoordinationError,
    CoordinationUnavailableError,
    DescriptionError,
    NotFoundError,
)
from pilotdata.redaction import public_url, register_secret, scrub, url_secrets
from pilotdata.states import ComputeUnitState, Kind

__all__ = ["CLAIM_BLOCK_SLICE", "READ_CHUNK", "TRANSITION_CHUNK", "RedisCoordination"]

CLAIM_BLOCK_SLICE = 0.25
"""Longest single ``BLMOVE`` wait (seconds) of a blocking claim; bounds the latency of work that
arrives on the pilot's own queue while the claim blocks on the shared queue."""

TRANSITION_CHUNK = 500
"""Transition requests per script call; a batch is several calls in one pipelined round trip."""

READ_CHUNK = 1000
"""Records (or states) read per script call; a longer read is several calls in one pipelined round trip
(each call holds the server for the keys it reads only)."""

_STREAM_ID = re.compile(r"^\d+-\d+$")


@functools.lru_cache(maxsize=128)
def _rules(kind: str, to: str) -> tuple[str, str]:
    """(legal sources of ``to``, sources from which ``to`` is a retry) as script sets."""
    allowed, retry = rules(kind, to)
    return lua_set(allowed), lua_set(retry)


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


_ROW_FIELDS = ("entity", "id", "from", "to", "time", "pilot", "attempt", "detail")
"""A stream entry's fields in the order of an event row (after its id), as ``EVENTS_AFTER`` answers them."""


def _events(rows: Sequence[Sequence[str]]) -> list[Event]:
    """Events from rows ``[id, *_ROW_FIELDS]`` (``''`` for a missing field), the ``EVENTS_AFTER`` script's
    and the blocking read's alike; read by position, the details by :func:`loads_many`."""
    texts = [row[8] or "{}" for row in rows]
    details = loads_many(texts)
    return [
        Event(cursor=r[0], entity=r[1], id=r[2], from_state=r[3] or None, to_state=r[4] or None,
              time=float(r[5] or 0), pilot=r[6] or None, attempt=int(r[7] or 0), detail=d, detail_text=text)
        for r, d, text in zip(rows, details, texts, strict=True)
    ]


class RedisCoordination(Coordination):
    """Coordination in Redis (``redis://``, ``rediss://`` for TLS, ``unix://`` for a socket).

    ``url`` may carry a password; it is used to connect and never shown (see :attr:`url`).
    """

    def __init__(self, url: str, namespace: str = "default") -> None:
        self.namespace = namespace
        self.keys = RedisKeys(namespace)
        self._url = public_url(url)
        self._secrets = url_secrets(url)
        register_secret(*self._secrets)
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
        self._s_transition = reg(scripts.PRELUDE + scripts.TRANSITION_MANY)
        self._s_create = reg(scripts.PRELUDE + scripts.CREATE)
        self._s_update = reg(scripts.PRELUDE + scripts.UPDATE_DATA)
        self._s_claim = reg(scripts.PRELUDE + scripts.CLAIM)
        self._s_unclaim = reg(scripts.PRELUDE + scripts.UNCLAIM)
        self._s_dequeue = reg(scripts.PRELUDE + scripts.DEQUEUE)
        self._s_requeue = reg(scripts.PRELUDE + scripts.REQUEUE_LOST)
        self._s_adopt = reg(scripts.PRELUDE + scripts.ADOPT_UNBOUND)
        self._s_events = reg(scripts.PRELUDE + scripts.EVENTS_AFTER)
        self._s_get_many = reg(scripts.PRELUDE + scripts.GET_MANY)
        self._s_states = reg(scripts.PRELUDE + scripts.STATES)

    def __repr__(self) -> str:
        return f"RedisCoordination(url={self._url!r}, namespace={self.namespace!r})"

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        """The Redis URL without its password."""
        return self._url

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

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
            raise CoordinationUnavailableError(f"{what}: cannot reach Redis at {self._url}: {msg}") from exc
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

    def create_many(
        self, kind: Kind | str, items: Sequence[tuple[str, Mapping[str, Any]]], *, binder: str | None = None,
        queue: str | None = None, detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Create many entities in one script call: all of them, or none if any id is taken.

        With ``binder`` (CUs) they also enter the binder's unbound set in that script; with ``queue``
        they move on to Pending at the back of that queue in it.
        """
        k = kind_name(kind)
        if not items:
            return
        if binder is not None:
            check_unbound_kind(k)
            check_binder(binder)
        queued = ["", "", "", "", ""]
        if queue is not None:
            check_queued(k, binder)
            queued = [self.keys.queue(queue), queue, self.keys.queue_names, ComputeUnitState.PENDING.value,
                      dumps(dict(detail), f"{k} create", "detail") if detail else "{}"]
        keys = [self.keys.index(k), self.keys.events]
        args: list[str | int] = [k, initial_state(k), repr(time.time()), len(items), binder or "",
                                 self.keys.unbound(binder or ""), self.keys.binders, *queued]
        for entity_id, data in items:
            pairs = self._flatten(k, entity_id, data)
            keys.append(self.keys.entity(k, entity_id))
            args += [entity_id, creation_detail(k, data), len(pairs) // 2, *pairs]
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

    def _read_json(self, script: Any, kind: str, entity_ids: Sequence[str]) -> list[Any]:
        """Run a read script over the entities' hashes, :data:`READ_CHUNK` keys per call, pipelined; the
        decoded JSON replies in the order asked."""
        keys = [self.keys.entity(kind, i) for i in entity_ids]
        if len(keys) <= READ_CHUNK:
            replies = [script(keys=keys)] if keys else []
        else:
            pipe = self._r.pipeline(transaction=False)
            for first in range(0, len(keys), READ_CHUNK):
                script(keys=keys[first:first + READ_CHUNK], client=pipe)
            replies = pipe.execute()
        return [item for reply in replies for item in json.loads(reply)]

    def get_many(self, kind: Kind | str, entity_ids: Sequence[str]) -> list[EntityRecord | None]:
        """Entities in the order asked (the ``GET_MANY`` script, one round trip); ``None`` where missing."""
        k = kind_name(kind)
        with self._errors(f"get {k}"):
            rows = self._read_json(self._s_get_many, k, entity_ids)
        return [_record(k, i, dict(zip(f[::2], f[1::2], strict=True))) if f else None
                for i, f in zip(entity_ids, rows, strict=True)]

    def states(self, kind: Kind | str, entity_ids: Sequence[str]) -> list[str | None]:
        """States in the order asked (the ``STATES`` script, one round trip); ``None`` where missing."""
        k = kind_name(kind)
        with self._errors(f"get {k} states"):
            return [s if isinstance(s, str) else None for s in self._read_json(self._s_states, k, entity_ids)]

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
            binder = self._r.hget(self.keys.entity(k, entity_id), BINDER_FIELD)
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self.keys.entity(k, entity_id))
            pipe.srem(self.keys.index(k), entity_id)
            if binder:
                pipe.zrem(self.keys.unbound(binder), entity_id)
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
                         self.keys.claimed(req.pilot) if req.release and req.pilot else "",
                         self.keys.claimed(req.owner) if req.owner else "",
                         self.keys.queue(req.queue) if req.queue is not None else "",
                         req.queue or "", "1" if req.front else ""]
            head = [k, stamp, initial_state(k), self.keys.unbound_prefix, self.keys.queue_names, str(len(targets))]
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
        cu, keys = Kind.CU.value, self.keys
        to_pending, to_failed = ComputeUnitState.PENDING.value, ComputeUnitState.FAILED.value
        pending_detail, failed_detail = requeue.lost_details(pilot, max_reassign)
        args: list[str | int] = [
            pilot, max_reassign, "1" if force else "0", repr(time.time()), keys.entity_prefix(cu), cu,
            lua_set(requeue.final_states()), lua_set(requeue.started_states()),
            to_pending, _rules(cu, to_pending)[0], json.dumps(pending_detail),
            to_failed, _rules(cu, to_failed)[0], json.dumps(failed_detail),
        ]
        with self._errors(f"requeue work of pilot {pilot!r}"):
            requeued, failed, dropped = self._s_requeue(
                keys=[keys.live, keys.heartbeat(pilot), keys.claimed(pilot), keys.shared_queue,
                      keys.queue(pilot), keys.queue_names, keys.events],
                args=args,
            )
        return RequeueResult(pilot, list(requeued), list(failed), list(dropped))

    # ------------------------------------------------------------------ unbound
    def hold_unbound(self, binder: str, ttl: float) -> None:
        """``SET bl:<binder> PX ttl`` (``DEL`` for ``ttl`` <= 0)."""
        check_binder(binder)
        with self._errors(f"lease of binder {binder!r}"):
            if ttl <= 0:
                self._r.delete(self.keys.lease(binder))
            else:
                self._r.set(self.keys.lease(binder), repr(time.time()), px=max(1, int(ttl * 1000)))

    def unbound(self, binder: str | None = None) -> list[str]:
        """``ZRANGE`` of one binder's unbound set, or of every binder's (binders sorted)."""
        with self._errors("unbound CUs"):
            binders = [check_binder(binder)] if binder is not None else sorted(self._r.smembers(self.keys.binders))
            pipe = self._r.pipeline(transaction=False)
            for b in binders:
                pipe.zrange(self.keys.unbound(b), 0, -1)
            return [i for ids in (pipe.execute() if binders else []) for i in ids]

    def adopt_unbound(self) -> list[str]:
        """One script: every binder whose lease lapsed loses its unbound CUs to the shared queue."""
        cu, keys = Kind.CU.value, self.keys
        pending = ComputeUnitState.PENDING.value
        pre, post = dumps({"reason": ADOPTED_REASON}, "adopt", "detail")[:-1] + ',"adopted_from":', "}"
        args = [keys.unbound_prefix, keys.lease_prefix, keys.entity_prefix(cu), cu, initial_state(cu), pending,
                _rules(cu, pending)[0], pre, post, repr(time.time())]
        with self._errors("adopt unbound CUs"):
            adopted = self._s_adopt(keys=[keys.binders, keys.shared_queue, keys.events], args=args)
        return list(adopted)

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
        """The entries after ``cursor``: ``XRANGE`` in a script that returns them as one JSON text (see
        :data:`~pilotdata.coordination.redis_backend.scripts.EVENTS_AFTER`); when there are none and
        ``block`` > 0, ``XREAD BLOCK`` waits for the next ones."""
        start = self._cursor(cursor) if cursor is not None else "0-0"
        ms, seq = start.split("-")
        first = f"{ms}-{int(seq) + 1}" if cursor is not None else "-"
        with self._errors("read events"):
            rows = json.loads(self._s_events(keys=[self.keys.events], args=[first, max(1, limit)]))
        if rows:
            return _events(rows)
        if block <= 0:
            return []
        with self._errors("read events"):
            reply = self._r.xread({self.keys.events: start}, count=max(1, limit), block=max(1, int(block * 1000)))
        if not reply:
            return []
        found = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        return _events([[entry_id, *(fields.get(name, "") for name in _ROW_FIELDS)] for entry_id, fields in found])

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
