"""Where each test package gets its backend URLs: the real servers of the session, or files of a test.

``tests/conftest.py`` gives one :class:`BackendURLs` to the whole session (fixture ``backend_urls``) and
builds the parametrised ``coordination_url`` / ``history_url`` fixtures on it; fixtures of a wider scope
(an agent shared by a module) call it with their own directory. Servers start on first use only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests import servers

COORDINATION_BACKENDS = ("sqlite", "redis")
"""Coordination backends every backend-neutral test runs on: the embedded SQLite file, real Redis."""

HISTORY_BACKENDS = ("sqlite", "postgresql")
"""History databases the history tests run on: a SQLite file, real PostgreSQL."""


class BackendURLs:
    """URLs of fresh backends by name. ``request`` is a session-scoped fixture request."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request

    def coordination(self, backend: str, directory: Path) -> str:
        """A coordination URL: a SQLite file in ``directory`` or the session's redis-server.

        Redis is shared by the session: tests keep apart by namespace (fixture ``namespace``).
        """
        if backend == "sqlite":
            return f"sqlite:///{directory / 'coordination.sqlite'}"
        if backend == "redis":
            server: servers.RedisServer = self._request.getfixturevalue("redis_server")
            return server.url
        raise ValueError(f"unknown coordination backend {backend!r}; expected one of {COORDINATION_BACKENDS}")

    @contextmanager
    def history(self, backend: str, directory: Path) -> Iterator[str]:
        """A history database URL: a SQLite file in ``directory``, or a new database on the session's
        PostgreSQL (dropped on exit)."""
        if backend == "sqlite":
            yield f"sqlite:///{directory / 'history.sqlite'}"
            return
        if backend != "postgresql":
            raise ValueError(f"unknown history backend {backend!r}; expected one of {HISTORY_BACKENDS}")
        import psycopg  # only the PostgreSQL tests need the driver

        server: servers.PostgresServer = self._request.getfixturevalue("postgres_server")
        name = "h" + uuid.uuid4().hex[:12]
        admin = f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/{name}"
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
