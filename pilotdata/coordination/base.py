"""The coordination interface: what agents and services share, whichever backend holds it.

Two backends implement :class:`Coordination` and pass one conformance suite
(``tests/coordination/conformance/``, which a third backend's tests subclass): Redis
(:mod:`pilotdata.coordination.redis_backend`) and embedded SQLite (:mod:`pilotdata.coordination.sqlite_backend`).
What :meth:`Coordination.requeue_lost` decides is the pure :func:`pilotdata.coordination.requeue.plan_requeue`.

Model
-----
* **Entities** (``Kind``: pilot, cu, du, pd) are records with a ``state``, an ``attempt`` counter, the
  ``pilot`` that last moved them, per-state timestamps and a flat ``data`` dict of JSON values
  (the description and anything else: replicas, cache contents, exit codes). ``update_data`` sets or
  deletes top-level keys of ``data`` atomically per call, so two writers that touch different keys
  never lose each other's writes.
* **Transitions** go through :meth:`Coordination.transition` / :meth:`transition_many`, the only
  functions that write a state. They check :mod:`pilotdata.states`' table atomically against the
  stored state, bump ``attempt`` on a CU retry, stamp the time and append an :class:`Event`.
* **Queues** hold CU ids: one shared queue and one per pilot. :meth:`claim` is a blocking *reliable*
  pop: each claimed id moves atomically into the claiming pilot's in-progress list, so a dead pilot's
  work can be found and requeued; an id is handed to exactly one claimer.
* **Unbound CUs**: CUs recorded with a ``binder`` (the client that binds them late) sit in its unbound
  set, under a lease the binder renews (:meth:`hold_unbound`); leaving New takes a CU out atomically.
  When a lease lapses, :meth:`adopt_unbound` puts that binder's CUs on the shared queue.
* **Ownership**: a :class:`TransitionRequest` with ``owner`` applies only while the CU is in that
  pilot's in-progress list, checked atomically with the state; with ``queue`` it enqueues the CU in the
  same step (a bind or a hand-back is never recorded without its queue entry).
* **Liveness**: :meth:`heartbeat` sets a key with a TTL and adds the pilot to the live set;
  :meth:`expired_pilots` lists live-set pilots whose heartbeat lapsed; :meth:`requeue_lost` atomically
  takes a lost pilot's claimed work back (only the first of several concurrent detectors gets it).
* **Events**: every transition (and :meth:`record_event`) appends an event to an ordered stream with a
  backend cursor; the history writer drains it into SQL; clients use it to wait without polling.
* **Namespaces** isolate projects sharing one server: nothing in one namespace is visible from another.

No value is pickled or evaluated: values are JSON or plain strings. No credential is ever stored.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pilotdata.errors import IllegalTransitionError, NotFoundError
from pilotdata.states import Kind

SHARED_QUEUE = ""
"""Queue name for work that any pilot may claim (``enqueue(..., pilot=None)``)."""


@dataclass(frozen=True)
class EntityRecord:
    """A snapshot of one entity as stored."""

    kind: str
    id: str
    state: str
    attempt: int
    pilot: str | None
    data: dict[str, Any]
    created: float
    updated: float
    times: dict[str, float] = field(default_factory=dict)
    """State name -> time (epoch seconds) the entity last entered it."""
    detail: dict[str, Any] = field(default_factory=dict)
    """Detail of the last transition (reason, exit_code, ...)."""


@dataclass(frozen=True)
class TransitionRequest:
    """One transition in a batch (see :meth:`Coordination.transition_many`)."""

    id: str
    to: str
    expected: str | None = None
    """Apply only if the current state is exactly this (compare-and-set); ``None``: any legal source."""
    pilot: str | None = None
    """Pilot performing the move; recorded on the entity and the event when given."""
    detail: Mapping[str, Any] | None = None
    """JSON-serialisable detail recorded with the event and as the entity's last detail."""
    data: Mapping[str, Any] | None = None
    """Top-level ``data`` keys set in the same atomic step when the move applies (``None`` deletes a key)."""
    release: bool = False
    """When the move applies, also remove the id from ``pilot``'s in-progress list (same atomic step)."""
    owner: str | None = None
    """Apply only while the id is in this pilot's in-progress list (checked in the same atomic step).

    An agent sets it on every move of a CU it claimed: once the CU was taken back (its pilot declared
    lost, the work requeued) or handed to another pilot, the old pilot's moves are refused, so a pilot
    that no longer owns a CU can never move it."""
    queue: str | None = None
    """When the move applies, also put the id on a queue in the same atomic step: ``""``
    (:data:`SHARED_QUEUE`) for the shared queue, a pilot id for that pilot's own queue. ``None``: none.
    A bind (New -> Pending) or a hand-back (-> Pending) is then never recorded without its queue entry."""
    front: bool = False
    """With ``queue``: at the front, so the next claims take it first (returned work). Ids that one
    call puts at the front of one queue keep their request order."""


