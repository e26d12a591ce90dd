"""Fixtures for BigJob-style scripts: each runs as a real script in a subprocess, on the embedded
default (SQLite) or on a real redis-server, and the test then reads what it produced.

A :class:`ScriptEnv` gives a script its coordination through the environment (``PDATA_URL``,
``PDATA_NAMESPACE``, and ``COORDINATION_URL`` for scripts that pass it as BigJob's did), a data home
of its own, and a working directory. After the test every pilot still alive in its namespace is
canceled, so a failing script leaves no agent behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pilotdata import PilotComputeService
from pilotdata.coordination import EntityRecord
from pilotdata.session import Session
from pilotdata.states import Kind
from tests.servers import RedisServer

SCRIPT_TIMEOUT = 180.0
"""Bound on one script's run (they take a few seconds)."""


@dataclass
class ScriptEnv:
    """Where a BigJob-style script runs: coordination URL and namespace, data home, working directory."""

    url: str
    namespace: str
    home: Path
    work: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    _session: Session | None = None

    def environment(self, **extra: str) -> dict[str, str]:
        """The script's environment: this process's, pointed at this coordination."""
        return {**os.environ, "PDATA_URL": self.url, "PDATA_NAMESPACE": self.namespace,
                "PDATA_HOME": str(self.home), "COORDINATION_URL": self.url, **self.extra_env, **extra}

    def run(self, script: str, *args: str, name: str = "script", timeout: float = SCRIPT_TIMEOUT,
            check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        """Write ``script`` (dedented) to ``<work>/<name>.py`` and run it there with this interpreter."""
        path = self.work / f"{name}.py"
        path.write_text(textwrap.dedent(script))
        out = subprocess.run([sys.executable, str(path), *args], cwd=self.work, env=self.environment(**env),
                             capture_output=True, text=True, timeout=timeout, check=False)
        if check:
            assert out.returncode == 0, f"{name} exited {out.returncode}\n{out.stdout}\n{out.stderr}"
        return out

    @property
    def session(self) -> Session:
        """A session on the script's coordination, for the test's own checks."""
        if self._session is None:
            self._session = Session(self.url, namespace=self.namespace,
                                    history_url=f"sqlite:///{self.home / 'history.sqlite'}")
        return self._session

    def records(self, kind: Kind) -> list[EntityRecord]:
        """Every record of ``kind`` in the namespace, oldest first."""
        coord = self.session.coord
        found = [r for r in coord.get_many(kind, coord.list_ids(kind)) if r is not None]
        return sorted(found, key=lambda r: r.created)

    def close(self) -> None:
        """Cancel the pilots a script left running; close the session."""
        session = self.session
        try:
            PilotComputeService(session=session).cancel()
        finally:
            session.close()


def _coordination_url(kind: str, request: pytest.FixtureRequest, directory: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{directory / 'coordination.sqlite'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture(params=["sqlite", "redis"])
def bj(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ScriptEnv]:
    """A fresh namespace on the embedded default or on the session's redis-server."""
    work = tmp_path / "work"
    work.mkdir()
    env = ScriptEnv(_coordination_url(request.param, request, tmp_path), "bj" + uuid.uuid4().hex[:10],
                    tmp_path / "home", work)
    yield env
    env.close()


@pytest.fixture
def bj_sqlite(tmp_path: Path) -> Iterator[ScriptEnv]:
    """A fresh embedded-default namespace only (for the tests that add another server)."""
    work = tmp_path / "work"
    work.mkdir()
    env = ScriptEnv(f"sqlite:///{tmp_path / 'coordination.sqlite'}", "bj" + uuid.uuid4().hex[:10],
                    tmp_path / "home", work)
    yield env
    env.close()


def lines_with(prefix: str, out: subprocess.CompletedProcess[str]) -> list[str]:
    """The script's stdout lines starting with ``prefix``, without it."""
    return [line[len(prefix):].strip() for line in out.stdout.splitlines() if line.startswith(prefix)]


def sandbox_file(record: EntityRecord, name: str) -> str:
    """The text of file ``name`` in a CU's sandbox."""
    sandbox: Any = record.data.get("sandbox")
    assert sandbox, f"{record.id} has no sandbox: {record.data}"
    return (Path(sandbox) / name).read_text()
