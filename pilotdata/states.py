"""States of pilots, ComputeUnits and DataUnits, and their transition tables.

Each entity has a ``str`` Enum (values read the same in ``redis-cli``, SQL and Python) and one
transition table. This module is pure: it says which transitions are legal. The single function
that *performs* a transition is :meth:`pilotdata.coordination.Coordination.transition`: it consults
these tables (through :func:`allowed_sources`), writes the new state and its timestamp atomically, and
appends the history event. Nothing else writes a state.

Rules:

* A transition not in the table raises :class:`~pilotdata.errors.IllegalTransitionError`.
* Final states (Done, Failed, Canceled) have no way out: they are sticky.
* A ComputeUnit that fails in a retryable way returns to Pending from StagingInput, Running or
  StagingOutput; that move increments its ``attempt`` (see :func:`increments_attempt`).

ComputeUnit::

    New -> Pending -> StagingInput -> Running -> StagingOutput -> Done
      \\        \\            \\            \\            \\-> Failed | Canceled | Pending (retry)
       `-> Failed | Canceled (from every non-final state)

Pilot::

    New -> Pending (submitted / queued in a batch system) -> Running (agent heartbeating) -> Done | Failed | Canceled

DataUnit::

    New -> Pending (transferring) -> Running (at least one complete replica) -> Done | Failed | Canceled
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from pilotdata.errors import IllegalTransitionError


class Kind(str, Enum):
    """The kinds of entity that coordination stores."""

    PILOT = "pilot"
    """A PilotCompute: an agent with slots on a resource."""
    CU = "cu"
    """A ComputeUnit: one task."""
    DU = "du"
    """A DataUnit: an immutable named set of files with replicas."""
    PD = "pd"
    """A PilotData store. PDs carry no state machine (they are registered or removed)."""
    RUN = "run"
    """A run: groups the CUs and DUs of one session (:mod:`pilotdata.runs`). No state machine."""

    def __str__(self) -> str:
        return self.value


class ComputeUnitState(str, Enum):
    """States of a ComputeUnit."""

    NEW = "New"
    """Described and recorded, not yet placed."""
    PENDING = "Pending"
    """Queued: placed on a pilot's queue or on the shared queue, waiting for a slot."""
    STAGING_INPUT = "StagingInput"
    """Claimed by an agent; input DataUnits are being fetched into the pilot cache / sandbox."""
    RUNNING = "Running"
    """The executable is running."""
    STAGING_OUTPUT = "StagingOutput"
    """The executable exited 0; outputs are being uploaded into their DataUnits."""
    DONE = "Done"
    """Completed successfully (final)."""
    FAILED = "Failed"
    """Failed: non-zero exit, staging failure, timeout, or retries exhausted (final)."""
    CANCELED = "Canceled"
    """Canceled by the user (final)."""

    def __str__(self) -> str:
        return self.value


class PilotState(str, Enum):
    """States of a PilotCompute."""

    NEW = "New"
    """Described, not yet submitted."""
    PENDING = "Pending"
    """Submitted to its resource; for a batch system, queued."""
    RUNNING = "Running"
    """The agent registered and heartbeats."""
    DONE = "Done"
    """The agent ended normally (walltime, stop request, batch job ended) (final)."""
    FAILED = "Failed"
    """The agent or its batch job failed, or its heartbeat expired (final)."""
    CANCELED = "Canceled"
    """Canceled by the user (final)."""

    def __str__(self) -> str:
        return self.value


class DataUnitState(str, Enum):
    """States of a DataUnit."""

    NEW = "New"
    """Described, no replica started."""
    PENDING = "Pending"
    """Its first replica is being transferred."""
    RUNNING = "Running"
    """At least one complete, verified replica exists: the DU is usable."""
    DONE = "Done"
    """Closed for good; its replicas stay readable (final)."""
    FAILED = "Failed"
    """Every replica attempt failed; the reason is recorded (final)."""
    CANCELED = "Canceled"
    """Removed or canceled by the user (final)."""

    def __str__(self) -> str:
        return self.value


class State:
    """BigJob's ``State`` constants, for scripts written against the Pilot-API.

    The values are plain strings equal to the members of the per-entity enums, so
    ``cu.get_state() == State.Done`` works whichever enum the object returns.
    """

    Unknown = "Unknown"
    New = "New"
    Pending = "Pending"
    StagingInput = "StagingInput"
    Running = "Running"
    StagingOutput = "StagingOutput"
    Done = "Done"
    Canceled = "Canceled"
    Failed = "Failed"


_CU = ComputeUnitState
_P = PilotState
_D = DataUnitState

