"""Fixtures for the Pilot-API services: a session per test on the embedded default or real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata import PilotComputeService
from pilotdata.session import Session
from tests.servers import RedisServer


@pytest.fixture(params=["sqlite", "redis"])
def session(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[Session]:
    """A session on a fresh SQLite file or a fresh namespace of the real redis-server."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'coord.sqlite'}"
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    s = Session(url, namespace=namespace, history_url=f"sqlite:///{tmp_path / 'history.sqlite'}")
    yield s
    s.close()


@pytest.fixture
def sqlite_session(tmp_path: Path, namespace: str) -> Iterator[Session]:
    """A session on a fresh embedded SQLite file."""
    s = Session(f"sqlite:///{tmp_path / 'coord.sqlite'}", namespace=namespace)
    yield s
    s.close()


@pytest.fixture
def pcs_factory(tmp_path: Path) -> Iterator[list[PilotComputeService]]:
    """Collects services so their pilots are canceled after the test."""
    made: list[PilotComputeService] = []
    yield made
    for pcs in made:
        pcs.cancel()
