"""Cleaning up: what ``pdata gc`` removes, and how a workflow removes its own records.

Nothing here runs by itself. Each ``plan_*`` function looks and returns :class:`Planned` items (what,
which, why, bytes freed) without changing anything; :meth:`Planned.apply` does one. ``pdata gc``
prints the plan (``--dry-run``) or applies it. The rules:

* **DataUnits whose replicas are gone** (:func:`plan_gone_replicas`): a replica marked complete whose
  store was deregistered, or whose directory the store says is not there, is forgotten; a DataUnit
  left with no replica is removed. A store that cannot be reached is never taken as empty.
* **Finished runs older than an age** (:func:`plan_runs`): every CU ended and nothing happened for
  the age; its CU records (and their sandboxes on this host) and the run record go, its DataUnits
  too with ``data=True`` (their replicas deleted). The history keeps everything that happened.
* **Sandboxes and pilot caches by retention** (:func:`plan_pilot_files`): on this host, the working
  directory (sandboxes, cache, agent log) of a pilot that ended longer ago than the age, the
  sandboxes of CUs that ended longer ago on live pilots, and pilot directories no record names.
  The cache of a live pilot is never touched (its agent relies on it).
* **Stale part files** (:func:`plan_part_files`): ``.NAME.part-TOKEN`` files a killed copy left in a
  store or a pilot cache's ``tmp/``, older than an age (a copy in progress is younger).
* **Empty namespaces** (:func:`plan_empty_namespaces`): a namespace of this coordination that the
  history knows and that holds no record any more: its event stream is drained into the history,
  then trimmed, so nothing of it is left in the backend.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilotdata.coordination import Coordination, connect
from pilotdata.errors import IllegalTransitionError, NotFoundError, PilotDataError
from pilotdata.records import RUN, complete_replicas, du_size, replica_removal, replicas
from pilotdata.runs import list_runs
from pilotdata.states import ComputeUnitState, DataUnitState, Kind, is_final

__all__ = ["PART_FILE", "Planned", "plan_empty_namespaces", "plan_gone_replicas", "plan_part_files",
           "plan_pilot_files", "plan_runs", "remove_run"]

PART_FILE = re.compile(r"(^|/)\.[^/]*\.part-[0-9A-Za-z]+$")
"""The name of a transfer's temporary file (``.NAME.part-TOKEN``, see :func:`transfer.paths.part_name`)."""


