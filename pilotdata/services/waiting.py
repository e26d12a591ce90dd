"""Waiting for entities to reach a state, driven by the coordination event stream (no sleep loops).

The cursor is taken *before* the state is read, so an event that lands between the read and the block
wakes the waiter instead of being missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

from pilotdata.coordination import Coordination, EntityRecord
from pilotdata.errors import NotFoundError, TimeoutExpired
from pilotdata.states import FINAL_STATES, Kind

_BLOCK = 1.0  # seconds per blocking read; also bounds how often ``tick`` runs


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
    goal = set(targets) | FINAL_STATES
    deadline = None if timeout is None else time.monotonic() + timeout
    remaining = list(dict.fromkeys(ids))
    done: dict[str, EntityRecord] = {}
    last_tick = time.monotonic()
    while True:
        cursor = coord.last_cursor()
        records = coord.get_many(kind, remaining)
        still: list[str] = []
        for entity_id, record in zip(remaining, records):
            if record is None:
                raise NotFoundError(f"{kind.value} {entity_id!r} does not exist")
            if record.state in goal:
                done[entity_id] = record
            else:
                still.append(entity_id)
        remaining = still
        if not remaining:
            return [done[i] for i in dict.fromkeys(ids)]
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise TimeoutExpired(
                f"timed out after {timeout}s: {len(remaining)} {kind.value}(s) not yet in "
                f"{sorted(goal)} (e.g. {remaining[0]!r})"
            )
        if tick is not None and now - last_tick >= _BLOCK:
            tick()
            last_tick = now
        block = _BLOCK if deadline is None else max(0.01, min(_BLOCK, deadline - now))
        coord.events_after(cursor, limit=1, block=block)