CU_TRANSITIONS: Mapping[ComputeUnitState, frozenset[ComputeUnitState]] = {
    _CU.NEW: frozenset({_CU.PENDING, _CU.FAILED, _CU.CANCELED}),
    _CU.PENDING: frozenset({_CU.STAGING_INPUT, _CU.RUNNING, _CU.FAILED, _CU.CANCELED}),
    _CU.STAGING_INPUT: frozenset({_CU.RUNNING, _CU.PENDING, _CU.FAILED, _CU.CANCELED}),
    _CU.RUNNING: frozenset({_CU.STAGING_OUTPUT, _CU.DONE, _CU.PENDING, _CU.FAILED, _CU.CANCELED}),
    _CU.STAGING_OUTPUT: frozenset({_CU.DONE, _CU.PENDING, _CU.FAILED, _CU.CANCELED}),
    _CU.DONE: frozenset(),
    _CU.FAILED: frozenset(),
    _CU.CANCELED: frozenset(),
}

PILOT_TRANSITIONS: Mapping[PilotState, frozenset[PilotState]] = {
    _P.NEW: frozenset({_P.PENDING, _P.RUNNING, _P.FAILED, _P.CANCELED}),
    _P.PENDING: frozenset({_P.RUNNING, _P.DONE, _P.FAILED, _P.CANCELED}),
    _P.RUNNING: frozenset({_P.DONE, _P.FAILED, _P.CANCELED}),
    _P.DONE: frozenset(),
    _P.FAILED: frozenset(),
    _P.CANCELED: frozenset(),
}

DU_TRANSITIONS: Mapping[DataUnitState, frozenset[DataUnitState]] = {
    _D.NEW: frozenset({_D.PENDING, _D.RUNNING, _D.FAILED, _D.CANCELED}),
    _D.PENDING: frozenset({_D.RUNNING, _D.FAILED, _D.CANCELED}),
    _D.RUNNING: frozenset({_D.DONE, _D.FAILED, _D.CANCELED}),
    _D.DONE: frozenset(),
    _D.FAILED: frozenset(),
    _D.CANCELED: frozenset(),
}

_TABLES: dict[Kind, Mapping[str, frozenset[str]]] = {
    Kind.CU: {k.value: frozenset(v.value for v in vs) for k, vs in CU_TRANSITIONS.items()},
    Kind.PILOT: {k.value: frozenset(v.value for v in vs) for k, vs in PILOT_TRANSITIONS.items()},
    Kind.DU: {k.value: frozenset(v.value for v in vs) for k, vs in DU_TRANSITIONS.items()},
}

FINAL_STATES: frozenset[str] = frozenset(state.value for state, targets in CU_TRANSITIONS.items() if not targets)
"""Final (sticky) states, shared by every kind: the states of the transition tables with no way out
(Done, Failed, Canceled; the same in every table). Plain values, so they print and serialise as the
states do; ``str`` enums compare equal to them (``PilotState.DONE in FINAL_STATES``)."""

_RETRY_SOURCES: frozenset[str] = frozenset(s.value for s in (_CU.STAGING_INPUT, _CU.RUNNING, _CU.STAGING_OUTPUT))


def _table(kind: Kind | str) -> Mapping[str, frozenset[str]]:
    try:
        return _TABLES[Kind(kind)]
    except (KeyError, ValueError):
        raise ValueError(f"kind {str(kind)!r} has no state machine; expected one of cu, pilot, du") from None


def initial_state(kind: Kind | str) -> str:
    """The state every new entity of ``kind`` starts in (``"New"``)."""
    _table(kind)
    return ComputeUnitState.NEW.value  # the same value in every kind


def is_final(state: str | None) -> bool:
    """True for Done, Failed and Canceled (False for ``None``: an event that is no transition)."""
    return state is not None and str(state) in FINAL_STATES


def is_legal(kind: Kind | str, current: str, target: str) -> bool:
    """Whether ``current -> target`` is in the transition table of ``kind``."""
    return str(target) in _table(kind).get(str(current), frozenset())


def check_transition(kind: Kind | str, entity_id: str, current: str, target: str) -> None:
    """Raise :class:`IllegalTransitionError` unless ``current -> target`` is legal for ``kind``."""
    if not is_legal(kind, current, target):
        raise IllegalTransitionError(str(kind), entity_id, str(current), str(target))


def allowed_sources(kind: Kind | str, target: str) -> frozenset[str]:
    """Every state from which ``target`` may be reached (backends check this atomically)."""
    table = _table(kind)
    target = str(target)
    if target not in table:
        raise ValueError(f"{target!r} is not a {Kind(kind).value} state; expected one of {sorted(table)}")
    return frozenset(src for src, targets in table.items() if target in targets)


def increments_attempt(kind: Kind | str, current: str, target: str) -> bool:
    """True when ``current -> target`` is a ComputeUnit retry (back to Pending): attempt += 1."""
    return Kind(kind) is Kind.CU and str(target) == _CU.PENDING and str(current) in _RETRY_SOURCES


def states_of(kind: Kind | str) -> list[str]:
    """All state names of ``kind`` in table order."""
    return list(_table(kind))