@dataclass(frozen=True)
class TransitionResult:
    """Outcome of one transition. ``ok`` False means nothing was written."""

    kind: str
    id: str
    ok: bool
    previous: str | None
    """State before (or the current state when not ``ok``); ``None`` if the entity does not exist."""
    state: str
    """The state requested."""
    attempt: int
    time: float

    def raise_for_error(self) -> TransitionResult:
        """Raise :class:`NotFoundError` / :class:`IllegalTransitionError` unless ``ok``; return self."""
        if self.ok:
            return self
        if self.previous is None:
            raise NotFoundError(f"{self.kind} {self.id!r} does not exist")
        raise IllegalTransitionError(self.kind, self.id, self.previous, self.state)


@dataclass(frozen=True)
class Event:
    """One entry of the event stream."""

    cursor: str
    """Backend position; strictly increasing in stream order; opaque (compare only with the backend)."""
    entity: str
    """Entity kind (``cu``, ``pilot``, ``du``) or a record type such as ``transfer``."""
    id: str
    from_state: str | None
    to_state: str | None
    time: float
    pilot: str | None
    attempt: int
    detail: dict[str, Any]
    """The move's detail. A ComputeUnit's creation event (``from_state`` ``None``, ``to_state`` New)
    carries the facts about it that never change, so readers of the stream need not read its record:
    ``{"run": ..., "name": ..., "slots": ...}`` (its run, its description's ``name`` and
    ``number_of_processes``; each ``None`` when absent). Other creation events: ``{}``."""
    detail_text: str | None = field(default=None, repr=False, compare=False)
    """``detail`` as the backend holds it (compact JSON), when the backend read it as text: a reader that
    stores the detail again (the history writer) need not encode it once more. ``None``: encode ``detail``."""


@dataclass(frozen=True)
class RequeueResult:
    """What :meth:`Coordination.requeue_lost` did with a lost pilot's claimed work."""

    pilot: str
    requeued: list[str]
    """CU ids put back on the shared queue (returned to Pending; attempt+1 if they had started)."""
    failed: list[str]
    """CU ids moved to Failed because their lost-task reassign budget was used up."""
    dropped: list[str]
    """CU ids that were already final; removed from the in-progress list only."""


