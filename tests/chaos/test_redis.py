"""Redis shut down, or killed with SIGKILL, and restarted from its AOF while a client waits in
``ComputeDataService.wait()``; Redis away for longer than the heartbeat TTL. The client rides it out,
no CU is lost or completed twice, and a short outage ends no pilot."""

from __future__ import annotations

import pytest

from tests.chaos.scenarios import Lab, redis_outage


@pytest.mark.parametrize("kill", [False, True], ids=["shutdown", "kill-9"])
def test_redis_restart_while_a_client_waits(redis_lab: Lab, kill: bool) -> None:
    outcome = redis_outage(redis_lab, down=1.5, kill=kill, n=40, seconds=0.3)
    assert outcome.problems() == [], outcome.row()


def test_redis_down_longer_than_the_heartbeat_ttl(redis_lab: Lab) -> None:
    outcome = redis_outage(redis_lab, down=3 * redis_lab.ttl, kill=True, n=40, seconds=0.3)
    assert outcome.problems() == [], outcome.row()
