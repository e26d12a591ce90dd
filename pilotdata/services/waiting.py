"""Waiting for entities to reach a state, driven by the coordination event stream (no sleep loops).

The records are read once; after that the waiter follows the event stream (each transition event
carries the new state) and re-reads only the entities the events name, so waiting for thousands of
CUs costs a few reads, not a full scan per event. The cursor is taken *before* the first read, so an
event that lands between the read and the first block is not missed. A full re-read every
``_RESYNC`` seconds guards against events trimmed from the stream before the waiter saw them.

:func:`wait_until` is the same wait for callers that need no records (``cds.wait()``): it reads only
states, and an event into a final state settles its entity without a read (final states are sticky).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

from pilotdata.coordination import Coordination, EntityRecord
from pilotdata.errors import NotFoundError, TimeoutExpired
from pilotdata.states import FINAL_STATES, Kind

_BLOCK = 1.0  # seconds per blocking read; also bounds how often ``tick`` runs
_RESYNC = 10.0  # seconds between full re-reads
_MANY = 500  # a read with fewer events than this waits _GATHER before the next one
_GATHER = 0.05  # seconds: coalesces a busy stream into batches (bounds the added latency too)


def wait_for_states(
    coord: Coordination,
    kind: Kind,
    ids: Sequence[str],
    targets: Collection[str] = FINAL_STATES,
    *,
    timeout: float | None = None,
    tick: Callable[[], None] | None = None,
) -> list[EntityRecord]:
    """Block until every entity in ``ids`` is in one of ``targets`` (or final); return their records.

    ``tick`` runs about once a second while waiting (e.g. pilot refresh and lost-work detection).
    Raises :class:`TimeoutExpired` naming how many are still outstanding.
    """
    return _wait(coord, kind, ids, targets, timeout, tick, records=True)


def wait_until(
    coord: Coordination,
    kind: Kind,
    ids: Sequence[str],
    targets: Collection[str] = FINAL_STATES,
    *,
    timeout: float | None = None,
    tick: Callable[[], None] | None = None,
) -> None:
    """:func:`wait_for_states` without the records: reads states only (see the module docstring)."""
    _wait(coord, kind, ids, targets, timeout, tick, records=False)


def _wait(coord: Coordination, kind: Kind, ids: Sequence[str], targets: Collection[str], timeout: float | None,
          tick: Callable[[], None] | None, *, records: bool) -> list[EntityRecord]:
    """The wait; returns the records when ``records`` is set, else an empty list."""
    goal = set(targets) | FINAL_STATES
    deadline = None if timeout is None else time.monotonic() + timeout
    wanted = list(dict.fromkeys(ids))
    done: dict[str, EntityRecord] = {}

    def absorb(some: Sequence[str]) -> set[str]:
        return _absorb(coord, kind, some, goal, done) if records else _absorb_states(coord, kind, some, goal)

    cursor = coord.last_cursor()
    remaining = absorb(wanted)
    last_tick = last_sync = time.monotonic()
    while remaining:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            first = next(iter(remaining))
            raise TimeoutExpired(
                f"timed out after {timeout}s: {len(remaining)} {kind.value}(s) not yet in "
                f"{sorted(goal)} (e.g. {first!r})"
            )
        if tick is not None and now - last_tick >= _BLOCK:
            tick()
            last_tick = now
        block = _BLOCK if deadline is None else max(0.01, min(_BLOCK, deadline - now))
        events = coord.events_after(cursor, limit=5000, block=block)
        if events:
            cursor = events[-1].cursor
        moved = [e.id for e in events if e.entity == kind.value and e.id in remaining and e.to_state in goal]
        if not records:  # a final state is sticky: its event settles the entity without a read
            remaining.difference_update(e.id for e in events if e.entity == kind.value and e.to_state in FINAL_STATES)
            moved = [i for i in moved if i in remaining]
        if now - last_sync >= _RESYNC:
            moved, last_sync = list(remaining), now
        if moved:
            still = absorb(list(dict.fromkeys(moved)))
            remaining -= set(moved) - still
        if events and remaining and len(events) < _MANY:
            # a trickle of events: let a few more gather instead of one read per event
            time.sleep(_GATHER)
    return [done[i] for i in wanted] if records else []


def _absorb_states(coord: Coordination, kind: Kind, ids: Sequence[str], goal: set[str]) -> set[str]:
    """Read the states of ``ids``; return the ones not yet in ``goal``."""
    outstanding: set[str] = set()
    for entity_id, state in zip(ids, coord.states(kind, list(ids)), strict=True):
        if state is None:
            raise NotFoundError(f"{kind.value} {entity_id!r} does not exist")
        if state not in goal:
            outstanding.add(entity_id)
    return outstanding


def _absorb(
    coord: Coordination, kind: Kind, ids: Sequence[str], goal: set[str], done: dict[str, EntityRecord]
) -> set[str]:
    """Read ``ids``; record the ones in ``goal`` in ``done``; return the ones still outstanding."""
    outstanding: set[str] = set()
    for entity_id, record in zip(ids, coord.get_many(kind, list(ids))):
        if record is None:
            raise NotFoundError(f"{kind.value} {entity_id!r} does not exist")
        if record.state in goal:
            done[entity_id] = record
        else:
            outstanding.add(entity_id)
    return outstanding
