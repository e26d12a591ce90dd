"""Late binding with a bounded delay: when a CU waits for its best pilot, and when it stops waiting.

Owns :class:`Decision` / :class:`Action`, :func:`decide` (the CU's side) and :func:`idle_pick` (an
idle pilot's side). Both apply one rule.

Let *best* be the top-ranked pilot and *idle* the best-ranked pilot with a free slot now. Running on
*idle* costs ``local(idle) - local(best)`` more seconds of data movement and affinity penalty than on
*best* (``local = transfer + penalty``, weighted). That difference is the **budget**: the most that
waiting for *best* can ever be worth. A CU waits for *best* only while its total wait (already waited
plus still expected) stays below the budget, and never past it: after ``budget`` seconds it runs on
whatever pilot is idle, however good *best* still looks. This is the bound Spark's fixed
``spark.locality.wait`` lacks (a fixed wait that ignores how much data there is either idles
executors for nothing or gives up locality worth minutes).

Pilots still queued in a batch system are ranked by their expected start like any busy pilot: a CU
may wait for one, but with a deadline (``max_wait_s``) to decide again, never by polling it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from placement._text import fmt_seconds
from placement.bandwidth import BandwidthModel
from placement.cost import exclusion_reason
from placement.model import DEFAULT_WEIGHTS, Candidate, Demand, Weights
from placement.rank import Score, score


class Action(str, Enum):
    """What to do with a CU now."""

    BIND_TO = "bind_to"
    """Bind it to ``pilot_id`` now (a free slot there, and nothing better worth waiting for)."""
    WAIT = "wait"
    """Keep it unbound for at most ``max_wait_s`` more seconds (for ``pilot_id``), then decide again."""
    TAKE_ANY = "take_any"
    """It waited out its budget: any idle pilot may take it; ``pilot_id`` suggests the best idle one."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Decision:
    """The binding decision for one CU, with the numbers behind it."""

    action: Action
    pilot_id: str | None
    max_wait_s: float
    budget_s: float
    reason: str

    def explain(self) -> str:
        """One line: action, pilot, and the reason."""
        target = f" {self.pilot_id}" if self.pilot_id else ""
        return f"{self.action.value}{target}: {self.reason}"


def local_cost(entry: Score, weights: Weights = DEFAULT_WEIGHTS) -> float:
    """The placement-dependent seconds of a score: weighted transfer + penalty (no wait)."""
    return weights.transfer * entry.transfer_s + entry.penalty_s


def locality_budget(best: Score, alternative: Score, weights: Weights = DEFAULT_WEIGHTS) -> float:
    """Seconds of waiting that running on ``best`` instead of ``alternative`` is worth (>= 0)."""
    extra = local_cost(alternative, weights) - local_cost(best, weights)
    if extra <= 0:
        return 0.0
    return extra / weights.wait if weights.wait > 0 else math.inf


def decide(
    demand: Demand,
    ranked: Sequence[Score],
    now_waited_s: float,
    *,
    weights: Weights = DEFAULT_WEIGHTS,
) -> Decision:
    """Decide whether ``demand`` binds now, waits (how long at most) for a busy pilot, or takes any.

    ``ranked`` is :func:`placement.rank.rank`'s answer computed now (fresh waits) with the same
    ``weights``; ``now_waited_s`` is how long the CU has already been held unbound.

    * no eligible pilot: ``WAIT`` with no pilot and no deadline (a new pilot may appear);
    * the best pilot has a free slot: ``BIND_TO`` it;
    * no pilot has a free slot: ``WAIT`` for the best until its expected start, then decide again;
    * else, with *idle* the best pilot free now: ``TAKE_ANY`` once ``now_waited_s >= budget``;
      ``WAIT`` (at most the remaining budget) while the best's expected wait is shorter than the
      remaining budget; otherwise ``BIND_TO`` *idle*.
    """
    if not (math.isfinite(now_waited_s) and now_waited_s >= 0):
        raise ValueError(f"now_waited_s must be finite and >= 0, got {now_waited_s}")
    cu = demand.cu_id
    if not ranked:
        return Decision(Action.WAIT, None, math.inf, math.inf, f"{cu}: no eligible pilot yet")
    best = ranked[0]
    if best.ready_now:
        return Decision(
            Action.BIND_TO, best.pilot_id, 0.0, 0.0,
            f"free slot now on the best-ranked pilot (est {fmt_seconds(best.est_s)})",
        )
    idle = next((entry for entry in ranked if entry.ready_now), None)
    if idle is None:
        return Decision(
            Action.WAIT, best.pilot_id, best.wait_s, math.inf,
            f"no pilot has a free slot; best expected to start it in {fmt_seconds(best.wait_s)}"
            + (" (pilot still in the batch queue)" if best.state == "queued" else ""),
        )
    budget = locality_budget(best, idle, weights)
    remaining = budget - now_waited_s
    if remaining <= 0:
        return Decision(
            Action.TAKE_ANY, idle.pilot_id, 0.0, budget,
            f"waited {fmt_seconds(now_waited_s)} for {best.pilot_id}, its locality is worth only "
            f"{fmt_seconds(budget)}: run on any idle pilot",
        )
    if best.wait_s < remaining:
        return Decision(
            Action.WAIT, best.pilot_id, remaining, budget,
            f"{best.pilot_id} expected free in {fmt_seconds(best.wait_s)}, cheaper than moving data "
            f"to idle {idle.pilot_id} ({fmt_seconds(remaining)} of budget {fmt_seconds(budget)} left)",
        )
    return Decision(
        Action.BIND_TO, idle.pilot_id, 0.0, budget,
        f"{best.pilot_id} expected free in {fmt_seconds(best.wait_s)}, not less than the "
        f"{fmt_seconds(remaining)} left of the move cost: take idle {idle.pilot_id}",
    )


