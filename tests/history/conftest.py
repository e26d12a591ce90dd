"""Fixtures for the history tests: ``history_url`` (SQLite file or a fresh PostgreSQL database, from
tests/conftest.py) and a real coordination backend, the embedded SQLite one, in a fresh namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata.coordination import Coordination, connect
from tests.backends import BackendURLs


@pytest.fixture
def coordination_url(backend_urls: BackendURLs, tmp_path: Path) -> str:
    """The embedded SQLite coordination file of this test: the history tests drain one backend
    (draining Redis has its own tests, test_redis_drain.py)."""
    return backend_urls.coordination("sqlite", tmp_path)


@pytest.fixture
def coordination(coordination_url: str, namespace: str) -> Iterator[Coordination]:
    """The real embedded SQLite coordination backend, in a fresh namespace."""
    coord = connect(coordination_url, namespace=namespace)
    yield coord
    coord.close()
