"""Batch placement: bind many ComputeUnits to pilots at once, spreading load as it goes.

Owns :func:`assign`. For each demand, in the order given, it picks what :func:`placement.rank.rank`
would rank first against the candidates *as updated by the assignments made so far*: every CU bound
to a pilot adds its slots to that pilot's queued load, so the next CU sees the longer wait and work
spreads across pilots instead of piling onto the first (BigJob issue #15). And, since a pilot's
cache keeps each input DU once, the DUs that CU fetches count as arriving there for the CUs after it
(``plan_cache``): they move no more bytes, but cannot start before the fetch is done (exactly like
:attr:`Candidate.fetching`). Data moves once to where compute is, not once per CU.

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
        # cache[i]: DUs pilot i holds or is fetching (no bytes to move); inflight: DUs still arriving,
        # du_id -> {pilot index: seconds until ready}, mirrored per pilot in inflight_at.
        self.cache = [set(c.cached_dus) for c in self.cands]
        self.inflight: dict[str, dict[int, float]] = {}
        self.inflight_at: list[dict[str, float]] = [{} for _ in self.cands]
        for index, cand in enumerate(self.cands):
            for du_id, ready in cand.fetching:
                if du_id not in cand.cached_dus:
                    self.cache[index].add(du_id)
                    self.inflight.setdefault(du_id, {})[index] = ready
                    self.inflight_at[index][du_id] = ready
        self.cached_at: dict[str, list[int]] = {}
        for index, held in enumerate(self.cache):
            for du_id in held:
                self.cached_at.setdefault(du_id, []).append(index)
        self.start = [c.expected_start_s if c.state == "queued" else 0.0 for c in self.cands]
        self.free = [c.total_slots if c.state == "queued" else c.free_slots for c in self.cands]
        self.queued = [c.queued_slots for c in self.cands]
        self._waits: dict[int, list[float]] = {}
        self._shape_vecs: dict[tuple[int, tuple[Site, ...]], list[float]] = {}
        # One "cell" ([vector]) per distinct DataRef value, shared by every object equal to it, so a
        # pilot newly caching the DU updates them all. Static vectors are keyed by id() of the
        # vectors they were built from; replaced vectors are kept alive so no id() is ever reused.
        self._du_cells: dict[DataRef, list[list[float]]] = {}
        self._du_by_id: dict[int, list[list[float]]] = {}
        self._cells_of_du: dict[str, list[list[list[float]]]] = {}
        self._alive: list[object] = []
        self._mask_vecs: dict[tuple[int, Site, bool], list[float]] = {}
        self._static: dict[tuple[tuple[int, ...], int, Site, bool], list[float]] = {}

    def raw_wait(self, index: int, slots: int) -> float:
        """Unweighted seconds before a CU needing ``slots`` could start on pilot ``index``."""
        cand = self.cands[index]
        if cand.total_slots <= 0:  # excluded by the mask anyway; keep the sum finite
            return 0.0
        return queue_wait(
            self.start[index], self.free[index], self.queued[index], cand.total_slots,
            cand.mean_task_seconds, slots,
        )

    def _wait(self, index: int, slots: int) -> float:
        return self.weights.wait * self.raw_wait(index, slots)

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
        arriving = self.inflight_at[index]
        if arriving:  # a fetch that ends before any CU here could start costs nobody anything
            soonest = self.raw_wait(index, 1)
            for du_id in [du for du, ready in arriving.items() if ready <= soonest]:
                del arriving[du_id]
                del self.inflight[du_id][index]

    def add_inflight_cost(self, demand: Demand, total: list[float]) -> None:
        """Add to ``total`` what each pilot's in-flight inputs of ``demand`` still cost after its wait."""
        w_transfer = self.weights.transfer
        for ref in demand.inputs:
            entries = self.inflight.get(ref.du_id)
            if not entries:
                continue
            for index, ready in entries.items():
                value = total[index]
                if value != _INF:
                    left = ready - self.raw_wait(index, demand.slots)
                    total[index] = value + w_transfer * (left if left > 0 else 0.0)

    def _du_vec(self, ref: DataRef) -> list[float]:
        """Weighted seconds to bring ``ref`` to every pilot (0 where cached)."""
        cell = self._du_by_id.get(id(ref))
        if cell is not None:
            return cell[0]
        cell = self._du_cells.get(ref)
        if cell is None:
            cell = [self._new_du_vec(ref)]
            self._du_cells[ref] = cell
            self._cells_of_du.setdefault(ref.du_id, []).append(cell)
        self._du_by_id[id(ref)] = cell
        self._alive.append(ref)
        return cell[0]

    def note_fetched(self, index: int, demand: Demand, wait_s: float) -> None:
        """``demand``, starting on pilot ``index`` after ``wait_s``, fetches its missing inputs one after
        the other into the pilot's cache: later CUs there move no bytes, but wait for the arrival."""
        cache = self.cache[index]
        site = self.cands[index].site
        ready = wait_s
        for ref in demand.inputs:
            if ref.du_id in cache:
                continue
            ready = ready + uncached_seconds(ref, site, self.model)
            cache.add(ref.du_id)
            self.inflight.setdefault(ref.du_id, {})[index] = ready
            self.inflight_at[index][ref.du_id] = ready
            self.cached_at.setdefault(ref.du_id, []).append(index)
            for cell in self._cells_of_du.get(ref.du_id, ()):
                old = cell[0]
                if old[index] != 0.0:
                    self._alive.append(old)
                    cell[0] = new = list(old)
                    new[index] = 0.0

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
        cached = self.cache[index]
        missing = [ref.size_bytes for ref in demand.inputs if ref.du_id not in cached]
        return (sum(missing), len(missing), index)


def assign(
    demands: Iterable[Demand],
    candidates: Sequence[Candidate],
    model: BandwidthModel,
    *,
    weights: Weights = DEFAULT_WEIGHTS,
    plan_cache: bool = True,
) -> dict[str, str]:
    """Bind each demand, in order, to the pilot with the earliest estimated completion.

    Returns ``{cu_id: pilot_id}``. A CU that no candidate can run (too few slots everywhere, or a
    required affinity no pilot satisfies) is left out of the result; :func:`placement.rank.rank` on
    it lists why. Each binding adds the CU's slots to the chosen pilot's queued load before the next
    CU is placed and, with ``plan_cache``, records the inputs it fetches as arriving in that pilot's
    cache (ready after the CU's wait plus the fetch). The result equals calling :func:`rank` CU by CU
    on candidates updated that way (``queued_slots`` and ``fetching``). The candidates themselves
    are not modified (they are frozen).
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
        if board.inflight:
            board.add_inflight_cost(demand, total)
        best = min(total)
        if best == _INF:
            continue
        index = total.index(best)
        if total.count(best) > 1:
            tied = [i for i, value in enumerate(total) if value == best]
            index = min(tied, key=lambda i: board.tie_key(demand, i))
        result[demand.cu_id] = board.ids[index]
        own_wait = board.raw_wait(index, demand.slots)
        board.add_load(index, demand.slots)
        if plan_cache:
            board.note_fetched(index, demand, own_wait)
    return result
