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
from collections import Counter
from collections.abc import Callable, Collection, Sequence

from pilotdata.coordination import Coordination, EntityRecord
from pilotdata.errors import NotFoundError, PilotDataError, TimeoutExpired
from pilotdata.states import FINAL_STATES, Kind, PilotState, is_final

_BLOCK = 1.0  # seconds per blocking read; also bounds how often ``tick`` runs
_RESYNC = 10.0  # seconds between full re-reads
_MANY = 500  # a read with fewer events than this waits _GATHER before the next one
_GATHER = 0.05  # seconds: coalesces a trickle into batches while many entities are left
_FEW = 100  # at most this many left: the end is near, and the gather shrinks to _GATHER_NEAR_END
_GATHER_NEAR_END = 0.01  # seconds: bounds how late the last entities are noticed (50 ms was 2-3% of a
# 2,000-CU bulk run); a 10 ms gather all along cost SQLite's client ~40 us of CPU per CU in reads


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
    Raises :class:`TimeoutExpired` saying, in words, how many are still outstanding and in which states,
    and for ComputeUnits with no live pilot, how to start one (:func:`timeout_message`).
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
            raise TimeoutExpired(timeout_message(coord, kind, [i for i in wanted if i in remaining], len(wanted),
                                                 targets, float(timeout or 0)))
        if tick is not None and now - last_tick >= _BLOCK:
            tick()
            last_tick = now
        block = _BLOCK if deadline is None else max(0.01, min(_BLOCK, deadline - now))
        events = coord.events_after(cursor, limit=5000, block=block)
        if events:
            cursor = events[-1].cursor
        moved = [e.id for e in events if e.entity == kind.value and e.id in remaining and e.to_state in goal]
        if not records:  # a final state is sticky: its event settles the entity without a read
            remaining.difference_update(e.id for e in events if e.entity == kind.value and is_final(e.to_state))
            moved = [i for i in moved if i in remaining]
        if now - last_sync >= _RESYNC:
            moved, last_sync = list(remaining), now
        if moved:
            still = absorb(list(dict.fromkeys(moved)))
            remaining -= set(moved) - still
        if events and remaining and len(events) < _MANY:
            # a trickle of events: let a few more gather instead of one read per event
            time.sleep(_GATHER if len(remaining) > _FEW else _GATHER_NEAR_END)
    return [done[i] for i in wanted] if records else []


_NOUN = {Kind.CU: "ComputeUnit", Kind.PILOT: "PilotCompute", Kind.DU: "DataUnit", Kind.PD: "PilotData",
         Kind.RUN: "run"}
START_PILOT_HINT = ("no live pilot: start one (pdata pilot start fork://localhost --cores N, or "
                    "PilotComputeService().create_pilot({'service_url': ...}) from Python)")
"""What a wait for ComputeUnits says when no pilot will ever take them."""


def timeout_message(coord: Coordination, kind: Kind, outstanding: Sequence[str], total: int,
                    targets: Collection[str], timeout: float) -> str:
    """Why a wait timed out, in words: ``timed out after 5s: 2 of 10 ComputeUnit(s) not finished (1 Pending,
    1 Running, e.g. cu-1 Pending); no live pilot: start one (...)``.

    Reads the outstanding entities' states (and, for ComputeUnits, whether any pilot is alive) once;
    if coordination cannot answer, the message says only what the waiter knows.
    """
    extra = sorted(str(t) for t in set(targets) - FINAL_STATES)
    goal = f"not yet {' or '.join(extra)}" if extra else "not finished"
    head = f"timed out after {timeout:g}s: {len(outstanding)} of {total} {_NOUN.get(kind, kind.value)}(s) {goal}"
    try:
        found = [(i, s) for i, s in zip(outstanding, coord.states(kind, list(outstanding)), strict=True)
                 if s is not None]
        counts = Counter(s for _, s in found)
        where = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        example = f", e.g. {found[0][0]} {found[0][1]}" if found else ""
        head += f" ({where}{example})" if where else ""
        if kind is Kind.CU:
            return f"{head}; {_pilot_hint(coord)}"
    except PilotDataError:  # coordination is away: say what is known without it
        head += f" (e.g. {outstanding[0]})" if outstanding else ""
    return head


def _pilot_hint(coord: Coordination) -> str:
    """What to do about ComputeUnits that wait: start a pilot when none is alive, else where to look."""
    pilots = [s for s in coord.states(Kind.PILOT, coord.list_ids(Kind.PILOT)) if s is not None and not is_final(s)]
    if not pilots:
        return START_PILOT_HINT
    if PilotState.RUNNING.value not in pilots:
        return (f"no pilot is running yet ({len(pilots)} starting or queued in a batch system): "
                "see 'pdata pilot ls'")
    return "see 'pdata status' for where they wait"


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