@dataclass(frozen=True)
class Waiting:
    """A CU held unbound: its demand, how long it has waited, and the score it waits for.

    ``waiting_for`` is the best pilot's score when the wait began (``waited_s`` counts from then);
    None when it waits for no pilot in particular (nothing was eligible).
    """

    demand: Demand
    waited_s: float = 0.0
    waiting_for: Score | None = None


@dataclass(frozen=True)
class Pick:
    """A CU an idle pilot takes, with its score there and why."""

    cu_id: str
    score: Score
    reason: str


def idle_pick(
    pilot: Candidate,
    queued: Sequence[Waiting],
    model: BandwidthModel,
    *,
    weights: Weights = DEFAULT_WEIGHTS,
    max_picks: int | None = None,
) -> list[Pick]:
    """Which held CUs the idle ``pilot`` should take now, cheapest for it first.

    A CU waiting for another pilot *best* is taken when running here costs no more than waiting:
    ``local(here) - local(best) <= max(waited_s, best.wait_s)`` (weighted), i.e. the extra movement is
    covered by the wait it saves or the CU has waited out its budget, the same rule as :func:`decide`.
    Picks are ordered by their local cost here (cached data first), then the longest-waiting, and
    fill the pilot's available slots. A pilot not running (still in a batch queue) picks nothing.
    """
    if pilot.state != "running":
        return []
    capacity = pilot.available_slots
    takeable: list[tuple[float, float, int, Pick]] = []
    for position, item in enumerate(queued):
        demand = item.demand
        if demand.slots > capacity or exclusion_reason(demand, pilot) is not None:
            continue
        here = score(demand, pilot, model, weights)
        cost_here = local_cost(here, weights)
        target = item.waiting_for
        if target is None or target.pilot_id == pilot.pilot_id:
            reason = "not waiting for another pilot"
        else:
            extra = cost_here - local_cost(target, weights)
            worth = weights.wait * max(item.waited_s, target.wait_s)
            if extra > worth:
                continue
            if extra <= 0:
                reason = f"no more data to move here than on {target.pilot_id}"
            elif item.waited_s >= target.wait_s:
                reason = (
                    f"waited {fmt_seconds(item.waited_s)} for {target.pilot_id}, "
                    f"more than the {fmt_seconds(extra)} the move here costs"
                )
            else:
                reason = (
                    f"{target.pilot_id} expected busy {fmt_seconds(target.wait_s)}, "
                    f"more than the {fmt_seconds(extra)} the move here costs"
                )
        takeable.append((cost_here, -item.waited_s, position, Pick(demand.cu_id, here, reason)))
    takeable.sort(key=lambda entry: entry[:3])
    picks: list[Pick] = []
    for _cost, _waited, position, pick in takeable:
        need = queued[position].demand.slots
        if need <= capacity and (max_picks is None or len(picks) < max_picks):
            picks.append(pick)
            capacity -= need
    return picks