class Coordination(ABC):
    """Shared state of one namespace. Thread-safe for use by several threads of one process."""

    namespace: str

    # ----------------------------------------------------------------- lifecycle
    @property
    @abstractmethod
    def url(self) -> str:
        """The backend URL with any password removed (safe to print and log)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~pilotdata.errors.CoordinationError` unless the backend answers."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. Further calls are errors."""

    def __enter__(self) -> Coordination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ entities
    def create(self, kind: Kind | str, entity_id: str, data: Mapping[str, Any]) -> EntityRecord:
        """Create an entity in state New and append its creation event (from ``None`` to ``New``).

        Raises :class:`~pilotdata.errors.AlreadyExistsError` if the id is taken.
        """
        self.create_many(kind, [(entity_id, data)])
        return self.get(kind, entity_id)

    @abstractmethod
    def create_many(
        self, kind: Kind | str, items: Sequence[tuple[str, Mapping[str, Any]]], *, binder: str | None = None,
        queue: str | None = None, detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Create many entities in one round trip / transaction (all or nothing).

        ``binder`` (CUs only): the client that will bind them. They are recorded as *unbound*, held by
        that binder's lease (:meth:`hold_unbound`), in the same atomic step as their creation; leaving
        New (a bind, a cancel, a failure) takes them out of it. If the lease lapses before they are
        bound (the client died), :meth:`adopt_unbound` hands them out, so a client's death never
        strands a recorded CU.

        ``queue`` (CUs only, not with ``binder``): CUs bound as they are recorded. Each is created and
        moved New -> Pending at the back of that queue (``""``: the shared queue, else that pilot's), in
        order, with ``detail`` as the move's detail, in the same atomic step: both events are appended,
        exactly as a create followed by :meth:`transition_many` with ``queue`` would record them, with
        no moment at which a CU is New.
        """

    @abstractmethod
    def get(self, kind: Kind | str, entity_id: str) -> EntityRecord:
        """Return one entity; :class:`~pilotdata.errors.NotFoundError` if it does not exist."""

    @abstractmethod
    def get_many(self, kind: Kind | str, entity_ids: Sequence[str]) -> list[EntityRecord | None]:
        """Return entities in the order asked; ``None`` for ids that do not exist."""

    def states(self, kind: Kind | str, entity_ids: Sequence[str]) -> list[str | None]:
        """The states of entities in the order asked (``None`` where missing), without their data.

        Backends answer from the state field alone; waiting for thousands of CUs reads no descriptions.
        """
        return [None if r is None else r.state for r in self.get_many(kind, entity_ids)]

    @abstractmethod
    def list_ids(self, kind: Kind | str) -> list[str]:
        """All ids of ``kind`` in this namespace (from an index, never a key scan), sorted."""

    @abstractmethod
    def update_data(self, kind: Kind | str, entity_id: str, patch: Mapping[str, Any]) -> None:
        """Set top-level keys of the entity's ``data`` atomically; a ``None`` value deletes the key.

        Raises :class:`~pilotdata.errors.NotFoundError` if the entity does not exist.
        """

    @abstractmethod
    def delete(self, kind: Kind | str, entity_id: str) -> None:
        """Remove an entity and its index entry (no-op if absent). Its events stay."""

    def exists(self, kind: Kind | str, entity_id: str) -> bool:
        """Whether the entity exists."""
        return self.get_many(kind, [entity_id])[0] is not None

    # ---------------------------------------------------------------- transitions
    @abstractmethod
    def transition_many(
        self, kind: Kind | str, requests: Sequence[TransitionRequest]
    ) -> list[TransitionResult]:
        """Apply many transitions in one round trip; each is checked and applied atomically on its own.

        A request whose move is not in the table (or whose ``expected`` does not match, or whose
        entity is missing) writes nothing and comes back with ``ok=False``.
        """

    def transition(
        self,
        kind: Kind | str,
        entity_id: str,
        to: str,
        *,
        expected: str | None = None,
        pilot: str | None = None,
        detail: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> TransitionResult:
        """Move one entity to ``to``: the single choke point for state changes.

        ``data`` keys are set in the same atomic step (like :meth:`update_data`), only if the move applies.
        Raises :class:`~pilotdata.errors.IllegalTransitionError` when the table (or ``expected``) forbids
        it and :class:`~pilotdata.errors.NotFoundError` when the entity does not exist.
        """
        req = TransitionRequest(entity_id, str(to), expected, pilot, detail, data)
        return self.transition_many(kind, [req])[0].raise_for_error()

    # -------------------------------------------------------------------- queues
    @abstractmethod
    def enqueue(self, cu_ids: Sequence[str], pilot: str | None = None, *, front: bool = False) -> None:
        """Append CU ids to a pilot's queue (or the shared queue when ``pilot`` is None).

        ``front=True`` puts them where the next :meth:`claim` takes them first (used for returned work).
        """

    @abstractmethod
    def claim(self, pilot: str, *, limit: int = 1, timeout: float = 0.0) -> list[str]:
        """Take up to ``limit`` CU ids, own queue first, then the shared queue, oldest first.

        Each id moves atomically into ``pilot``'s in-progress list. Blocks up to ``timeout`` seconds
        while both queues are empty (0: do not block). Returns ``[]`` on timeout.
        """

    @abstractmethod
    def claimed(self, pilot: str) -> list[str]:
        """The in-progress list of ``pilot``."""

    @abstractmethod
    def release(self, pilot: str, cu_ids: Sequence[str]) -> None:
        """Remove finished CU ids from ``pilot``'s in-progress list."""

    @abstractmethod
    def unclaim(self, pilot: str, cu_ids: Sequence[str], *, to_pilot: str | None = None) -> None:
        """Atomically move claimed-but-unstarted ids back to the front of a queue (shared by default)."""

    @abstractmethod
    def queued(self, pilot: str | None = None) -> list[str]:
        """The ids waiting in a pilot's queue (or the shared queue), in claim order."""

    @abstractmethod
    def queue_lengths(self, pilots: Iterable[str]) -> dict[str, int]:
        """Queue length per pilot id; key ``""`` (:data:`SHARED_QUEUE`) for the shared queue if asked."""

    @abstractmethod
    def dequeue(self, cu_id: str) -> bool:
        """Remove a queued (unclaimed) id from whichever queue holds it; True if it was found."""

    # ------------------------------------------------------------------ liveness
    @abstractmethod
    def heartbeat(self, pilot: str, ttl: float) -> None:
        """Mark ``pilot`` alive for ``ttl`` seconds and add it to the live set."""

    @abstractmethod
    def is_alive(self, pilot: str) -> bool:
        """Whether ``pilot``'s heartbeat has not expired."""

    @abstractmethod
    def expired_pilots(self) -> list[str]:
        """Pilots in the live set whose heartbeat has expired (candidates for :meth:`requeue_lost`)."""

    @abstractmethod
    def retire(self, pilot: str) -> None:
        """Remove ``pilot`` from the live set and its heartbeat (an orderly exit)."""

    @abstractmethod
    def requeue_lost(self, pilot: str, max_reassign: int, *, force: bool = False) -> RequeueResult:
        """Take back the claimed work of a lost pilot, atomically; at most one caller gets it.

        Acts only if ``pilot`` is in the live set and its heartbeat has expired (or ``force``, for a
        pilot known dead, e.g. its batch job ended); removes it from the live set. For each claimed CU:
        a final one is dropped from the list; a Pending one (claimed, never started) goes back to the
        shared queue unchanged; a started one returns to Pending with attempt+1 and goes to the front
        of the shared queue while ``attempt < max_reassign``, and otherwise becomes Failed with the
        reason in its detail. All of it is one atomic step (Lua script / one transaction).
        """

    # ------------------------------------------------------------------ unbound
    @abstractmethod
    def hold_unbound(self, binder: str, ttl: float) -> None:
        """Renew ``binder``'s lease on the unbound CUs it recorded for ``ttl`` seconds (``ttl`` 0 ends it).

        A binder renews it more often than ``ttl`` for as long as it keeps CUs unbound (late binding);
        ``binder`` is 1-128 characters of letters, digits and ``._:-``.
        """

    @abstractmethod
    def unbound(self, binder: str | None = None) -> list[str]:
        """The unbound CUs of ``binder`` (of every binder when ``None``), in the order they were recorded."""

    @abstractmethod
    def adopt_unbound(self) -> list[str]:
        """Hand out the unbound CUs of every binder whose lease has lapsed, atomically; return their ids.

        Each still-New CU moves to Pending onto the back of the shared queue (any pilot may run it),
        with ``{"reason": ..., "adopted_from": binder}`` as the event detail; the binder's unbound set
        is then forgotten. One atomic step (Lua script / transaction): of several concurrent adopters
        exactly one gets each CU. Any live participant may call it (agents do on every heartbeat).
        """

    # -------------------------------------------------------------------- events
    @abstractmethod
    def record_event(
        self,
        entity: str,
        entity_id: str,
        detail: Mapping[str, Any],
        *,
        pilot: str | None = None,
    ) -> None:
        """Append a non-transition event (e.g. ``entity="transfer"`` with bytes/seconds/source/dest)."""

    @abstractmethod
    def events_after(self, cursor: str | None, *, limit: int = 1000, block: float = 0.0) -> list[Event]:
        """Events strictly after ``cursor`` (``None``: from the oldest kept), oldest first.

        With ``block`` > 0, waits up to that many seconds for at least one event when none is there.
        """

    @abstractmethod
    def last_cursor(self) -> str | None:
        """Cursor of the newest event, or ``None`` if the stream is empty."""

    @abstractmethod
    def trim_events(self, upto: str) -> int:
        """Drop events at or before ``upto`` (after the history writer has stored them). Returns count."""


def now() -> float:
    """Wall-clock time in epoch seconds, as every backend stamps it."""
    return time.time()
