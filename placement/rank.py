"""Ranking the candidate pilots of one ComputeUnit by estimated completion, with explanations.

Owns :class:`Score` (one pilot's estimate and its breakdown), :class:`Exclusion`, :class:`Ranking`
and :func:`rank`. Like dask.distributed's ``decide_worker``, the choice is a plain ``min`` over
candidates of a key; here the key is ``(est_s, bytes_to_move, fetches, pilot_id)``: earliest
estimated completion, then the fewest bytes to move, then the fewest uncached inputs, then the pilot
id, so a pilot holding the data wins every tie and the order never depends on the order candidates
were listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from placement._text import fmt_bytes, fmt_rate, fmt_seconds
from placement.bandwidth import BandwidthModel
from placement.cost import (
    Source,
    affinity_mismatch,
    estimate,
    exclusion_reason,
    penalty_seconds,
    source_for,
    wait_seconds,
)
from placement.model import DEFAULT_WEIGHTS, Candidate, Demand, PilotState, Site, Weights, format_site


@dataclass(frozen=True)
class Score:
    """One candidate's estimate for one CU: ``est_s = wait + transfer + penalty`` (weighted).

    ``sources`` has one entry per input DU (in the demand's order) naming where it comes from;
    ``reasons`` holds one sentence per term (wait, transfer, penalty) for ``pdata explain``.
    """

    pilot_id: str
    site: Site
    state: PilotState
    est_s: float
    wait_s: float
    transfer_s: float
    bytes_to_move: int
    penalty_s: float
    sources: tuple[Source, ...]
    reasons: tuple[str, ...]

    @property
    def fetches(self) -> int:
        """How many inputs must still be fetched (not cached, not already in flight), even if empty."""
        return sum(1 for source in self.sources if not (source.cached or source.in_flight))

    @property
    def key(self) -> tuple[float, int, int, str]:
        """The ordering key: estimate, bytes to move, inputs to fetch, pilot id."""
        return (self.est_s, self.bytes_to_move, self.fetches, self.pilot_id)

    @property
    def ready_now(self) -> bool:
        """True when the pilot is running and has a free slot for the CU right now."""
        return self.state == "running" and self.wait_s == 0

    def explain(self) -> str:
        """A readable breakdown: a header, then one line per term (and per input under transfer)."""
        lines = [f"{self.pilot_id} ({self.state} at {format_site(self.site)}): est {fmt_seconds(self.est_s)}"]
        for reason in self.reasons:
            lines.append(f"  {reason}")
            if reason.startswith("transfer"):
                lines.extend(f"    {_source_line(source)}" for source in self.sources)
        return "\n".join(lines)


def _source_line(source: Source) -> str:
    if source.cached:
        return f"{source.du_id}: {fmt_bytes(source.size_bytes)} cached on the pilot"
    if source.in_flight:
        return (
            f"{source.du_id}: {fmt_bytes(source.size_bytes)} already being fetched to the pilot, "
            f"{fmt_seconds(source.seconds)} left after the wait"
        )
    if source.site is None:
        where = "no complete replica yet (costed as the farthest distance)"
    else:
        pd = f" ({source.pd_id})" if source.pd_id else ""
        where = f"from {format_site(source.site)}{pd}"
    return (
        f"{source.du_id}: {fmt_bytes(source.size_bytes)} {where} at {fmt_rate(source.bandwidth_bps)}"
        f" = {fmt_seconds(source.seconds)}"
    )


@dataclass(frozen=True)
class Exclusion:
    """A candidate that cannot run the CU at all, and why."""

    pilot_id: str
    reason: str

    def explain(self) -> str:
        """``pilot: excluded (reason)``."""
        return f"{self.pilot_id}: excluded ({self.reason})"


class Ranking(list[Score]):
    """The eligible candidates' scores, best first, plus the ``excluded`` ones with their reasons."""

    def __init__(self, cu_id: str, scores: Iterable[Score] = (), excluded: Iterable[Exclusion] = ()) -> None:
        super().__init__(scores)
        self.cu_id = cu_id
        self.excluded: list[Exclusion] = list(excluded)

    @property
    def best(self) -> Score | None:
        """The best score, or None when every candidate was excluded."""
        return self[0] if self else None

    def explain(self) -> str:
        """All scores (best first) and the exclusions, as ``pdata explain`` prints them."""
        head = f"placement of {self.cu_id}: {len(self)} eligible, {len(self.excluded)} excluded"
        parts = [head, *(f"#{i + 1} {score.explain()}" for i, score in enumerate(self))]
        parts.extend(exclusion.explain() for exclusion in self.excluded)
        return "\n".join(parts)


def check_unique(candidates: Sequence[Candidate]) -> None:
    """Reject two candidates with the same pilot id (an inconsistent snapshot)."""
    seen: set[str] = set()
    for candidate in candidates:
        if candidate.pilot_id in seen:
            raise ValueError(f"candidate pilot_id {candidate.pilot_id!r} appears twice")
        seen.add(candidate.pilot_id)


def _wait_reason(demand: Demand, candidate: Candidate, wait_s: float) -> str:
    parts: list[str] = []
    if candidate.state == "queued":
        start = fmt_seconds(candidate.expected_start_s)
        parts.append(f"pilot still in the batch queue, expected start {start}")
    free = candidate.total_slots if candidate.state == "queued" else candidate.free_slots
    deficit = candidate.queued_slots + demand.slots - free
    if deficit <= 0:
        parts.append(f"{demand.slots} of {free - candidate.queued_slots} free slots available")
    else:
        parts.append(
            f"{candidate.queued_slots} slots queued, {free} free, {demand.slots} needed: "
            f"{deficit}/{candidate.total_slots} slots x {fmt_seconds(candidate.mean_task_seconds)}/task"
        )
    return f"wait {fmt_seconds(wait_s)}: " + "; ".join(parts)


def _transfer_reason(sources: Sequence[Source], transfer_s: float, nbytes: int) -> str:
    if not sources:
        return "transfer 0 s: no input data"
    cached = sum(1 for source in sources if source.cached)
    flying = sum(1 for source in sources if source.in_flight)
    extra = f", {flying} in flight" if flying else ""
    return (
        f"transfer {fmt_seconds(transfer_s)}: {fmt_bytes(nbytes)} to move "
        f"({cached} of {len(sources)} inputs cached{extra})"
    )


def _penalty_reason(demand: Demand, candidate: Candidate, penalty_s: float, weights: Weights) -> str:
    if not demand.affinity:
        return "penalty 0 s: no affinity asked"
    wanted = format_site(demand.affinity)
    levels = affinity_mismatch(demand.affinity, candidate.site)
    if not levels:
        kind = "required" if demand.affinity_required else "soft"
        return f"penalty 0 s: inside {kind} affinity {wanted}"
    return (
        f"penalty {fmt_seconds(penalty_s)}: soft affinity {wanted} missed by {levels} level(s) "
        f"x {fmt_seconds(weights.soft_affinity_s)}"
    )


def score(
    demand: Demand, candidate: Candidate, model: BandwidthModel, weights: Weights = DEFAULT_WEIGHTS
) -> Score:
    """The estimate of running ``demand`` on ``candidate`` (which must not be excluded)."""
    wait_s = wait_seconds(candidate, demand.slots)
    fetching = dict(candidate.fetching)
    sources = tuple(
        source_for(
            ref, candidate.site, candidate.cached_dus, model, ready_in=fetching.get(ref.du_id), wait_s=wait_s
        )
        for ref in demand.inputs
    )
    transfer_s = sum(source.seconds for source in sources)
    nbytes = sum(source.bytes_to_move for source in sources)
    penalty_s = penalty_seconds(demand, candidate.site, weights)
    reasons = (
        _wait_reason(demand, candidate, wait_s),
        _transfer_reason(sources, transfer_s, nbytes),
        _penalty_reason(demand, candidate, penalty_s, weights),
    )
    return Score(
        pilot_id=candidate.pilot_id,
        site=candidate.site,
        state=candidate.state,
        est_s=estimate(wait_s, sources, penalty_s, weights),
        wait_s=wait_s,
        transfer_s=transfer_s,
        bytes_to_move=nbytes,
        penalty_s=penalty_s,
        sources=sources,
        reasons=reasons,
    )


def rank(
    demand: Demand,
    candidates: Sequence[Candidate],
    model: BandwidthModel,
    *,
    weights: Weights = DEFAULT_WEIGHTS,
) -> Ranking:
    """Rank ``candidates`` for ``demand`` by estimated completion, best first.

    Candidates with fewer ``total_slots`` than the CU needs, or outside a required affinity, are not
    scored: they are listed in ``Ranking.excluded`` with the reason (sorted by pilot id).
    """
    check_unique(candidates)
    scores: list[Score] = []
    excluded: list[Exclusion] = []
    for candidate in candidates:
        reason = exclusion_reason(demand, candidate)
        if reason is not None:
            excluded.append(Exclusion(candidate.pilot_id, reason))
        else:
            scores.append(score(demand, candidate, model, weights))
    scores.sort(key=lambda s: s.key)
    excluded.sort(key=lambda e: e.pilot_id)
    return Ranking(demand.cu_id, scores, excluded)
