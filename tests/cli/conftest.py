"""Fixtures of the ``pdata`` tests: a CliRunner wrapper, a coordination snapshot, real fork pilots.

Every test runs in its own PDATA_HOME (the autouse fixture of ``tests/conftest.py``) and its own
namespace (``PDATA_NAMESPACE``, set here), so the embedded SQLite default is fresh for each test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pilotdata.cli import cli
from pilotdata.coordination import connect
from pilotdata.states import Kind
from tests import servers


@dataclass
class Pdata:
    """Runs ``pdata`` in-process through click's CliRunner and checks the exit status."""

    runner: CliRunner

    def __call__(self, *args: str, code: int = 0, input: str | None = None,
                 env: Mapping[str, str | None] | None = None) -> Result:
        """``pdata ARGS``; asserts the exit status is ``code`` (stdout/stderr in the failure message)."""
        result = self.runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=False)
        assert result.exit_code == code, (
            f"pdata {' '.join(args)} exited {result.exit_code}, expected {code}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def json(self, *args: str, code: int = 0, env: Mapping[str, str | None] | None = None) -> Any:
        """``pdata --json ARGS`` parsed."""
        return json.loads(self("--json", *args, code=code, env=env).stdout)

    def error(self, *args: str, code: int = 2, env: Mapping[str, str | None] | None = None) -> str:
        """Run a command that must fail with ``code``; return its one error line (asserted to be one)."""
        result = self(*args, code=code, env=env)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one error line, got:\n{result.stderr}"
        assert lines[0].startswith("Error: "), lines[0]
        assert result.stdout == "", result.stdout
        return lines[0]


@pytest.fixture(autouse=True)
def _own_namespace(monkeypatch: pytest.MonkeyPatch) -> str:
    """A namespace per test (process-wide caches key on it), and an existing PDATA_HOME (as after a first
    use; read commands refuse one that does not exist, see test_basics)."""
    import os

    Path(os.environ["PDATA_HOME"]).mkdir(parents=True, exist_ok=True)
    ns = "cli" + uuid.uuid4().hex[:10]
    monkeypatch.setenv("PDATA_NAMESPACE", ns)
    monkeypatch.delenv("PDATA_CONFIG", raising=False)
    monkeypatch.delenv("PDATA_DEBUG", raising=False)
    return ns


@pytest.fixture
def pdata() -> Pdata:
    """The in-process ``pdata`` runner."""
    return Pdata(CliRunner())


def pdata_argv() -> list[str]:
    """How to run the installed ``pdata`` console script (``python -m pilotdata.cli`` if not installed)."""
    exe = shutil.which("pdata")
    return [exe] if exe else [sys.executable, "-m", "pilotdata.cli"]


def run_pdata(args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``pdata`` program in a subprocess."""
    return subprocess.run([*pdata_argv(), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, check=False)


def snapshot(url: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    """Everything a command could change in coordination: entities (state, data), queues and events."""
    from pilotdata.config import default_coordination_url, default_namespace

    coord = connect(url or default_coordination_url(), namespace or default_namespace())
    try:
        out: dict[str, Any] = {"cursor": coord.last_cursor(), "shared": coord.queued(None)}
        for kind in Kind:
            ids = coord.list_ids(kind)
            out[kind.value] = {r.id: (r.state, r.data) for r in coord.get_many(kind, ids) if r is not None}
        out["queues"] = {p: coord.queued(p) for p in out[Kind.PILOT.value]}
        return out
    finally:
        coord.close()


@pytest.fixture
def pilot(pdata: Pdata) -> Iterator[str]:
    """A real fork pilot (2 slots) started through ``pdata pilot start --wait``; stopped afterwards."""
    pilot_id = pdata("pilot", "start", "fork://localhost", "--cores", "2", "--heartbeat-ttl", "3",
                     "--wait", "--timeout", "60").stdout.strip()
    yield pilot_id
    pdata("pilot", "stop", "--all")


@pytest.fixture(scope="module")
def secret_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RedisServer]:
    """A real redis-server that requires a password (to prove pdata never prints it)."""
    server = servers.start_redis(tmp_path_factory.mktemp("redis-auth"), password="pw-" + uuid.uuid4().hex)
    yield server
    server.stop()
