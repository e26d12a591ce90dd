"""Input and output staging of CUs: DataUnits through the per-pilot cache, outputs into DataUnits.

**Input** (``input_data``): each DataUnit is fetched into the cache of the node the CU runs on
(:class:`transfer.PilotCache` keyed by DU id + manifest digest; one cache per node,
:mod:`agent.nodecache`): from a complete replica (the DU record's replicas, :mod:`pilotdata.records`;
the PD record gives the store, :func:`pilotdata.data.open_pd_store`) the first time in the pilot,
from a peer node that holds it after that; then it is linked into each CU sandbox; ``{du: [files]}``
links only those files. What the caches hold is published in the pilot's data as ``node_caches``
and, over all nodes, ``cached_dus`` (placement reads it). A DU that is still being uploaded
(New/Pending, no complete replica yet) is waited for, up to ``input_wait`` seconds.
Each input of each CU is one transfer record of the byte accounting (:class:`pilotdata.records.ByteCategory`):
``staged`` (this CU's fetch copied the DU into its node's cache, from the store or a peer node),
``linked`` (the fetch linked it from a local store) or ``cache_hit`` (the node's cache already held it).

**Output** (``output_data``: ``[{du: [globs]}]``): after exit code 0, the sandbox files matching the
globs are uploaded into every complete replica of the DU and added to its manifest through
:meth:`pilotdata.data.ReplicaManager.add_files` (one coordination key per file, so agents filling one
DU concurrently never overwrite each other).

Everything goes through the agent's own coordination connection: no second connection, nothing of
the services layer. The data operations (:mod:`pilotdata.data`, with fsspec and the transfer engine)
are imported on first use, so an agent whose CUs move no data never loads them.

Every failure raises :class:`~pilotdata.errors.StagingError` naming the DU, file or store; the worker
fails the CU with it. Nothing is swallowed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.cores import Placement
from agent.executors import NodeLost
from agent.nodecache import NodeCaches, StoreSource
from agent.task import Task
from pilotdata.coordination import Coordination, EntityRecord
from pilotdata.descriptions import FileTransfer, PilotComputeDescription, site_of
from pilotdata.errors import DescriptionError, NotFoundError, PilotDataError, StagingError
from pilotdata.records import (
    TRANSFER_EVENT,
    ByteCategory,
    complete_replicas,
    du_entries,
    pending_replicas,
    transfer_record,
)
from pilotdata.states import DataUnitState, Kind

log = logging.getLogger(__name__)

WAITABLE_DU_STATES = frozenset({DataUnitState.NEW.value, DataUnitState.PENDING.value})
"""DU states in which input staging waits for a first complete replica."""


def fsspec_local() -> Any:
    """fsspec's local filesystem (imported on first use)."""
    import fsspec

    return fsspec.filesystem("file")


