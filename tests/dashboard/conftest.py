"""Fixtures of the dashboard tests: a real run on Redis, ``pdata dashboard`` as a process, headless Chromium.

Each module gets one run, one dashboard server and one browser (module scope). The run is made by
``pdata`` commands run in this process (the pilot's agent is a process of its own): a store, an uploaded
DataUnit, a fork pilot with two slots, units that succeed, fail with a message on stderr, or name a
missing program. The dashboard is the real command in a process of its own, on a free port, read
through HTTP and through Debian's chromium driven by Playwright (no browser download: the executable
is ``/usr/bin/chromium``, installed by ``scripts/setup --test``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from click.testing import CliRunner, Result

from pilotdata.cli import cli
from pilotdata.coordination import connect
from pilotdata.records import RUN
from pilotdata.states import Kind
from tests import servers
from tests.cli.conftest import pdata_argv

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
"""How the browser is started: headless, and nothing that would reach the network on its own."""
HTML_NAME = '<img src=x onerror="document.body.dataset.pwned=1">'
"""A ComputeUnit name that would run a script if a page inserted it as HTML."""


@dataclass
class DashRun:
    """A finished run on Redis and the settings that reach it."""

    env: dict[str, str]
    home: Path
    pilot: str = ""
    run: str = ""
    ids: dict[str, str] = field(default_factory=dict)
    """ComputeUnit ids by name."""

    def pdata(self, *args: str, code: int | None = 0) -> Result:
        """Run ``pdata ARGS`` (in this process, as click runs it) with this run's settings; check the exit
        status unless ``code`` is None."""
        env: dict[str, str | None] = {k: v for k, v in self.env.items() if k.startswith("PDATA_")}
        env.update({"PDATA_CONFIG": None, "PDATA_RUN": None, "PDATA_DEBUG": None})
        out = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        assert code is None or out.exit_code == code, (args, out.exit_code, out.stdout, out.stderr)
        return out

    def coordination_counts(self) -> Counter[str]:
        """The run's ComputeUnits by state, read from every CU record in coordination (the truth)."""
        coord = connect(self.env["PDATA_URL"], self.env["PDATA_NAMESPACE"])
        try:
            records = coord.get_many(Kind.CU, coord.list_ids(Kind.CU))
            return Counter(r.state for r in records if r is not None and r.data.get(RUN) == self.run)
        finally:
            coord.close()


def run_env(redis: servers.RedisServer, home: Path) -> DashRun:
    """Settings of a new namespace on ``redis`` with its own PDATA_HOME and SQLite history under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PDATA_HOME": str(home / "pdata-home"), "PDATA_URL": redis.url,
           "PDATA_NAMESPACE": "dash" + uuid.uuid4().hex[:10],
           "PDATA_HISTORY_URL": f"sqlite:///{home / 'history.sqlite'}"}
    for name in ("PDATA_CONFIG", "PDATA_RUN", "PDATA_DEBUG"):
        env.pop(name, None)
    return DashRun(env, home)


def make_run(redis: servers.RedisServer, home: Path, *, ok: int = 24) -> DashRun:
    """Store, DataUnit, a two-slot fork pilot at site-a, ``ok`` units reading the DataUnit, two that fail
    with ``doomed`` on stderr, one naming a missing program, one with an HTML name; wait for all."""
    run = run_env(redis, home)
    (home / "db.bin").write_bytes(os.urandom(300_000))
    run.pdata("store", "add", "s1", f"file://{home / 's1'}")
    run.pdata("put", str(home / "db.bin"), "--name", "db")
    run.pilot = run.pdata("pilot", "start", "fork://localhost", "--cores", "2", "--label", "datacenter=site-a",
                          "--heartbeat-ttl", "5", "--wait", "--timeout", "60").stdout.strip()
    for i in range(ok):
        run.ids[f"task-{i:02d}"] = run.pdata("submit", "--name", f"task-{i:02d}", "--input", "db", "--",
                                             "/bin/sh", "-c", f"echo line {i}").stdout.strip()
    for name in ("bad-1", "bad-2"):
        run.ids[name] = run.pdata("submit", "--name", name, "--", "/bin/sh", "-c",
                                  "echo doomed >&2; exit 7").stdout.strip()
    run.ids["missing"] = run.pdata("submit", "--name", "missing", "--", "/no/such/program").stdout.strip()
    run.ids["html"] = run.pdata("submit", "--name", HTML_NAME, "--", "/bin/true").stdout.strip()
    run.pdata("wait", "--timeout", "120", code=1)  # three failed
    run.run = json.loads(run.pdata("--json", "cu", "ls").stdout)["run"]
    return run


@dataclass
class DashServer:
    """A running ``pdata dashboard`` process and the URL it printed."""

    proc: subprocess.Popen[str]
    url: str
    stderr: Path

    @property
    def origin(self) -> str:
        """``http://host:port``."""
        return self.url.split("/", 3)[0] + "//" + self.url.split("/", 3)[2]

    @property
    def token(self) -> str:
        """The access token (the first path segment)."""
        return self.url.rstrip("/").rsplit("/", 1)[1]

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then the exit status (SIGKILL after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return int(self.proc.returncode)


def start_dashboard(env: dict[str, str], directory: Path, *args: str, timeout: float = 60) -> DashServer:
    """Start ``pdata dashboard ARGS`` and wait for the URL it prints on stdout."""
    directory.mkdir(parents=True, exist_ok=True)
    stderr = directory / f"dashboard-{uuid.uuid4().hex[:6]}.stderr"
    with stderr.open("w") as err:
        proc = subprocess.Popen([*pdata_argv(), "dashboard", *args], stdout=subprocess.PIPE, stderr=err, text=True,
                                env=env)
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())

    threading.Thread(target=read, daemon=True).start()
    try:
        servers.wait_until(lambda: lines or proc.poll() is not None, timeout, "pdata dashboard to print its URL")
        if not lines:
            raise AssertionError(f"pdata dashboard exited {proc.returncode}: {stderr.read_text()}")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return DashServer(proc, lines[0], stderr)


def http_get(url: str, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """``GET url``: status, headers (lower-case names) and body; HTTP errors are returned, not raised."""
    try:
        with urlopen(Request(url), timeout=timeout) as response:  # loopback only
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """The TCP sockets process ``pid`` listens on, as (address, port), read from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            if width == 8:
                address = ".".join(str(b) for b in raw[::-1])
            else:  # four little-endian 32-bit words
                import ipaddress

                address = str(ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
            found.append((address, int(hex_port, 16)))
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's) through Playwright, for the whole module."""
    try:
        from playwright import sync_api
    except ImportError as exc:
        raise RuntimeError("Playwright is missing: install the test extra (pip install -e '.[test]')") from exc
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} not found: install the Debian package chromium (scripts/test does)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
