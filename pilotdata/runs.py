"""Runs: the CUs and DataUnits of one session, grouped under one id.

A **run** groups the ComputeUnits and DataUnits of one :class:`~pilotdata.services.ComputeDataService`,
or of one sequence of ``pdata submit`` / ``pdata put`` commands, or whatever the user names
(``--run NAME``, the ``PDATA_RUN`` environment variable, ``ComputeDataService(run=NAME)``). Each CU and
DU records its run's id in its data (:data:`pilotdata.records.RUN`); the run itself is a coordination
entity of kind :attr:`~pilotdata.states.Kind.RUN` (no state machine) whose data says who started it
(:class:`Origin`) and when it was closed.

**The current run** of a namespace is the run started last in it. ``pdata wait``, ``pdata report``,
``pdata cu ls`` and ``pdata resubmit`` work on it unless a run is named.

**Which run new work joins** (:func:`run_for`):

* a named run (argument, ``--run``, ``PDATA_RUN``): that run, started if it does not exist yet;
* a ComputeDataService: a run of its own, started with its first submission and closed by
  :meth:`~pilotdata.services.ComputeDataService.close`;
* ``pdata submit`` / ``pdata put``: the current run while it is an *open* command-line run, else a new
  one. A command-line run closes when ``pdata wait`` sees all its CUs end (or ``pdata run start``
  starts the next one), so "submit, submit, wait" is one run and the next submission starts another.

Run ids are names the user may type: ``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``; generated ones read
``run-YYYYmmdd-HHMMSS-xxxx`` (local time, then 4 random hex digits).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pilotdata.coordination import Coordination, EntityRecord
from pilotdata.errors import AlreadyExistsError, DescriptionError, NotFoundError, did_you_mean
from pilotdata.states import Kind

__all__ = ["RUN_ENV", "Origin", "Run", "close_run", "current_run", "list_runs", "new_run_id", "resolve_run",
           "run_for", "start_run", "validate_run_name"]

RUN_ENV = "PDATA_RUN"
"""Environment variable naming the run that new work joins (and that commands default to)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Origin(str, Enum):
    """Who started a run."""

    CDS = "cds"
    """A ComputeDataService (its own run)."""
    CLI = "cli"
    """``pdata submit`` / ``pdata put`` / ``pdata run start`` (joined by later commands while open)."""
    USER = "user"
    """Named by the user (``--run``, ``PDATA_RUN``, ``ComputeDataService(run=...)``)."""
    RESUBMIT = "resubmit"
    """``pdata resubmit``: the failed CUs of another run, submitted again."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Run:
    """One run as recorded in coordination."""

    id: str
    origin: str
    created: float
    """When it was started (epoch seconds)."""
    closed: float | None = None
    """When it was closed (no more work joins it by default), ``None`` while open."""
    cds: str | None = None
    """The ComputeDataService that started it, if one did."""
    parent: str | None = None
    """For a resubmission: the run whose failed CUs it resubmits."""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        """Whether command-line submissions still join it."""
        return self.closed is None

    @classmethod
    def from_record(cls, rec: EntityRecord) -> Run:
        """The run of a coordination record of kind ``run``."""
        closed = rec.data.get("closed")
        return cls(rec.id, str(rec.data.get("origin") or Origin.USER.value), rec.created,
                   None if closed is None else float(closed), rec.data.get("cds"), rec.data.get("parent"),
                   dict(rec.data))


def validate_run_name(name: str, field_name: str = "run") -> str:
    """``name`` if it is a usable run id; :class:`DescriptionError` naming ``field_name`` otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DescriptionError(
            f"{field_name} {name!r}: a run name is 1-64 characters of letters, digits, '.', '_' and '-', "
            "starting with a letter or digit", field=field_name, value=name)
    return name


def new_run_id(now: float | None = None) -> str:
    """A fresh generated run id: ``run-YYYYmmdd-HHMMSS-xxxx``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return f"run-{stamp}-{uuid.uuid4().hex[:4]}"


def start_run(coord: Coordination, name: str | None = None, *, origin: Origin = Origin.USER,
              cds: str | None = None, parent: str | None = None) -> Run:
    """Record a new run (``name`` or a generated id) and return it; a named run that exists is returned."""
    run_id = validate_run_name(name) if name is not None else new_run_id()
    data: dict[str, Any] = {"origin": Origin(origin).value}
    if cds is not None:
        data["cds"] = cds
    if parent is not None:
        data["parent"] = parent
    try:
        return Run.from_record(coord.create(Kind.RUN, run_id, data))
    except AlreadyExistsError:
        if name is None:  # a generated id collided (4 hex digits within one second): draw again
            return start_run(coord, None, origin=origin, cds=cds, parent=parent)
        return Run.from_record(coord.get(Kind.RUN, run_id))


def get_run(coord: Coordination, run_id: str) -> Run | None:
    """The run ``run_id``, or ``None``."""
    rec = coord.get_many(Kind.RUN, [run_id])[0]
    return None if rec is None else Run.from_record(rec)


def list_runs(coord: Coordination) -> list[Run]:
    """Every run of the namespace, oldest first."""
    records = coord.get_many(Kind.RUN, coord.list_ids(Kind.RUN))
    return sorted((Run.from_record(r) for r in records if r is not None), key=lambda r: (r.created, r.id))


def current_run(coord: Coordination) -> Run | None:
    """The run started last in this namespace (``None`` if there is none)."""
    runs = list_runs(coord)
    return runs[-1] if runs else None


def close_run(coord: Coordination, run_id: str) -> None:
    """Mark a run closed: command-line submissions no longer join it (a no-op if it is gone or closed).

    The closing is also recorded as an event of the run, for the history.
    """
    run = get_run(coord, run_id)
    if run is not None and run.is_open:
        closed = time.time()
        try:
            coord.update_data(Kind.RUN, run_id, {"closed": closed})
        except NotFoundError:
            return
        coord.record_event(Kind.RUN.value, run_id, {"closed": closed})


def named_run(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The run the user named: ``explicit`` (an argument or ``--run``), else ``PDATA_RUN``, else ``None``."""
    if explicit:
        return validate_run_name(explicit)
    value = (os.environ if environ is None else environ).get(RUN_ENV)
    return validate_run_name(value, RUN_ENV) if value else None


def run_for(coord: Coordination, explicit: str | None = None, *, origin: Origin = Origin.CLI,
            cds: str | None = None) -> Run:
    """The run new work joins (see the module docstring): named, else an open command-line run, else new."""
    name = named_run(explicit)
    if name is not None:
        return start_run(coord, name, origin=Origin.USER, cds=cds)
    if origin is Origin.CLI:
        current = current_run(coord)
        if current is not None and current.is_open and current.origin == Origin.CLI.value:
            return current
    return start_run(coord, None, origin=origin, cds=cds)


def resolve_run(coord: Coordination, ref: str | None) -> Run | None:
    """The run ``ref`` names (``None``: ``PDATA_RUN``, else the current run; ``None`` if there is none).

    :class:`NotFoundError` names an unknown run (with the closest existing id).
    """
    name = named_run(ref)
    if name is None:
        return current_run(coord)
    run = get_run(coord, name)
    if run is None:
        raise NotFoundError(f"run {name!r} does not exist{did_you_mean(name, coord.list_ids(Kind.RUN))}")
    return run
