"""An agent killed with SIGKILL, or stopped by SIGTERM that reaches its CUs too, mid-run: every CU ends
Done exactly once (counted by the CUs' own markers), nothing is stranded, no process is left."""

from __future__ import annotations

from tests.chaos.scenarios import Lab, kill9_agent, sigterm_agent


def test_kill_9_of_an_agent(lab: Lab) -> None:
    outcome = kill9_agent(lab, n=40, seconds=0.3)
    assert outcome.problems() == [], outcome.row()
    assert outcome.detection_s is not None and outcome.detection_s < 3 * lab.ttl


def test_sigterm_to_an_agent_and_its_cus(lab: Lab) -> None:
    outcome = sigterm_agent(lab, n=30, seconds=0.5)
    assert outcome.problems() == [], outcome.row()
    assert outcome.detection_s is not None and outcome.detection_s < 5  # handed back by the agent itself
