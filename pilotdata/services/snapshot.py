"""Turn coordination records into placement's plain inputs (the only glue between the two).

Placement (:mod:`placement`) is pure; this module reads pilots, DataUnits and PilotData from
coordination and builds its :class:`~placement.Candidate`, :class:`~placement.DataRef` and
:class:`~placement.Demand` values (a CU's demand from its typed description, parsed once by the caller).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pilotdata.coordination import Coordination, EntityRecord
from pilotdata.descriptions import ComputeUnitDescription, affinity_path, site_of
from pilotdata.records import complete_replicas, du_entries
from pilotdata.states import ComputeUnitState, Kind, PilotState, is_final
from placement import Candidate, DataRef, Demand

# Expected seconds until a submitted (Pending) pilot starts, by launcher scheme; refined by history later.
EXPECTED_START_S = {"fork": 2.0, "ssh": 5.0, "slurm": 30.0, "slurm+ssh": 30.0, "pbs": 30.0, "pbs+ssh": 30.0,
                    "sge": 30.0, "sge+ssh": 30.0, "lsf": 30.0, "lsf+ssh": 30.0}
DEFAULT_TASK_SECONDS = 10.0


@dataclass
class Snapshot:
    """What placement needs to know, read once per binding round."""

    candidates: list[Candidate]
    pd_sites: dict[str, tuple[str, ...]]
    du_records: dict[str, EntityRecord] = field(default_factory=dict)

    def data_ref(self, du_id: str, files: Sequence[str] | None) -> DataRef:
        """The placement view of one input (its size, or the subset's, and its complete replica sites)."""
        rec = self.du_records[du_id]
        entries = du_entries(rec)
        if files:
            wanted = set(files)
            size = sum(e.size for e in entries if e.path in wanted)
        else:
            size = sum(e.size for e in entries)
        pds = [pd for pd in complete_replicas(rec) if pd in self.pd_sites]
        return DataRef(du_id, size, tuple(self.pd_sites[pd] for pd in pds), tuple(pds))


def median_task_seconds(records: Iterable[EntityRecord | None]) -> float:
    """Median run time of finished CUs among ``records`` (default when none finished yet)."""
    done, running = ComputeUnitState.DONE.value, ComputeUnitState.RUNNING.value
    durations = [r.times[done] - r.times[running] for r in records
                 if r is not None and done in r.times and running in r.times]
    return max(0.01, statistics.median(durations)) if durations else DEFAULT_TASK_SECONDS


def cached_anywhere(pilot_data: Mapping[str, Any]) -> frozenset[str]:
    """DataUnits in any node cache of a pilot (``cached_dus`` and every node's ``node_caches`` entry): all
    count as local to the pilot, since its nodes copy them from each other rather than from the store."""
    nodes = pilot_data.get("node_caches") or {}
    per_node = {du for dus in nodes.values() for du in dus} if isinstance(nodes, Mapping) else set()
    return frozenset(pilot_data.get("cached_dus") or ()) | per_node


def take_snapshot(coord: Coordination, task_seconds: float, du_ids: Iterable[str] = ()) -> Snapshot:
    """Read every live pilot, every PD, and the given DataUnits."""
    pilots = [r for r in coord.get_many(Kind.PILOT, coord.list_ids(Kind.PILOT))
              if r is not None and not is_final(r.state)]
    lengths = coord.queue_lengths([p.id for p in pilots])
    now = time.time()
    candidates: list[Candidate] = []
    for rec in pilots:
        slots = int(rec.data.get("slots") or 1)
        running = rec.state == PilotState.RUNNING
        busy = len(coord.claimed(rec.id)) if running else 0
        scheme = str((rec.data.get("launcher") or {}).get("scheme") or "fork")
        started = rec.times.get(PilotState.PENDING.value, now)
        expected = max(0.0, EXPECTED_START_S.get(scheme, 30.0) - (now - started))
        candidates.append(Candidate(
            pilot_id=rec.id,
            site=site_of(rec.data.get("labels") or {}),
            total_slots=slots,
            free_slots=max(0, slots - busy) if running else 0,
            queued_slots=lengths.get(rec.id, 0),
            cached_dus=cached_anywhere(rec.data),
            state="running" if running else "queued",
            expected_start_s=0.0 if running else expected,
            mean_task_seconds=task_seconds,
        ))
    pd_sites = {r.id: site_of(r.data.get("labels") or {})
                for r in coord.get_many(Kind.PD, coord.list_ids(Kind.PD)) if r is not None}
    ids = sorted(set(du_ids))
    dus = {r.id: r for r in coord.get_many(Kind.DU, ids) if r is not None}
    return Snapshot(candidates, pd_sites, dus)


def demand_of(cu_id: str, desc: ComputeUnitDescription, snap: Snapshot, *, required: bool) -> Demand:
    """The placement demand of one CU (its inputs must be in the snapshot: :class:`KeyError` otherwise)."""
    inputs = tuple(snap.data_ref(ref.du_id, ref.files) for ref in desc.input_data)
    return Demand(cu_id, desc.number_of_processes, inputs, affinity_path(desc), required)
