"""Fixtures for the history tests: a history database URL (SQLite file or a fresh PostgreSQL database)
and a real coordination backend (the embedded SQLite one) in a fresh namespace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pilotdata.coordination import Coordination, connect
from tests import servers


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A history database URL: a tmp SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.sqlite'}"
        return
    server: servers.PostgresServer = request.getfixturevalue("postgres_server")
    name = "h" + uuid.uuid4().hex[:12]
    admin = f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def coordination_url(tmp_path: Path) -> str:
    """URL of an embedded SQLite coordination file of this test."""
    return f"sqlite:///{tmp_path / 'coordination.sqlite'}"


@pytest.fixture
def coordination(coordination_url: str, namespace: str) -> Iterator[Coordination]:
    """The real embedded SQLite coordination backend, in a fresh namespace."""
    coord = connect(coordination_url, namespace=namespace)
    yield coord
    coord.close()