@dataclass
class Planned:
    """One thing to remove: ``what`` (a kind of thing), ``target`` (its id or path), ``reason``, the bytes
    it frees when known, and how to remove it."""

    what: str
    target: str
    reason: str
    bytes: int | None = None
    apply: Callable[[], None] = field(default=lambda: None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, without the action."""
        return {"what": self.what, "target": self.target, "reason": self.reason, "bytes": self.bytes}


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _rmtree(path: Path) -> Callable[[], None]:
    def run() -> None:
        for root, dirs, _files in os.walk(path):  # task files are read-only: let rmtree delete them
            for d in dirs:
                try:
                    os.chmod(os.path.join(root, d), 0o755)
                except OSError:
                    pass
        shutil.rmtree(path, ignore_errors=True)

    return run


# ------------------------------------------------------------------ DataUnits
def plan_gone_replicas(coord: Coordination) -> list[Planned]:
    """Replicas whose data is gone, and DataUnits left with none (see the module docstring)."""
    from pilotdata.data import open_pd_store

    stores = set(coord.list_ids(Kind.PD))
    out: list[Planned] = []
    for rec in coord.get_many(Kind.DU, coord.list_ids(Kind.DU)):
        if rec is None or rec.state not in (DataUnitState.RUNNING, DataUnitState.DONE):
            continue
        complete = complete_replicas(rec)
        gone: dict[str, str] = {}
        for pd_id in complete:
            if pd_id not in stores:
                gone[pd_id] = f"store {pd_id} is deregistered"
                continue
            try:
                store = open_pd_store(coord, pd_id)
                if not store.exists(rec.id):
                    gone[pd_id] = f"{store.url.rstrip('/')}/{rec.id} is missing"
            except PilotDataError:
                continue  # unreachable or unusable: not evidence that the data is gone
        if not gone:
            continue
        du_id = rec.id

        def forget(du_id: str = du_id, pds: Sequence[str] = tuple(gone)) -> None:
            for pd_id in pds:
                coord.update_data(Kind.DU, du_id, replica_removal(pd_id))

        if set(gone) == set(complete):
            def remove(du_id: str = du_id, forget: Callable[[], None] = forget) -> None:
                forget()
                try:
                    coord.transition(Kind.DU, du_id, DataUnitState.CANCELED,
                                     detail={"reason": "every replica is gone (pdata gc)"})
                except (IllegalTransitionError, NotFoundError):
                    pass
                coord.delete(Kind.DU, du_id)

            out.append(Planned("dataunit", du_id, "no replica left: " + "; ".join(gone.values()), None, remove))
        else:
            for pd_id, why in gone.items():
                out.append(Planned("replica", f"{du_id} on {pd_id}", why, None,
                                   _forget_replica(coord, du_id, pd_id)))
    return out


def _forget_replica(coord: Coordination, du_id: str, pd_id: str) -> Callable[[], None]:
    return lambda: coord.update_data(Kind.DU, du_id, replica_removal(pd_id))


# ------------------------------------------------------------------ runs
def remove_run(coord: Coordination, run_id: str, *, cu_ids: Iterable[str] | None = None, data: bool = False,
               sandboxes: bool = True) -> list[Planned]:
    """Remove a run's records now: its (final) CUs and their sandboxes on this host, its DataUnits with
    ``data`` (replicas deleted), and the run. CUs still active are canceled first. Returns what went.

    ``cu_ids``: the run's CUs if the caller knows them (from the history's index); otherwise the
    namespace's CU records are read to find them.
    """
    plan = _run_plan(coord, run_id, cu_ids, data=data, sandboxes=sandboxes, reason="removed by its workflow")
    for item in plan:
        item.apply()
    return plan


def _run_plan(coord: Coordination, run_id: str, cu_ids: Iterable[str] | None, *, data: bool, sandboxes: bool,
              reason: str) -> list[Planned]:
    from pilotdata.data import ReplicaManager

    if cu_ids is None:
        records = [r for r in coord.get_many(Kind.CU, coord.list_ids(Kind.CU)) if r is not None
                   and r.data.get(RUN) == run_id]
    else:
        records = [r for r in coord.get_many(Kind.CU, list(cu_ids)) if r is not None]
    plan: list[Planned] = []
    freed = 0
    boxes: list[Path] = []
    for rec in records:
        box = rec.data.get("sandbox")
        if sandboxes and box and Path(box).is_dir():
            boxes.append(Path(box))
            freed += _dir_size(Path(box))
    ids = [r.id for r in records]

    def remove_cus() -> None:
        for cu_id in ids:
            try:
                rec = coord.get(Kind.CU, cu_id)
            except NotFoundError:
                continue
            if not is_final(rec.state):
                coord.dequeue(cu_id)
                try:
                    coord.transition(Kind.CU, cu_id, ComputeUnitState.CANCELED,
                                     detail={"reason": f"run {run_id} {reason}"})
                except IllegalTransitionError:
                    pass
            coord.delete(Kind.CU, cu_id)
        for box in boxes:
            _rmtree(box)()

    if ids:
        plan.append(Planned("compute units", f"{len(ids)} of run {run_id}", reason, freed or None, remove_cus))
    if data:
        ops = ReplicaManager(coord)
        for du in coord.get_many(Kind.DU, coord.list_ids(Kind.DU)):
            if du is not None and du.data.get(RUN) == run_id:
                size = du_size(du) * max(1, len(replicas(du)))
                plan.append(Planned("dataunit", du.id, f"of run {run_id} ({len(replicas(du))} replicas)", size,
                                    _remove_du(coord, ops, du.id)))

    def remove_record() -> None:
        if coord.exists(Kind.RUN, run_id):
            coord.record_event(Kind.RUN.value, run_id, {"removed": time.time()})
            coord.delete(Kind.RUN, run_id)

    plan.append(Planned("run", run_id, reason, None, remove_record))
    return plan


def _remove_du(coord: Coordination, ops: Any, du_id: str) -> Callable[[], None]:
    def remove() -> None:
        try:
            ops.remove(du_id)
        except NotFoundError:
            return
        coord.delete(Kind.DU, du_id)

    return remove


def plan_runs(coord: Coordination, runs: Iterable[Any], older_than: float, *, data: bool = False,
              now: float | None = None, cu_ids: Callable[[str], list[str]] | None = None) -> list[Planned]:
    """Finished runs older than ``older_than`` seconds: their records (see the module docstring).

    ``runs`` are :class:`pilotdata.inspect.RunSummary` values; ``cu_ids(run)`` lists a run's CUs.
    """
    now = time.time() if now is None else now
    current = max(list_runs(coord), key=lambda r: (r.created, r.id), default=None)
    out: list[Planned] = []
    for run in runs:
        if not run.in_coordination or not run.finished:
            continue
        if current is not None and run.id == current.id and current.is_open:
            continue  # the run new submissions join
        last = max(t for t in (run.last_end, run.last_update, run.closed, run.created) if t is not None)
        if now - last < older_than:
            continue
        ids = cu_ids(run.id) if cu_ids is not None else None
        age = f"finished, nothing for {_age(now - last)}"
        out += _run_plan(coord, run.id, ids, data=data, sandboxes=True, reason=age)
    return out


def _age(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{int(seconds // length)}{unit}"
    return f"{int(seconds)}s"


# ------------------------------------------------------------------ pilot files
def _local_workdir(rec: Any) -> Path | None:
    """A pilot's working directory when it is on this host."""
    import socket

    workdir = rec.data.get("workdir")
    host = rec.data.get("host")
    if not workdir or (host and host != socket.gethostname()):
        return None
    path = Path(workdir)
    return path if path.is_dir() else None


