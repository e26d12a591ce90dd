"""Shared fixtures: real servers (session-scoped), the backend URLs every package uses, an isolated
PDATA_HOME per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata.session import Session
from tests import servers
from tests.backends import COORDINATION_BACKENDS, HISTORY_BACKENDS, BackendURLs


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the developer's real data directory or coordination URL."""
    monkeypatch.setenv("PDATA_HOME", str(tmp_path / "pdata-home"))
    monkeypatch.delenv("PDATA_URL", raising=False)
    monkeypatch.delenv("PDATA_HISTORY_URL", raising=False)
    monkeypatch.delenv("PDATA_NAMESPACE", raising=False)
    monkeypatch.delenv("PDATA_CHECKSUM", raising=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RedisServer]:
    """A real redis-server on a free loopback port for the whole session."""
    server = servers.start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.PostgresServer]:
    """A real PostgreSQL cluster on a free loopback port for the whole session."""
    server = servers.start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.SshServer]:
    """A real OpenSSH sshd on a free loopback port with key login and a known_hosts file."""
    server = servers.start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.MotoServer]:
    """A real moto_server (S3 API) on a free loopback port."""
    server = servers.start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def namespace() -> str:
    """A fresh coordination namespace per test, so tests sharing one server never collide."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def backend_urls(request: pytest.FixtureRequest) -> BackendURLs:
    """The one place test packages get backend URLs from (servers start on first use)."""
    return BackendURLs(request)


@pytest.fixture(params=COORDINATION_BACKENDS)
def coordination_url(request: pytest.FixtureRequest, backend_urls: BackendURLs, tmp_path: Path) -> str:
    """A coordination URL on each backend: a SQLite file of this test, the session's redis-server."""
    return backend_urls.coordination(request.param, tmp_path)


@pytest.fixture(params=HISTORY_BACKENDS)
def history_url(request: pytest.FixtureRequest, backend_urls: BackendURLs, tmp_path: Path) -> Iterator[str]:
    """A history database URL on each backend: a SQLite file of this test, a new PostgreSQL database."""
    with backend_urls.history(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_session(backend_urls: BackendURLs, tmp_path: Path, namespace: str) -> Iterator[Session]:
    """A session on a fresh embedded SQLite file."""
    s = Session(backend_urls.coordination("sqlite", tmp_path), namespace=namespace)
    yield s
    s.close()
