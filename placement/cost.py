"""The terms of the estimate: queue wait, data movement, and the affinity penalty.

Owns the formulas, once, so :mod:`placement.rank`, :mod:`placement.assign`, :mod:`placement.binding`
and :mod:`placement.replication` agree to the last bit:

* wait: ``expected_start_s`` (pilots still in a batch queue) plus, when the CU cannot start on a free
  slot, ``deficit / total_slots * mean_task_seconds`` where ``deficit = queued_slots + slots - free``;
* transfer: per input DU, 0 if the pilot caches it, else ``size / bandwidth(best replica -> pilot)``,
  the best replica being the nearest one (ties: site, then PD id); a DU already being fetched into
  the pilot's cache costs only what is left of that fetch after the CU's own wait,
  ``max(0, ready_in - wait)``, so the CU starts at ``max(wait, ready_in)``;
* penalty: ``soft_affinity_s`` per level of soft-affinity mismatch; a required mismatch excludes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from placement.bandwidth import UNKNOWN_DISTANCE, BandwidthModel, tree_distance
from placement.model import Candidate, DataRef, Demand, Site, Weights, format_site


@dataclass(frozen=True)
class Source:
    """Where one input DU would come from for one pilot, and what that costs.

    ``cached`` inputs cost nothing (the pilot's cache holds them). ``in_flight`` inputs are already
    being fetched into that cache: they move no more bytes and cost ``seconds`` = what remains of the
    fetch after the CU's wait. Otherwise ``site``/``pd_id`` name the replica to pull (both ``None``
    when the DU has no complete replica yet), ``distance`` its tree distance to the pilot and
    ``bandwidth_bps`` the rate the model expects.
    """

    du_id: str
    size_bytes: int
    cached: bool
    site: Site | None
    pd_id: str | None
    distance: int
    bandwidth_bps: float
    seconds: float
    in_flight: bool = False

    @property
    def bytes_to_move(self) -> int:
        """Bytes this input adds to the move (0 when cached or already in flight)."""
        return 0 if self.cached or self.in_flight else self.size_bytes


def nearest_replica(ref: DataRef, site: Site) -> tuple[int, Site | None, str | None]:
    """``(distance, replica site, replica PD)`` of the replica of ``ref`` nearest to ``site``.

    Ties go to the smaller site path, then the smaller PD id, so the answer never depends on the order
    replicas were listed. A DU without replicas gives ``(UNKNOWN_DISTANCE, None, None)``.
    """
    best: tuple[int, Site, str] | None = None
    for index, replica in enumerate(ref.replica_sites):
        key = (tree_distance(replica, site), replica, ref.replica_pd(index) or "")
        if best is None or key < best:
            best = key
    if best is None:
        return UNKNOWN_DISTANCE, None, None
    return best[0], best[1], best[2] or None


def source_for(
    ref: DataRef,
    site: Site,
    cached: frozenset[str],
    model: BandwidthModel,
    *,
    ready_in: float | None = None,
    wait_s: float = 0.0,
) -> Source:
    """The cheapest way for a pilot at ``site`` with cache ``cached`` to get input ``ref``.

    ``ready_in`` is set when the DU is already being fetched there (seconds until it arrives); the
    CU, starting after ``wait_s``, then only waits for the rest.
    """
    if ref.du_id in cached:
        return Source(ref.du_id, ref.size_bytes, True, site, None, 0, 0.0, 0.0)
    if ready_in is not None:
        left = ready_in - wait_s
        seconds = left if left > 0 else 0.0
        return Source(ref.du_id, ref.size_bytes, False, site, None, 0, 0.0, seconds, in_flight=True)
    distance, replica, pd_id = nearest_replica(ref, site)
    bps = model.bandwidth(distance)
    seconds = ref.size_bytes / bps if ref.size_bytes else 0.0
    return Source(ref.du_id, ref.size_bytes, False, replica, pd_id, distance, bps, seconds)


def uncached_seconds(ref: DataRef, site: Site, model: BandwidthModel) -> float:
    """Seconds to pull ``ref`` to ``site`` from its nearest replica (ignoring any cache)."""
    if not ref.size_bytes:
        return 0.0
    return ref.size_bytes / model.bandwidth(nearest_replica(ref, site)[0])


def wait_seconds(candidate: Candidate, slots: int) -> float:
    """Expected seconds before a CU needing ``slots`` could start on ``candidate``.

    A pilot in a batch queue adds its ``expected_start_s`` and counts all its slots as free then.
    """
    queued_in_batch = candidate.state == "queued"
    return queue_wait(
        candidate.expected_start_s if queued_in_batch else 0.0,
        candidate.total_slots if queued_in_batch else candidate.free_slots,
        candidate.queued_slots,
        candidate.total_slots,
        candidate.mean_task_seconds,
        slots,
    )


def queue_wait(start_s: float, free: int, queued: int, total: int, mean_task_s: float, slots: int) -> float:
    """The wait formula on plain numbers (see the module docstring); ``total`` must be > 0."""
    deficit = queued + slots - free
    if deficit <= 0:
        return start_s
    return start_s + deficit / total * mean_task_s


def affinity_mismatch(affinity: Site, site: Site) -> int:
    """How many levels of ``affinity`` (a site prefix) ``site`` fails to match (0 = inside)."""
    common = 0
    for wanted, have in zip(affinity, site, strict=False):
        if wanted != have:
            break
        common += 1
    return len(affinity) - common


def exclusion_reason(demand: Demand, candidate: Candidate) -> str | None:
    """Why ``candidate`` can never run ``demand`` (None when it can)."""
    if candidate.total_slots < demand.slots:
        return f"needs {demand.slots} slots, pilot has {candidate.total_slots} in total"
    if demand.affinity_required and affinity_mismatch(demand.affinity, candidate.site):
        return (
            f"required affinity {format_site(demand.affinity)} not satisfied by site "
            f"{format_site(candidate.site)}"
        )
    return None


def penalty_seconds(demand: Demand, site: Site, weights: Weights) -> float:
    """The soft-affinity penalty of running ``demand`` at ``site``."""
    if demand.affinity_required or not demand.affinity:
        return 0.0
    return affinity_mismatch(demand.affinity, site) * weights.soft_affinity_s


def estimate(wait_s: float, sources: Sequence[Source], penalty_s: float, weights: Weights) -> float:
    """The estimate from its terms, in the one evaluation order every module uses (bit-identical).

    ``weights.wait * wait_s + (sum of weights.transfer * seconds over fetched inputs + penalty_s)``,
    then ``+ weights.transfer * seconds`` for each in-flight input, in input order.
    """
    w_transfer = weights.transfer
    fetched = sum(w_transfer * s.seconds for s in sources if not s.in_flight)
    est = weights.wait * wait_s + (fetched + penalty_s)
    for source in sources:
        if source.in_flight:
            est += w_transfer * source.seconds
    return est

