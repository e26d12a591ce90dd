"""Where DataUnits live: choosing a store for a new DU, and planning replicas of hot ones.

Owns :class:`StoreInfo`, :func:`choose_store` and :func:`replication_plan`, on the same cost model
as CU placement (:class:`placement.bandwidth.BandwidthModel`).

The replication rule (Rucio-style, with a configurable maximum number of copies): a reader site ``s``
with ``n`` expected pulls of the DU costs ``n * pull(nearest replica -> s)`` seconds of movement. A new
replica on store ``S`` costs one copy ``copy(nearest replica -> S)`` and then ``n * pull(S -> s)`` for
every site it is nearest to. Copies are added greedily, the one with the largest saving first, while
the saving is positive (> ``min_saving_s``) and the total number of replicas stays within
``copies_max``. So 50 CUs at a remote site wait for one replica instead of each pulling over the WAN;
one CU there just pulls. Count "pulls" as reading CUs, or as pilots when each pilot caches the DU once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from placement._text import fmt_bytes, fmt_seconds
from placement.bandwidth import BandwidthModel, tree_distance
from placement.model import DataRef, Site, check_site, format_site


class NoEligibleStoreError(ValueError):
    """No store can take the DataUnit (labels or free quota); the message lists each store's reason.

    Placement imports nothing from ``pilotdata``: the service converts this at its boundary (to a
    ``QuotaExceededError`` or ``DescriptionError``).
    """


@dataclass(frozen=True)
class StoreInfo:
    """A PilotData store as placement sees it: id, site, free quota (None = unlimited), labels."""

    pd_id: str
    site: Site
    free_bytes: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.pd_id:
            raise ValueError("StoreInfo.pd_id must be a non-empty string")
        check_site(self.site, f"StoreInfo.site of {self.pd_id!r}")
        if self.free_bytes is not None and self.free_bytes < 0:
            raise ValueError(
                f"StoreInfo.free_bytes of {self.pd_id!r} must be >= 0 or None, got {self.free_bytes}"
            )

    def fits(self, nbytes: int) -> bool:
        """True when ``nbytes`` fit in the free quota."""
        return self.free_bytes is None or self.free_bytes >= nbytes


def _missing_labels(store: StoreInfo, wanted: Mapping[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in sorted(wanted.items()) if store.labels.get(key) != value]


def _store_problem(store: StoreInfo, nbytes: int, required: Mapping[str, str]) -> str | None:
    missing = _missing_labels(store, required)
    if missing:
        return f"lacks required label(s) {', '.join(missing)}"
    if not store.fits(nbytes):
        return f"has {fmt_bytes(store.free_bytes or 0)} free, needs {fmt_bytes(nbytes)}"
    return None


def choose_store(
    du_size: int,
    stores: Sequence[StoreInfo],
    *,
    required: Mapping[str, str] | None = None,
    soft: Mapping[str, str] | None = None,
    near: Site = (),
) -> str:
    """The PD id to put a new DU of ``du_size`` bytes on.

    Stores missing a ``required`` label or without the free quota are out. Among the rest: fewest
    ``soft`` labels missed, then nearest to ``near`` (e.g. where its readers run; ignored when
    empty), then most free space (unlimited first), then PD id. Raises :class:`NoEligibleStoreError`
    naming each store's problem when none qualifies.
    """
    if du_size < 0:
        raise ValueError(f"du_size must be >= 0, got {du_size}")
    required = required or {}
    soft = soft or {}
    ranked: list[tuple[int, int, int, float, str]] = []
    problems: list[str] = []
    for store in stores:
        problem = _store_problem(store, du_size, required)
        if problem is not None:
            problems.append(f"{store.pd_id} {problem}")
            continue
        distance = tree_distance(near, store.site) if near else 0
        unlimited = 0 if store.free_bytes is None else 1
        free = -float(store.free_bytes or 0)
        ranked.append((len(_missing_labels(store, soft)), distance, unlimited, free, store.pd_id))
    if not ranked:
        detail = "; ".join(problems) if problems else "no store registered"
        raise NoEligibleStoreError(f"no store can hold {fmt_bytes(du_size)}: {detail}")
    return min(ranked)[-1]


@dataclass(frozen=True)
class PlannedCopy:
    """One replica to create: onto ``pd_id`` at ``site``, copied from ``source_site``/``source_pd``.

    ``copy_s`` is the estimated copy time, ``saving_s`` the net movement seconds it saves (after
    paying for the copy) and ``serves`` the reader sites that will pull from it.
    """

    pd_id: str
    site: Site
    source_site: Site
    source_pd: str | None
    copy_s: float
    saving_s: float
    serves: tuple[Site, ...]


@dataclass(frozen=True)
class ReplicationPlan:
    """The copies to make of one DU (possibly none), and the reasoning."""

    du_id: str
    copies: tuple[PlannedCopy, ...]
    reasons: tuple[str, ...]

    @property
    def pd_ids(self) -> tuple[str, ...]:
        """The stores that get a new replica, in the order they were chosen."""
        return tuple(copy.pd_id for copy in self.copies)

    def explain(self) -> str:
        """One line per decision of the greedy plan."""
        head = f"replication of {self.du_id}: {len(self.copies)} new replica(s)"
        return "\n".join([head, *(f"  {reason}" for reason in self.reasons)])


_Replica = tuple[Site, str | None]


def _pull(model: BandwidthModel, nbytes: int, replicas: Sequence[_Replica], dst: Site) -> float:
    if not nbytes:
        return 0.0
    return nbytes / max(model.bandwidth_between(site, dst) for site, _pd in replicas)


def _nearest(replicas: Sequence[_Replica], dst: Site) -> _Replica:
    return min(replicas, key=lambda r: (tree_distance(r[0], dst), r[0], r[1] or ""))


def replication_plan(
    du: DataRef,
    readers_by_site: Mapping[Site, int],
    stores: Sequence[StoreInfo],
    model: BandwidthModel,
    *,
    copies_max: int = 3,
    required: Mapping[str, str] | None = None,
    min_saving_s: float = 0.0,
) -> ReplicationPlan:
    """Which stores should get a new replica of ``du`` so its readers pull less.

    ``readers_by_site`` counts expected pulls per reader site. ``copies_max`` bounds the total number
    of replicas, existing ones included. Only stores with the free quota and the ``required`` labels,
    and not already holding a replica, are considered. See the module docstring for the rule.
    """
    if copies_max < 1:
        raise ValueError(f"copies_max must be >= 1, got {copies_max}")
    required = required or {}
    size = du.size_bytes
    replicas: list[_Replica] = [
        (site, du.replica_pd(i)) for i, site in enumerate(du.replica_sites)
    ]
    readers = {site: count for site, count in sorted(readers_by_site.items()) if count > 0}
    reasons: list[str] = []
    if not replicas:
        return ReplicationPlan(du.du_id, (), ("no complete replica to copy from",))
    held = {pd for _site, pd in replicas if pd}
    pool: list[StoreInfo] = []
    for store in sorted(stores, key=lambda s: s.pd_id):
        if store.pd_id in held:
            continue
        problem = _store_problem(store, size, required)
        if problem is not None:
            reasons.append(f"{store.pd_id} not eligible: {problem}")
            continue
        pool.append(store)
    copies: list[PlannedCopy] = []
    while True:
        if len(replicas) >= copies_max:
            reasons.append(f"stop: {len(replicas)} replicas reach copies_max={copies_max}")
            break
        current = {site: _pull(model, size, replicas, site) for site in readers}
        best: tuple[float, str, PlannedCopy] | None = None
        for store in pool:
            source_site, source_pd = _nearest(replicas, store.site)
            copy_s = model.transfer_seconds(size, source_site, store.site)
            after = 0.0
            serves: list[Site] = []
            for site, count in readers.items():
                from_new = _pull(model, size, [(store.site, store.pd_id)], site)
                if from_new < current[site]:
                    serves.append(site)
                    after += count * from_new
                else:
                    after += count * current[site]
            before = sum(count * current[site] for site, count in readers.items())
            saving = before - (copy_s + after)
            planned = PlannedCopy(
                store.pd_id, store.site, source_site, source_pd, copy_s, saving, tuple(serves)
            )
            if best is None or (-saving, store.pd_id) < (-best[0], best[1]):
                best = (saving, store.pd_id, planned)
        if best is None:
            reasons.append("stop: no eligible store left")
            break
        saving, _pd, planned = best
        if not saving > min_saving_s:
            reasons.append(
                f"stop: best remaining copy ({planned.pd_id} at {format_site(planned.site)}) would save "
                f"{fmt_seconds(saving)}, not more than {fmt_seconds(min_saving_s)}"
            )
            break
        served = ", ".join(f"{format_site(s)} x{readers[s]}" for s in planned.serves)
        reasons.append(
            f"copy to {planned.pd_id} at {format_site(planned.site)} "
            f"from {format_site(planned.source_site)}: "
            f"copy {fmt_seconds(planned.copy_s)}, saves {fmt_seconds(saving)} of pulls for {served}"
        )
        copies.append(planned)
        replicas.append((planned.site, planned.pd_id))
        pool = [store for store in pool if store.pd_id != planned.pd_id]
    return ReplicationPlan(du.du_id, tuple(copies), tuple(reasons))
