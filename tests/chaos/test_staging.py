"""An agent killed with SIGKILL while it fetches a CU's input over SFTP (a real sshd): another agent
runs the CU once, and the dead agent's cache keeps no part file."""

from __future__ import annotations

from tests import servers
from tests.chaos.scenarios import Lab, agent_killed_mid_staging


def test_agent_killed_mid_sftp_staging(lab: Lab, sshd_server: servers.SshServer) -> None:
    outcome = agent_killed_mid_staging(lab, sshd_server, size=48 * 2**20)
    assert outcome.problems() == [], outcome.row()