class DataStager:
    """Stages CU inputs through the node caches and outputs into DataUnits (see the module docstring)."""

    def __init__(
        self,
        coord: Coordination,
        pilot: str,
        caches: NodeCaches,
        default_node: str,
        *,
        input_wait: float = 300.0,
        stop: threading.Event | None = None,
        pilot_files_dir: Path | None = None,
    ) -> None:
        self.coord = coord
        self.pilot_files_dir = pilot_files_dir or Path.cwd() / ".pilot-files"
        """Where the pilot's own ``file_transfer`` files are fetched once (in its working directory)."""
        self.pilot = pilot
        self.caches = caches
        self.default_node = default_node
        self.input_wait = input_wait
        self._site: tuple[str, ...] | None = None
        self._stop = stop or threading.Event()
        self._plans: dict[str, tuple[str, list[dict[str, Any]], list[StoreSource]]] = {}
        """DU id -> (cache key, manifest entries, complete replicas nearest first), read once."""
        self._published: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._du_locks: dict[str, threading.Lock] = {}
        self._pilot_files: tuple[FileTransfer, ...] | None = None
        """The pilot's own ``file_transfer`` (read from its record once)."""
        self._pilot_files_fetched = False
        self._pilot_files_lock = threading.Lock()

    # ------------------------------------------------------------------ input
    def needs_staging(self, task: Task) -> bool:
        """Whether ``task`` has inputs: DataUnits, or BigJob ``file_transfer`` files (its own or the pilot's)."""
        return bool(task.description.input_data or task.description.file_transfer or self._pilot_transfers())

    def stage_in(self, task: Task, sandbox: Path, placement: Placement | None = None) -> None:
        """Fetch each input DU into the cache of the CU's node (once per node) and link it into ``sandbox``;
        then the pilot's ``file_transfer`` files (fetched once per pilot) and the CU's own (fetched for it).

        An MPI CU over several nodes gets copies of its DataUnits in its sandbox (the other nodes cannot
        follow links into one node's local scratch).
        """
        self._stage_data_units(task, sandbox, placement)
        if self._pilot_transfers():
            self._link_pilot_files(sandbox)
        if task.description.file_transfer:
            from pilotdata.data.fetch import fetch

            fetch(task.description.file_transfer, sandbox)

    def _pilot_transfers(self) -> tuple[FileTransfer, ...]:
        if self._pilot_files is None:
            try:
                desc = self.coord.get(Kind.PILOT, self.pilot).data.get("description") or {}
                self._pilot_files = PilotComputeDescription.coerce(desc).file_transfer
            except (NotFoundError, DescriptionError) as exc:  # a pilot record from elsewhere: no files
                log.warning("pilot %s: file_transfer not read: %s", self.pilot, exc)
                self._pilot_files = ()
        return self._pilot_files

    def _link_pilot_files(self, sandbox: Path) -> None:
        """BigJob staged a pilot's files into its directory once and copied them into every CU's."""
        import transfer
        from pilotdata.data.fetch import fetch

        where = self.pilot_files_dir
        with self._pilot_files_lock:  # fetched once; the CUs that need them meanwhile wait here
            if not self._pilot_files_fetched:
                where.mkdir(parents=True, exist_ok=True)
                fetch(self._pilot_transfers(), where)
                self._pilot_files_fetched = True
        local = fsspec_local()
        names = [t.target for t in self._pilot_transfers()]
        try:
            transfer.copy_files(local, str(where), local, str(sandbox), names, link=True, read_only=True)
        except Exception as exc:
            raise StagingError(f"pilot file_transfer files into the sandbox: {exc}") from exc

    def _stage_data_units(self, task: Task, sandbox: Path, placement: Placement | None) -> None:
        node = placement.node if placement is not None else self.default_node
        copy = placement is not None and placement.spans
        for ref in task.description.input_data:
            key, fetched = self._ensure(ref.du_id, node, task.id)
            try:
                self.caches.executors[node].link(key, sandbox, ref.files, copy)
            except NodeLost:
                raise
            except Exception as exc:  # the transfer layer's errors, converted at this boundary
                from pilotdata.data import convert_transfer_error

                what = f"input DataUnit {ref.du_id}: linking into the sandbox"
                raise StagingError(str(convert_transfer_error(exc, what))) from exc
            if not fetched:  # the node's cache held it: one cache-hit record for this CU and input
                wanted = set(ref.files) if ref.files else None
                nbytes = sum(int(e.get("size") or 0) for e in self._plan(ref.du_id)[1]
                             if wanted is None or e.get("path") in wanted)
                detail = transfer_record(ref.du_id, nbytes, 0.0, category=ByteCategory.CACHE_HIT,
                                         source=f"pilot-cache:{self.pilot}", destination="sandbox", cu=task.id,
                                         node=node)
                self.coord.record_event(TRANSFER_EVENT, ref.du_id, detail, pilot=self.pilot)

    def _du_lock(self, du_id: str) -> threading.Lock:
        with self._lock:
            return self._du_locks.setdefault(du_id, threading.Lock())

    def _plan(self, du_id: str) -> tuple[str, list[dict[str, Any]], list[StoreSource]]:
        """Key, manifest and replicas (nearest first) of ``du_id``, read from coordination once."""
        with self._du_lock(du_id):
            if du_id in self._plans:
                return self._plans[du_id]
            import transfer
            from pilotdata.data import open_pd_store, to_transfer_entries

            record = self._nearer_copy(du_id, self._ready_record(du_id))
            entries = to_transfer_entries(du_entries(record))
            key = transfer.cache_key(du_id, entries)
            stores: list[StoreSource] = []
            for pd_id in self._replica_order(complete_replicas(record)):
                try:
                    store = open_pd_store(self.coord, pd_id)
                except PilotDataError as exc:
                    log.warning("input DataUnit %s: replica on %s cannot be opened: %s", du_id, pd_id, exc)
                    continue
                stores.append(StoreSource(pd_id, store.record(), store.url))
            plan = (key, [e.to_dict() for e in entries], stores)
            self._plans[du_id] = plan
            return plan

    def _ensure(self, du_id: str, node: str, cu: str) -> tuple[str, bool]:
        """The cache key of ``du_id``, made complete in ``node``'s cache first (store once, then peers),
        and whether that moved bytes for ``cu`` (recorded by the node caches) or was a cache hit."""
        key, entries, stores = self._plan(du_id)
        try:
            fetched = self.caches.ensure(du_id, key, entries, node, stores, wait=self.input_wait, cu=cu)
        except (NodeLost, StagingError):
            raise
        except Exception as exc:  # the node's or the transfer layer's errors, converted at this boundary
            from pilotdata.data import convert_transfer_error

            raise StagingError(str(convert_transfer_error(exc, f"fetch of DataUnit {du_id}"))) from exc
        self._publish_cached()
        return key, fetched

    def _publish_cached(self) -> None:
        """Write what the node caches hold into the pilot's data when it changed (placement reads it)."""
        held = self.caches.held()
        with self._lock:
            if held == self._published:
                return
            self._published = held
        union = sorted({du for dus in held.values() for du in dus})
        self.coord.update_data(Kind.PILOT, self.pilot, {"cached_dus": union, "node_caches": held})

    def nodes_with(self, du_ids: Sequence[str]) -> set[str]:
        """Nodes whose cache holds all of ``du_ids`` (placement on the nodes prefers them)."""
        return self.caches.nodes_with(du_ids) if du_ids else set()

    def _ready_record(self, du_id: str) -> EntityRecord:
        """The DU record once it has a complete replica (waits while it is New/Pending)."""
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
        from pilotdata.data import open_pd_store
        from placement import tree_distance

        if self._site is None:
            self._site = site_of(self.coord.get(Kind.PILOT, self.pilot).data.get("labels") or {})
        try:
            store = open_pd_store(self.coord, pd_id)
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
        deadline = time.monotonic() + self.input_wait
        while True:
            complete = complete_replicas(record)
            pending = pending_replicas(record)
            if not pending or not complete:
                return record
            if min(self._distance(p)[0] for p in pending) >= min(self._distance(c)[0] for c in complete):
                return record
            if time.monotonic() >= deadline or self._stop.wait(0.5):
                return record
            record = self.coord.get(Kind.DU, du_id)

    # ----------------------------------------------------------------- output
    def stage_out(self, task: Task, sandbox: Path) -> None:
        """Upload the files matching each output rule into its DataUnit."""
        for ref in task.description.output_data:
            names = matching_files(sandbox, ref.files or ())
            self._publish(ref.du_id, sandbox, names, task.id)

    def _publish(self, du_id: str, sandbox: Path, names: Sequence[str], cu_id: str) -> None:
        import fsspec

        from pilotdata.data import ReplicaManager

        try:
            record = self.coord.get(Kind.DU, du_id)
        except NotFoundError:
            raise StagingError(f"output DataUnit {du_id!r} does not exist") from None
        targets = complete_replicas(record)
        if not targets:
            raise StagingError(f"output DataUnit {du_id} ({record.state}) has no replica open for output")
        replicas = ReplicaManager(self.coord)  # on the agent's own connection
        for pd_id in targets:
            try:
                replicas.add_files(du_id, pd_id, fsspec.filesystem("file"), str(sandbox), list(names),
                                   pilot=self.pilot, cu=cu_id)
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
