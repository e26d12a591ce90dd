"""Fixtures of the coordination suite: every test using ``coord`` / ``make`` runs on both backends.

Redis runs against the session's real ``redis_server``; SQLite against a fresh file under ``tmp_path``.
Each test gets its own namespace, so tests sharing the Redis server never see each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pilotdata.coordination import Coordination, connect

BACKENDS = ("redis", "sqlite")

MakeCoordination = Callable[..., Coordination]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The coordination URL of the backend under test."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_server").url)
    return f"sqlite:///{tmp_path / 'coord' / 'coordination.sqlite'}"


@pytest.fixture
def make(backend_url: str, namespace: str) -> Iterator[MakeCoordination]:
    """Open another handle on the same backend (``make()``: same namespace; ``make("x")``: namespace x)."""
    opened: list[Coordination] = []

    def factory(ns: str | None = None) -> Coordination:
        coordination = connect(backend_url, ns or namespace)
        opened.append(coordination)
        return coordination

    yield factory
    for coordination in opened:
        coordination.close()


@pytest.fixture
def coord(make: MakeCoordination) -> Coordination:
    """A coordination handle on the backend under test, in a fresh namespace."""
    return make()
