"""Fixtures of the agent tests: a coordination URL per backend (SQLite file, real Redis) and a
long-lived agent per backend that the behaviour tests share (starting an agent costs ~0.5 s)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pilotdata.coordination import Coordination, connect
from pilotdata.states import Kind
from tests import servers
from tests.agent.harness import AgentProcess
from tests.backends import COORDINATION_BACKENDS, BackendURLs


@dataclass
class Backend:
    """A coordination URL and namespace, plus a client connection to it."""

    name: str
    url: str
    namespace: str
    coord: Coordination


@pytest.fixture(params=COORDINATION_BACKENDS)
def backend(request: pytest.FixtureRequest, backend_urls: BackendURLs, tmp_path: Path) -> Iterator[Backend]:
    """A fresh namespace on each backend (function scope)."""
    ns = "a" + uuid.uuid4().hex[:12]
    url = backend_urls.coordination(request.param, tmp_path)
    coord = connect(url, ns)
    yield Backend(request.param, url, ns, coord)
    coord.close()


@dataclass
class SharedAgent:
    """A running agent (4 slots) and its backend, shared by the tests of a module."""

    backend: Backend
    agent: AgentProcess
    workdir: Path

    @property
    def coord(self) -> Coordination:
        """Client connection to the agent's coordination namespace."""
        return self.backend.coord

    @property
    def pilot(self) -> str:
        """The agent's pilot id."""
        return self.agent.pilot


@pytest.fixture(scope="module", params=COORDINATION_BACKENDS)
def shared_agent(
    request: pytest.FixtureRequest, backend_urls: BackendURLs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedAgent]:
    """One agent with 4 slots per backend for a whole test module; stopped with SIGTERM at the end."""
    directory = tmp_path_factory.mktemp(f"agent-{request.param}")
    ns = "m" + uuid.uuid4().hex[:12]
    url = backend_urls.coordination(request.param, directory)
    coord = connect(url, ns)
    pilot = f"pilot-{request.param}"
    coord.create(Kind.PILOT, pilot, {"slots": 4})
    coord.transition(Kind.PILOT, pilot, "Pending")
    workdir = directory / "work"
    agent = AgentProcess(
        url, ns, pilot, workdir, "--slots", "4", "--heartbeat-ttl", "3", "--kill-grace", "1",
        env={"PDATA_HOME": str(directory / "home")},
    )
    try:
        servers.wait_until(
            lambda: coord.get(Kind.PILOT, pilot).state == "Running", 20, f"agent {pilot} to register"
        )
        yield SharedAgent(Backend(request.param, url, ns, coord), agent, workdir)
        assert agent.terminate(30) == 0, agent.log
        assert coord.get(Kind.PILOT, pilot).state == "Done"
        assert not coord.is_alive(pilot)
    finally:
        agent.stop()
        coord.close()