def plan_pilot_files(coord: Coordination, older_than: float, *, pilots_dir: Path | None = None,
                     ended_cus: Callable[[str, float], list[str]] | None = None,
                     now: float | None = None) -> list[Planned]:
    """Sandboxes and caches kept longer than ``older_than`` seconds, on this host (module docstring).

    ``pilots_dir``: where pilots of this machine keep their directories by default (for orphans);
    ``ended_cus(pilot, before)``: ids of the CUs that ended on ``pilot`` before ``before``.
    """
    now = time.time() if now is None else now
    cutoff = now - older_than
    out: list[Planned] = []
    known: set[str] = set()
    for rec in coord.get_many(Kind.PILOT, coord.list_ids(Kind.PILOT)):
        if rec is None:
            continue
        known.add(rec.id)
        workdir = _local_workdir(rec)
        if workdir is None:
            continue
        if is_final(rec.state):
            ended = rec.times.get(rec.state, rec.updated)
            if ended < cutoff:
                out.append(Planned("pilot directory", str(workdir),
                                   f"pilot {rec.id} {rec.state} {_age(now - ended)} ago (sandboxes, cache, log)",
                                   _dir_size(workdir), _rmtree(workdir)))
            continue
        if ended_cus is None:
            continue
        ids = ended_cus(rec.id, cutoff)
        for start in range(0, len(ids), 500):
            for cu in coord.get_many(Kind.CU, ids[start:start + 500]):
                box = cu.data.get("sandbox") if cu is not None else None
                if cu is not None and box and Path(box).is_dir() and Path(box).parent == workdir:
                    out.append(Planned("sandbox", box, f"{cu.id} {cu.state} more than {_age(older_than)} ago",
                                       _dir_size(Path(box)), _rmtree(Path(box))))
    if pilots_dir is not None and pilots_dir.is_dir():
        for path in sorted(pilots_dir.iterdir()):
            if path.is_dir() and path.name not in known and path.stat().st_mtime < cutoff:
                out.append(Planned("pilot directory", str(path), "no pilot record names it",
                                   _dir_size(path), _rmtree(path)))
    return out


# ------------------------------------------------------------------ part files
def _mtime(info: dict[str, Any]) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


def plan_part_files(coord: Coordination, older_than: float, *, now: float | None = None) -> list[Planned]:
    """Part files older than ``older_than`` seconds in the stores and in live local pilots' caches."""
    from pilotdata.data import open_pd_store

    now = time.time() if now is None else now
    cutoff = now - older_than
    out: list[Planned] = []
    for pd_id in coord.list_ids(Kind.PD):
        try:
            store = open_pd_store(coord, pd_id)
            files = store.files("")
        except (PilotDataError, OSError):
            continue
        for name, size in sorted(files.items()):
            if not PART_FILE.search(name):
                continue
            try:
                mtime = _mtime(store.info(name))
            except (PilotDataError, OSError):
                continue
            if mtime is not None and mtime < cutoff:
                out.append(Planned("part file", f"{store.url.rstrip('/')}/{name}",
                                   f"an unfinished copy, {_age(now - mtime)} old", size, _remove_file(store, name)))
    for rec in coord.get_many(Kind.PILOT, coord.list_ids(Kind.PILOT)):
        if rec is None or is_final(rec.state):
            continue
        workdir = _local_workdir(rec)
        tmp = workdir / ".cache" / "tmp" if workdir is not None else None
        if tmp is None or not tmp.is_dir():
            continue
        for path in sorted(tmp.iterdir()):
            if path.stat().st_mtime < cutoff:
                out.append(Planned("part file", str(path), f"an unfinished cache fetch of pilot {rec.id}",
                                   _dir_size(path) if path.is_dir() else path.stat().st_size, _rmtree(path)))
    return out


def _remove_file(store: Any, name: str) -> Callable[[], None]:
    return lambda: store.rm(name)


# ------------------------------------------------------------------ namespaces
def plan_empty_namespaces(coord: Coordination, history: Any, url: str) -> list[Planned]:
    """Namespaces of ``coord``'s backend known to ``history`` that hold no record (module docstring).

    ``url``: the backend's URL as ``coord`` was opened with it (with its password, if any).
    """
    from pilotdata.history import queries, source_id

    out: list[Planned] = []
    suffix = "@" + source_id(coord).split("@", 1)[1]
    for source in queries.sources(history):
        if not source.endswith(suffix):
            continue
        namespace = source[: -len(suffix)]
        if namespace == coord.namespace:
            continue
        try:
            other = connect(url, namespace)
        except PilotDataError:
            continue
        try:
            if any(other.list_ids(kind) for kind in Kind) or other.last_cursor() is None:
                continue
        except PilotDataError:
            continue
        finally:
            other.close()
        out.append(Planned("namespace", namespace, "no record left: its events are in the history", None,
                           _trim_namespace(url, namespace, history)))
    return out


def _trim_namespace(url: str, namespace: str, history: Any) -> Callable[[], None]:
    from pilotdata.history import HistoryWriter

    def trim() -> None:
        ns = connect(url, namespace)
        try:
            HistoryWriter(ns, history).drain()
            last = ns.last_cursor()
            if last is not None:
                ns.trim_events(last)
        finally:
            ns.close()

    return trim
