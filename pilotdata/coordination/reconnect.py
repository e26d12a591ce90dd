"""Riding out a coordination outage: :class:`Reconnecting`, the backend clients talk through.

A client (a script waiting in ``ComputeDataService.wait()``, ``pdata wait``, the binder thread) must not
fail because Redis restarted for three seconds. :class:`Reconnecting` wraps a backend and retries every
call that failed with :class:`~pilotdata.errors.CoordinationUnavailableError` (connection refused or
lost, timeout, Redis still loading its AOF, SQLite busy) with back-off (50 ms doubling to 2 s) for up to
``patience`` seconds (default :data:`DEFAULT_PATIENCE`, ``PDATA_RECONNECT`` or the session's
``reconnect_for``), then raises one clear error that names the URL without its password and says how
long it tried. Errors of the backend itself (a rejected password, a bad reply) are never retried.

A retried call may have been applied the first time, only its reply lost. The calls are shaped so that
this is harmless: reads, heartbeats, leases, releases and requeues are idempotent; a retried
:meth:`~Reconnecting.transition_many` reports a move as applied when it finds the CU at the move's
target (:func:`applied_on_retry`, which the agent's recorder uses too), and a bind or hand-back carries
its queue entry inside the move; a retried :meth:`~Reconnecting.create_many` that finds its ids taken
checks that they all exist (ids are random: they are the ones it created). A retried ``enqueue`` may
leave an id twice in a queue: the second claim finds the CU no longer Pending, or owned by another
pilot, and drops it.

:meth:`Reconnecting.connected_for` tells detectors how long the connection has been up without an
outage: a participant that was itself cut off does not declare others lost (or adopt their CUs) before
they had the chance to renew their heartbeats (see ``docs/failures.md``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pilotdata.coordination.base import (
    Coordination,
    EntityRecord,
    Event,
    RequeueResult,
    TransitionRequest,
    TransitionResult,
)
from pilotdata.errors import AlreadyExistsError, CoordinationUnavailableError
from pilotdata.states import Kind

__all__ = ["DEFAULT_PATIENCE", "Reconnecting", "applied_on_retry"]

log = logging.getLogger(__name__)

DEFAULT_PATIENCE = 60.0
"""Seconds a client keeps retrying an unreachable coordination backend before it gives up."""

_FIRST_DELAY, _MAX_DELAY = 0.05, 2.0

T = TypeVar("T")


def applied_on_retry(
    requests: Sequence[TransitionRequest], results: Sequence[TransitionResult]
) -> list[TransitionResult]:
    """The results of a *retried* batch, with moves the first try already applied counted as applied.

    A move that finds its CU at its own target, or at the target of a later move of the same CU in the
    batch, went through the first time (only the reply was lost): it comes back ``ok``.
    """
    later: list[set[str]] = [set() for _ in requests]
    seen: dict[str, set[str]] = {}
    for i in range(len(requests) - 1, -1, -1):
        req = requests[i]
        later[i] = set(seen.get(req.id, ()))
        seen.setdefault(req.id, set()).add(str(req.to))
    fixed: list[TransitionResult] = []
    for req, result, after in zip(requests, results, later, strict=True):
        if not result.ok and result.previous is not None and (result.previous == req.to or result.previous in after):
            result = TransitionResult(result.kind, result.id, True, req.expected, result.state, result.attempt,
                                      result.time)
        fixed.append(result)
    return fixed


class Reconnecting(Coordination):
    """A backend that rides out outages of up to ``patience`` seconds (see the module docstring).

    Thread-safe like the backend it wraps; ``inner`` is the backend itself.
    """

    def __init__(self, inner: Coordination, patience: float = DEFAULT_PATIENCE) -> None:
        self.inner = inner
        self.namespace = inner.namespace
        self.patience = float(patience)
        self._lock = threading.Lock()
        self._up_since = time.monotonic()
        self._down_since: float | None = None

    def __repr__(self) -> str:
        return f"Reconnecting({self.inner!r}, patience={self.patience:g})"

    # ------------------------------------------------------------------ retrying
    def connected_for(self) -> float:
        """Seconds since this client opened the backend or last recovered from an outage (0 while down)."""
        with self._lock:
            return 0.0 if self._down_since is not None else time.monotonic() - self._up_since

    def _retry(self, what: str, call: Callable[[], T], on_retry: Callable[[T], T] | None = None) -> T:
        delay = _FIRST_DELAY
        deadline: float | None = None
        while True:
            try:
                result = call()
            except CoordinationUnavailableError as exc:
                now = time.monotonic()
                with self._lock:
                    if self._down_since is None:
                        self._down_since = now
                        log.warning("coordination %s unreachable (%s); retrying for up to %g s",
                                    self.inner.url, exc, self.patience)
                    down_since = self._down_since
                if deadline is None:  # the outage, not this call, has the patience: a late call gets what is left
                    deadline = down_since + self.patience
                if now >= deadline:
                    raise CoordinationUnavailableError(
                        f"{what}: coordination {self.inner.url} unreachable for {now - down_since:.0f} s; gave up "
                        f"after {self.patience:g} s (set PDATA_RECONNECT to wait longer): {exc}"
                    ) from exc
                time.sleep(min(delay, deadline - now))
                delay = min(delay * 2, _MAX_DELAY)
                continue
            with self._lock:
                if self._down_since is not None:
                    log.warning("coordination %s reachable again after %.1f s", self.inner.url,
                                time.monotonic() - self._down_since)
                    self._down_since = None
                    self._up_since = time.monotonic()
            if deadline is not None and on_retry is not None:
                return on_retry(result)
            return result

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        """The backend URL without any password."""
        return self.inner.url

    def ping(self) -> None:
        """Ping, riding out an outage."""
        self._retry("ping", self.inner.ping)

    def close(self) -> None:
        """Close the backend (no retry)."""
        self.inner.close()

    # ------------------------------------------------------------------ entities
    def create_many(
        self, kind: Kind | str, items: Sequence[tuple[str, Mapping[str, Any]]], *, binder: str | None = None,
        queue: str | None = None, detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Create entities; a retry that finds every id taken counts as the first try having applied."""
        attempts = 0

        def call() -> None:
            nonlocal attempts
            attempts += 1
            try:
                self.inner.create_many(kind, items, binder=binder, queue=queue, detail=detail)
            except AlreadyExistsError:
                ids = [i for i, _ in items]
                if attempts == 1 or not all(r is not None for r in self.inner.get_many(kind, ids)):
                    raise

        self._retry(f"create {kind}", call)

    def get(self, kind: Kind | str, entity_id: str) -> EntityRecord:
        """Read one entity."""
        return self._retry(f"get {entity_id!r}", lambda: self.inner.get(kind, entity_id))

    def get_many(self, kind: Kind | str, entity_ids: Sequence[str]) -> list[EntityRecord | None]:
        """Read entities."""
        return self._retry("get", lambda: self.inner.get_many(kind, entity_ids))

    def states(self, kind: Kind | str, entity_ids: Sequence[str]) -> list[str | None]:
        """Read states."""
        return self._retry("states", lambda: self.inner.states(kind, entity_ids))

    def list_ids(self, kind: Kind | str) -> list[str]:
        """List ids."""
        return self._retry(f"list {kind}", lambda: self.inner.list_ids(kind))

    def update_data(self, kind: Kind | str, entity_id: str, patch: Mapping[str, Any]) -> None:
        """Set data keys (idempotent)."""
        self._retry(f"update {entity_id!r}", lambda: self.inner.update_data(kind, entity_id, patch))

    def delete(self, kind: Kind | str, entity_id: str) -> None:
        """Delete an entity (idempotent)."""
        self._retry(f"delete {entity_id!r}", lambda: self.inner.delete(kind, entity_id))

    # ---------------------------------------------------------------- transitions
    def transition_many(
        self, kind: Kind | str, requests: Sequence[TransitionRequest]
    ) -> list[TransitionResult]:
        """Checked transitions; after a retry, moves found at their target count as applied."""
        return self._retry(
            "transition", lambda: self.inner.transition_many(kind, requests),
            lambda results: applied_on_retry(requests, results),
        )

    # -------------------------------------------------------------------- queues
    def enqueue(self, cu_ids: Sequence[str], pilot: str | None = None, *, front: bool = False) -> None:
        """Enqueue (a retry after a lost reply may queue an id twice; see the module docstring)."""
        self._retry("enqueue", lambda: self.inner.enqueue(cu_ids, pilot, front=front))

    def claim(self, pilot: str, *, limit: int = 1, timeout: float = 0.0) -> list[str]:
        """Claim (agents use the backend directly; a lost reply leaves ids in the claimed list)."""
        return self._retry("claim", lambda: self.inner.claim(pilot, limit=limit, timeout=timeout))

    def claimed(self, pilot: str) -> list[str]:
        """A pilot's in-progress list."""
        return self._retry("claimed", lambda: self.inner.claimed(pilot))

    def release(self, pilot: str, cu_ids: Sequence[str]) -> None:
        """Release ids (idempotent)."""
        self._retry("release", lambda: self.inner.release(pilot, cu_ids))

    def unclaim(self, pilot: str, cu_ids: Sequence[str], *, to_pilot: str | None = None) -> None:
        """Unclaim (ids no longer claimed are ignored, so a retry is harmless)."""
        self._retry("unclaim", lambda: self.inner.unclaim(pilot, cu_ids, to_pilot=to_pilot))

    def queued(self, pilot: str | None = None) -> list[str]:
        """A queue's ids."""
        return self._retry("queued", lambda: self.inner.queued(pilot))

    def queue_lengths(self, pilots: Iterable[str]) -> dict[str, int]:
        """Queue lengths."""
        names = list(pilots)
        return self._retry("queue lengths", lambda: self.inner.queue_lengths(names))

    def dequeue(self, cu_id: str) -> bool:
        """Dequeue (a retry after a lost reply answers False: the id is gone either way)."""
        return self._retry("dequeue", lambda: self.inner.dequeue(cu_id))

    # ------------------------------------------------------------------ liveness
    def heartbeat(self, pilot: str, ttl: float) -> None:
        """Heartbeat (idempotent)."""
        self._retry("heartbeat", lambda: self.inner.heartbeat(pilot, ttl))

    def is_alive(self, pilot: str) -> bool:
        """Liveness of a pilot."""
        return self._retry("is alive", lambda: self.inner.is_alive(pilot))

    def expired_pilots(self) -> list[str]:
        """Pilots whose heartbeat lapsed."""
        return self._retry("expired pilots", self.inner.expired_pilots)

    def retire(self, pilot: str) -> None:
        """Retire (idempotent)."""
        self._retry("retire", lambda: self.inner.retire(pilot))

    def requeue_lost(self, pilot: str, max_reassign: int, *, force: bool = False) -> RequeueResult:
        """Requeue a lost pilot's work (a retry after a lost reply finds nothing left: an empty result)."""
        return self._retry("requeue lost", lambda: self.inner.requeue_lost(pilot, max_reassign, force=force))

    # ------------------------------------------------------------------ unbound
    def hold_unbound(self, binder: str, ttl: float) -> None:
        """Renew a binder's lease (idempotent)."""
        self._retry("hold unbound", lambda: self.inner.hold_unbound(binder, ttl))

    def unbound(self, binder: str | None = None) -> list[str]:
        """Unbound CUs."""
        return self._retry("unbound", lambda: self.inner.unbound(binder))

    def adopt_unbound(self) -> list[str]:
        """Adopt lapsed binders' CUs (a retry after a lost reply finds nothing left)."""
        return self._retry("adopt unbound", self.inner.adopt_unbound)

    # -------------------------------------------------------------------- events
    def record_event(
        self, entity: str, entity_id: str, detail: Mapping[str, Any], *, pilot: str | None = None
    ) -> None:
        """Append an event (a retry after a lost reply may append it twice)."""
        self._retry("record event", lambda: self.inner.record_event(entity, entity_id, detail, pilot=pilot))

    def events_after(self, cursor: str | None, *, limit: int = 1000, block: float = 0.0) -> list[Event]:
        """Read events."""
        return self._retry("read events", lambda: self.inner.events_after(cursor, limit=limit, block=block))

    def last_cursor(self) -> str | None:
        """The newest event's cursor."""
        return self._retry("last event", self.inner.last_cursor)

    def trim_events(self, upto: str) -> int:
        """Trim events (idempotent)."""
        return self._retry("trim events", lambda: self.inner.trim_events(upto))
