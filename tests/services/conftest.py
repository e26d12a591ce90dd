"""Fixtures for the Pilot-API services: a session per test on the embedded default or real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata import PilotComputeService
from pilotdata.session import Session
from tests.backends import BackendURLs


@pytest.fixture
def session(coordination_url: str, backend_urls: BackendURLs, tmp_path: Path, namespace: str) -> Iterator[Session]:
    """A session on a fresh SQLite file or a fresh namespace of the real redis-server."""
    with backend_urls.history("sqlite", tmp_path) as history_url:
        s = Session(coordination_url, namespace=namespace, history_url=history_url)
        yield s
        s.close()


@pytest.fixture
def pcs_factory(tmp_path: Path) -> Iterator[list[PilotComputeService]]:
    """Collects services so their pilots are canceled after the test."""
    made: list[PilotComputeService] = []
    yield made
    for pcs in made:
        pcs.cancel()
