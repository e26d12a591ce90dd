"""Batch placement: bind many ComputeUnits to pilots at once, spreading load as it goes.

Owns :func:`assign`. For each demand, in the order given, it picks what :func:`placement.rank.rank`
would rank first against the candidates *as updated by the assignments made so far*: every CU bound
to a pilot adds its slots to that pilot's queued load, so the next CU sees the longer wait and work
spreads across pilots instead of piling onto the first (BigJob issue #15).

Speed (10,000 CUs x 100 pilots well under a second, see ``benchmarks/placement_speed.py``) comes from
doing per pair only C-level list arithmetic:

* candidates are sorted by pilot id once, so "lowest index" is the deterministic tie-break;
* the transfer cost of each input DU is computed once per distinct pilot *site* (and the vector
  shared by every DU with the same size and replica sites: the query chunks of a BLAST run), then
  zeroed where a pilot caches it;
* the placement-dependent part of a demand's estimate (transfer + penalty, or ``inf`` where the pilot
  is excluded) is one vector per distinct (inputs, slots, affinity), shared by identical demands;
* the wait vector per distinct slot count is updated in O(1) per assignment.

A CU then costs one vector addition, one ``min`` and, on an exact tie, a comparison of bytes to move
and inputs to fetch among the tied pilots: the same key :func:`rank` sorts by.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence

from placement.bandwidth import BandwidthModel
from placement.cost import exclusion_reason, penalty_seconds, queue_wait, uncached_seconds
from placement.model import DEFAULT_WEIGHTS, Candidate, DataRef, Demand, Site, Weights
from placement.rank import check_unique

_INF = math.inf


class _Board:
    """The mutable per-pilot state and the memoised cost vectors of one :func:`assign` call."""

    def __init__(self, candidates: Sequence[Candidate], model: BandwidthModel, weights: Weights) -> None:
        check_unique(candidates)
        self.cands = sorted(candidates, key=lambda c: c.pilot_id)
        self.ids = [c.pilot_id for c in self.cands]
        self.model = model
        self.weights = weights
        self.sites: list[Site] = []
        site_pos: dict[Site, int] = {}
        self.site_index: list[int] = []
        for cand in self.cands:
            if cand.site not in site_pos:
                site_pos[cand.site] = len(self.sites)
                self.sites.append(cand.site)
            self.site_index.append(site_pos[cand.site])
        self.cached_at: dict[str, list[int]] = {}
        for index, cand in enumerate(self.cands):
            for du_id in cand.cached_dus:
                self.cached_at.setdefault(du_id, []).append(index)
        self.start = [c.expected_start_s if c.state == "queued" else 0.0 for c in self.cands]
        self.free = [c.total_slots if c.state == "queued" else c.free_slots for c in self.cands]
        self.queued = [c.queued_slots for c in self.cands]
        self._waits: dict[int, list[float]] = {}
        self._shape_vecs: dict[tuple[int, tuple[Site, ...]], list[float]] = {}
        self._du_vecs: dict[DataRef, list[float]] = {}
        self._du_by_id: dict[int, list[float]] = {}
        self._alive: list[DataRef] = []  # keeps the objects whose id() keys _du_by_id alive
        self._mask_vecs: dict[tuple[int, Site, bool], list[float]] = {}
        self._static: dict[tuple[tuple[int, ...], int, Site, bool], list[float]] = {}

    def _wait(self, index: int, slots: int) -> float:
        cand = self.cands[index]
        if cand.total_slots <= 0:  # excluded by the mask anyway; keep the sum finite
            return 0.0
        wait = queue_wait(
            self.start[index], self.free[index], self.queued[index], cand.total_slots,
            cand.mean_task_seconds, slots,
        )
        return self.weights.wait * wait

    def waits(self, slots: int) -> list[float]:
        """The weighted wait of a CU needing ``slots`` on every pilot, kept current."""
        vec = self._waits.get(slots)
        if vec is None:
            vec = [self._wait(i, slots) for i in range(len(self.cands))]
            self._waits[slots] = vec
        return vec

    def add_load(self, index: int, slots: int) -> None:
        """Record that a CU needing ``slots`` was bound to pilot ``index``."""
        self.queued[index] += slots
        for need, vec in self._waits.items():
            vec[index] = self._wait(index, need)

    def _du_vec(self, ref: DataRef) -> list[float]:
        """Weighted seconds to bring ``ref`` to every pilot (0 where cached)."""
        vec = self._du_by_id.get(id(ref))
        if vec is not None:
            return vec
        vec = self._du_vecs.get(ref)
        if vec is None:
            vec = self._new_du_vec(ref)
            self._du_vecs[ref] = vec
        self._du_by_id[id(ref)] = vec
        self._alive.append(ref)
        return vec

    def _new_du_vec(self, ref: DataRef) -> list[float]:
        shape = (ref.size_bytes, ref.replica_sites)
        base = self._shape_vecs.get(shape)
        if base is None:
            w_transfer = self.weights.transfer
            per_site = [w_transfer * uncached_seconds(ref, site, self.model) for site in self.sites]
            base = [per_site[k] for k in self.site_index]
            self._shape_vecs[shape] = base
        holders = self.cached_at.get(ref.du_id)
        if holders:
            vec = list(base)
            for index in holders:
                vec[index] = 0.0
        else:
            vec = base
        return vec

    def _mask_vec(self, demand: Demand) -> list[float]:
        key = (demand.slots, demand.affinity, demand.affinity_required)
        vec = self._mask_vecs.get(key)
        if vec is None:
            vec = [
                _INF if exclusion_reason(demand, cand) is not None
                else penalty_seconds(demand, cand.site, self.weights)
                for cand in self.cands
            ]
            self._mask_vecs[key] = vec
        return vec

    def static(self, demand: Demand) -> list[float]:
        """Weighted transfer + penalty of ``demand`` on every pilot (``inf`` where excluded)."""
        vecs = [self._du_vec(ref) for ref in demand.inputs]
        key = (tuple(map(id, vecs)), demand.slots, demand.affinity, demand.affinity_required)
        vec = self._static.get(key)
        if vec is not None:
            return vec
        mask = self._mask_vec(demand)
        if vecs:
            transfer = vecs[0]
            for more in vecs[1:]:
                transfer = list(map(operator.add, transfer, more))
            vec = list(map(operator.add, transfer, mask))  # finite + inf stays inf: excluded
        else:
            vec = mask
        self._static[key] = vec
        return vec

    def tie_key(self, demand: Demand, index: int) -> tuple[int, int, int]:
        """Rank's tie-break after the estimate: bytes to move, inputs to fetch, pilot order."""
        cached = self.cands[index].cached_dus
        missing = [ref.size_bytes for ref in demand.inputs if ref.du_id not in cached]
        return (sum(missing), len(missing), index)


