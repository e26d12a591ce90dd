"""Shared fixtures: real servers (session-scoped), an isolated PDATA_HOME per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the developer's real data directory or coordination URL."""
    monkeypatch.setenv("PDATA_HOME", str(tmp_path / "pdata-home"))
    monkeypatch.delenv("PDATA_URL", raising=False)
    monkeypatch.delenv("PDATA_HISTORY_URL", raising=False)
    monkeypatch.delenv("PDATA_NAMESPACE", raising=False)


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
