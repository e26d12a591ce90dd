"""plan_requeue, the pure function behind requeue_lost (no backend: the suite checks both follow it)."""

from __future__ import annotations

import pytest

from pilotdata.coordination import RequeueResult, TransitionRequest
from pilotdata.coordination.requeue import (
    ClaimedCU,
    final_states,
    lost_details,
    plan_requeue,
    started_states,
)

CLAIMED = [
    ClaimedCU("placed", "Pending"),
    ClaimedCU("done", "Done"),
    ClaimedCU("waiting", "Pending"),
    ClaimedCU("running", "Running"),
    ClaimedCU("staging", "StagingInput", 1),
    ClaimedCU("spent", "Running", 2),
    ClaimedCU("deleted", None),
    ClaimedCU("new", "New"),
    ClaimedCU("canceled", "Canceled", 3),
    ClaimedCU("uploading", "StagingOutput", 1),
]


def test_the_documented_decisions_and_queue_order() -> None:
    plan = plan_requeue("p", CLAIMED, ["placed-later"], max_reassign=2)
    requeue, fail = lost_details("p", 2)
    assert plan.moves == (
        TransitionRequest("running", "Pending", "Running", "p", requeue),
        TransitionRequest("staging", "Pending", "StagingInput", "p", requeue),
        TransitionRequest("spent", "Failed", "Running", "p", fail),
        TransitionRequest("uploading", "Pending", "StagingOutput", "p", requeue),
    )
    assert plan.requeued == ("placed", "waiting", "running", "staging", "new", "uploading", "placed-later")
    assert plan.failed == ("spent",)
    assert plan.dropped == ("done", "deleted", "canceled")
    assert plan.result() == RequeueResult("p", list(plan.requeued), ["spent"], ["done", "deleted", "canceled"])
    assert requeue == {"reason": "pilot 'p' lost; requeued", "lost_pilot": "p"}
    assert fail == {"reason": "pilot 'p' lost; reassign limit 2 reached", "lost_pilot": "p"}


@pytest.mark.parametrize(("attempt", "max_reassign", "to"), [(0, 0, "Failed"), (0, 1, "Pending"), (2, 3, "Pending"),
                                                             (3, 3, "Failed"), (5, 3, "Failed")])
def test_the_reassign_limit(attempt: int, max_reassign: int, to: str) -> None:
    plan = plan_requeue("p", [ClaimedCU("c", "Running", attempt)], [], max_reassign)
    assert [m.to for m in plan.moves] == [to]
    assert (plan.requeued, plan.failed) == ((("c",), ()) if to == "Pending" else ((), ("c",)))


def test_the_state_sets_come_from_the_table() -> None:
    assert final_states() == {"Done", "Failed", "Canceled"}
    assert started_states() == {"StagingInput", "Running", "StagingOutput"}


def test_nothing_claimed_gives_back_the_own_queue() -> None:
    plan = plan_requeue("p", [], ["a", "b"], 3)
    assert (plan.moves, plan.requeued, plan.failed, plan.dropped) == ((), ("a", "b"), (), ())


def test_moves_that_did_not_apply_are_dropped() -> None:
    plan = plan_requeue("p", CLAIMED, ["placed-later"], max_reassign=2)
    left = plan.without(["spent", "running"])
    assert [m.id for m in left.moves] == ["staging", "uploading"]
    assert "running" not in left.requeued and left.failed == ()
    assert left.dropped == ("done", "deleted", "canceled", "spent", "running")
    assert plan.without([]) is plan


def test_pure() -> None:
    claimed = list(CLAIMED)
    assert plan_requeue("p", claimed, ["x"], 2) == plan_requeue("p", claimed, ["x"], 2)
    assert claimed == CLAIMED