def assign(
    demands: Iterable[Demand],
    candidates: Sequence[Candidate],
    model: BandwidthModel,
    *,
    weights: Weights = DEFAULT_WEIGHTS,
) -> dict[str, str]:
    """Bind each demand, in order, to the pilot with the earliest estimated completion.

    Returns ``{cu_id: pilot_id}``. A CU that no candidate can run (too few slots everywhere, or a
    required affinity no pilot satisfies) is left out of the result; :func:`placement.rank.rank` on
    it lists why. Each binding adds the CU's slots to the chosen pilot's queued load before the next
    CU is placed. The candidates themselves are not modified (they are frozen).
    """
    board = _Board(candidates, model, weights)
    result: dict[str, str] = {}
    if not board.cands:
        return result
    seen: set[str] = set()
    for demand in demands:
        if demand.cu_id in seen:
            raise ValueError(f"demand cu_id {demand.cu_id!r} appears twice")
        seen.add(demand.cu_id)
        total = list(map(operator.add, board.waits(demand.slots), board.static(demand)))
        best = min(total)
        if best == _INF:
            continue
        index = total.index(best)
        if total.count(best) > 1:
            tied = [i for i, value in enumerate(total) if value == best]
            index = min(tied, key=lambda i: board.tie_key(demand, i))
        result[demand.cu_id] = board.ids[index]
        board.add_load(index, demand.slots)
    return result
