"""Input and output staging of CUs: DataUnits through the per-pilot cache, outputs into DataUnits.

**Input** (``input_data``): each DataUnit is fetched once per pilot into the pilot cache
(``<workdir>/.cache``, :class:`transfer.PilotCache`, keyed by DU id + manifest digest)
from a complete replica (read from the DU record's ``replica:<pd>`` keys; the PD record gives the
store) and then linked into each CU sandbox; ``{du: [files]}`` links only those files. What the cache
holds is published in the pilot's data as ``cached_dus`` (placement reads it). A DU that is still
being uploaded (New/Pending, no complete replica yet) is waited for, up to ``input_wait`` seconds.

**Output** (``output_data``: ``[{du: [globs]}]``): after exit code 0, the sandbox files matching the
globs are uploaded into every complete replica of the DU and added to its manifest through
:meth:`pilotdata.dataunits.DataUnits.add_files` (one coordination key per file, so agents filling one
DU concurrently never overwrite each other).

Every failure raises :class:`~pilotdata.errors.StagingError` naming the DU, file or store; the worker
fails the CU with it. Nothing is swallowed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.task import Task
from pilotdata.coordination import Coordination, EntityRecord
from pilotdata.errors import NotFoundError, PilotDataError, StagingError
from pilotdata.session import Session
from pilotdata.states import DataUnitState, Kind

log = logging.getLogger(__name__)

WAITABLE_DU_STATES = frozenset({DataUnitState.NEW.value, DataUnitState.PENDING.value})
"""DU states in which input staging waits for a first complete replica."""


class DataStager:
    """Stages CU inputs through the pilot cache and outputs into DataUnits (see the module docstring)."""

    def __init__(
        self,
        coord: Coordination,
        pilot: str,
        cache_dir: Path,
        session: Session,
        *,
        input_wait: float = 300.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.coord = coord
        self.pilot = pilot
        self.cache_dir = cache_dir
        self.session = session
        self.input_wait = input_wait
        self._site: tuple[str, ...] | None = None
        self._stop = stop or threading.Event()
        self._cache: Any = None
        """The :class:`transfer.PilotCache`, made on first use (imports the transfer engine lazily)."""
        self._cached: dict[str, str] = {}
        """DU id -> cache key of the DUs this pilot holds."""
        self._lock = threading.Lock()
        self._du_locks: dict[str, threading.Lock] = {}

    # ------------------------------------------------------------------ input
    def stage_in(self, task: Task, sandbox: Path) -> None:
        """Fetch each input DU into the cache (once per pilot) and link it into ``sandbox``."""
        for ref in task.description.input_data:
            key = self._ensure(ref.du_id)
            try:
                self._cache.link_into(key, sandbox, ref.files)
            except Exception as exc:  # the transfer layer's errors, converted at this boundary
                from pilotdata.dataunits import convert_transfer_error

                what = f"input DataUnit {ref.du_id}: linking into the sandbox"
                raise StagingError(str(convert_transfer_error(exc, what))) from exc

    def _du_lock(self, du_id: str) -> threading.Lock:
        with self._lock:
            return self._du_locks.setdefault(du_id, threading.Lock())

    def _ensure(self, du_id: str) -> str:
        """The cache key of ``du_id``, fetching it into the cache first if this pilot lacks it."""
        with self._du_lock(du_id):
            if du_id in self._cached:
                return self._cached[du_id]
            import transfer
            from pilotdata.dataunits import complete_replicas, du_entries, to_transfer_entries

            record = self._nearer_copy(du_id, self._ready_record(du_id))
            entries = to_transfer_entries(du_entries(record))
            key = transfer.cache_key(du_id, entries)
            if self._cache is None:
                self._cache = transfer.PilotCache(self.cache_dir)
            errors: list[str] = []
            for pd_id in self._replica_order(complete_replicas(record)):
                try:
                    self._fetch(du_id, pd_id, key, entries)
                except (PilotDataError, OSError) as exc:
                    errors.append(f"from {pd_id}: {exc}")
                    log.warning("input DataUnit %s: fetch from %s failed: %s", du_id, pd_id, exc)
                    continue
                break
            else:
                raise StagingError(f"input DataUnit {du_id}: every replica failed: " + "; ".join(errors))
            self._cached[du_id] = key
            self.coord.update_data(Kind.PILOT, self.pilot, {"cached_dus": sorted(self._cached)})
            return key

    def _ready_record(self, du_id: str) -> EntityRecord:
        """The DU record once it has a complete replica (waits while it is New/Pending)."""
        from pilotdata.dataunits import complete_replicas

        deadline = time.monotonic() + self.input_wait
        while True:
            try:
                record = self.coord.get(Kind.DU, du_id)
            except NotFoundError:
                raise StagingError(f"input DataUnit {du_id!r} does not exist") from None
            if complete_replicas(record):
                return record
            if record.state not in WAITABLE_DU_STATES:
                reason = record.detail.get("reason")
                why = f" ({reason})" if reason else ""
                raise StagingError(f"input DataUnit {du_id} is {record.state} with no complete replica{why}")
            if self._stop.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
                raise StagingError(f"input DataUnit {du_id}: the agent stopped while waiting for it")
            if time.monotonic() >= deadline:
                raise StagingError(
                    f"input DataUnit {du_id} is {record.state}: no complete replica after {self.input_wait:g} s"
                )

    def _distance(self, pd_id: str) -> tuple[int, int, str]:
        """Sort key of a replica: affinity-tree distance from this pilot, then local files first, then id."""
        from pilotdata.services.pilot_data import open_pd_store
        from pilotdata.services.snapshot import site_of
        from placement import tree_distance

        if self._site is None:
            self._site = site_of(self.coord.get(Kind.PILOT, self.pilot).data.get("labels") or {})
        try:
            store = open_pd_store(self.session, pd_id)
        except PilotDataError:
            return (1 << 30, 2, pd_id)
        return (tree_distance(self._site, site_of(store.labels)), 0 if store.scheme == "file" else 1, pd_id)

    def _replica_order(self, pd_ids: Sequence[str]) -> list[str]:
        """Replicas to try, nearest to this pilot first (then local filesystems, which can be linked)."""
        return sorted(pd_ids, key=self._distance)

    def _nearer_copy(self, du_id: str, record: EntityRecord) -> EntityRecord:
        """Wait (up to ``input_wait``) while a replica nearer than every complete one is being copied.

        The ComputeDataService replicates a DataUnit to a site when its cost model says one copy beats
        every CU there pulling it from afar; the CUs wait for that copy instead of each pulling.
        """
        from pilotdata.dataunits import complete_replicas, replicas

        deadline = time.monotonic() + self.input_wait
        while True:
            complete = complete_replicas(record)
            pending = [pd for pd, info in replicas(record).items() if info.get("status") == "pending"]
            if not pending or not complete:
                return record
            if min(self._distance(p)[0] for p in pending) >= min(self._distance(c)[0] for c in complete):
                return record
            if time.monotonic() >= deadline or self._stop.wait(0.5):
                return record
            record = self.coord.get(Kind.DU, du_id)

    def _fetch(self, du_id: str, pd_id: str, key: str, entries: Sequence[Any]) -> None:
        from pilotdata.dataunits import convert_transfer_error
        from pilotdata.services.pilot_data import open_pd_store

        store = open_pd_store(self.session, pd_id)
        started = time.monotonic()
        try:
            self._cache.ensure(key, store.fs, store.path(du_id), entries)
        except Exception as exc:  # the transfer layer's errors, converted at this boundary
            raise convert_transfer_error(exc, f"fetch of DataUnit {du_id} from {pd_id}") from exc
        nbytes = sum(e.size or 0 for e in entries)
        self.coord.record_event(
            "transfer",
            du_id,
            {"du": du_id, "bytes": nbytes, "seconds": time.monotonic() - started, "source": store.url,
             "destination": f"pilot-cache:{self.pilot}", "ok": True, "method": self._method(store)},
            pilot=self.pilot,
        )

    def _method(self, store: Any) -> str:
        """``link`` when the cache could hard-link the replica (same local filesystem), else ``copy``."""
        if store.scheme != "file":
            return "copy"
        try:
            return "link" if os.stat(store.root).st_dev == os.stat(self.cache_dir).st_dev else "copy"
        except OSError:
            return "copy"

    # ----------------------------------------------------------------- output
    def stage_out(self, task: Task, sandbox: Path) -> None:
        """Upload the files matching each output rule into its DataUnit."""
        for ref in task.description.output_data:
            names = matching_files(sandbox, ref.files or ())
            self._publish(ref.du_id, sandbox, names)

    def _publish(self, du_id: str, sandbox: Path, names: Sequence[str]) -> None:
        import fsspec

        from pilotdata.dataunits import DataUnits, complete_replicas

        try:
            record = self.coord.get(Kind.DU, du_id)
        except NotFoundError:
            raise StagingError(f"output DataUnit {du_id!r} does not exist") from None
        targets = complete_replicas(record)
        if not targets:
            raise StagingError(f"output DataUnit {du_id} ({record.state}) has no replica open for output")
        units = DataUnits(self.session)
        for pd_id in targets:
            try:
                units.add_files(du_id, pd_id, fsspec.filesystem("file"), str(sandbox), list(names), pilot=self.pilot)
            except PilotDataError as exc:
                raise StagingError(f"output DataUnit {du_id} on {pd_id}: {exc}") from exc


def matching_files(sandbox: Path, patterns: Sequence[str]) -> list[str]:
    """Sandbox files (relative, sorted) matching the globs; :class:`StagingError` if one matches none."""
    found: set[str] = set()
    for pattern in patterns:
        hits = {str(p.relative_to(sandbox)) for p in sandbox.glob(pattern) if p.is_file()}
        if not hits:
            raise StagingError(f"output pattern {pattern!r} matches no file in the sandbox {str(sandbox)!r}")
        found |= hits
    return sorted(found)
