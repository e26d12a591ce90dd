"""``pdata dashboard`` as a server: it listens on the address asked and nothing else, rides out a Redis
outage (saying so on the page, serving what it knew), stops cleanly on SIGTERM, and refuses bad options
with one line naming the option (exit 2) or a missing extra with the install hint."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pilotdata.cli import cli
from tests import servers
from tests.dashboard.conftest import DashRun, DashServer, http_get, listening_sockets, run_env, start_dashboard
from tests.servers import wait_until

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RedisServer]:
    """A redis-server of this module (the outage test stops and restarts it), with an append-only file."""
    server = servers.start_redis(tmp_path_factory.mktemp("redis-outage"), extra=servers.DURABLE)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small_run(own_redis: servers.RedisServer, tmp_path_factory: pytest.TempPathFactory) -> DashRun:
    """Two units waiting on the shared queue (no pilot) and an uploaded DataUnit."""
    home = tmp_path_factory.mktemp("dash-small")
    run = run_env(own_redis, home)
    (home / "f.txt").write_text("x" * 1000)
    run.pdata("store", "add", "s1", f"file://{home / 's1'}")
    run.pdata("put", str(home / "f.txt"), "--name", "f")
    for name in ("a", "b"):
        run.ids[name] = run.pdata("submit", "--name", name, "--", "/bin/true").stdout.strip()
    return run


@pytest.fixture(scope="module")
def server(small_run: DashRun) -> Iterator[DashServer]:
    """The dashboard on another loopback address than the default, refreshing often."""
    dash = start_dashboard(small_run.env, small_run.home, "--bind", "127.0.0.2", "--port", "0", "--interval", "0.3")
    yield dash
    dash.stop()


def _meta(dash: DashServer) -> dict[str, Any]:
    status, _, body = http_get(f"{dash.url}api/meta")
    assert status == 200
    return dict(json.loads(body))


def test_it_listens_on_the_address_asked_and_nowhere_else(server: DashServer) -> None:
    assert server.url.startswith("http://127.0.0.2:")
    port = int(server.origin.rsplit(":", 1)[1])
    assert listening_sockets(server.proc.pid) == [("127.0.0.2", port)]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # not on the default address
    status, _, body = http_get(server.url)
    assert status == 200 and b"static/dashboard.js" in body
    assert "warning" not in server.stderr.read_text()  # 127.0.0.2 is loopback too


def test_a_redis_outage_is_said_on_the_page_and_survived(server: DashServer, small_run: DashRun,
                                                         own_redis: servers.RedisServer) -> None:
    cu = small_run.ids["a"]
    wait_until(lambda: _meta(server)["refreshed"] is not None, 20, "a first refresh")
    status, _, body = http_get(f"{server.url}api/counts")
    assert status == 200 and json.loads(body)["total"] == {"Pending": 2}
    own_redis.stop()
    try:
        meta = wait_until(lambda: (m := _meta(server))["error"] and m, 20, "the page to report the outage")
        assert f"127.0.0.1:{own_redis.port}" in meta["error"] and meta["error_since"] is not None
        status, _, body = http_get(f"{server.url}api/counts")  # what was known: the last generation's answer
        assert status == 200 and json.loads(body)["total"] == {"Pending": 2}
        status, _, body = http_get(f"{server.url}api/cu/{cu}")  # a live read: refused with the reason
        assert status == 503 and "cannot reach Redis" in json.loads(body)["error"]
        status, _, body = http_get(f"{server.url}api/cus?name=a")  # the history still answers
        assert status == 200 and [r["id"] for r in json.loads(body)["rows"]] == [cu]
        failing_since = meta["error_since"]
    finally:
        own_redis.start_again()  # same port, directory and append-only file
    meta = wait_until(lambda: (m := _meta(server))["error"] is None and m, 30, "the refresh to recover")
    assert meta["refreshed"] > failing_since and meta["error_since"] is None
    status, _, body = http_get(f"{server.url}api/cu/{cu}")
    assert status == 200 and json.loads(body)["state"] == "Pending"
    assert server.proc.poll() is None


def test_sigterm_stops_it_with_status_0_and_frees_the_port(server: DashServer) -> None:
    port = int(server.origin.rsplit(":", 1)[1])
    assert server.stop() == 0
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.2", port)) != 0


# ------------------------------------------------------------------------------ bad options (no server)
@pytest.fixture
def home(tmp_path: Path) -> Path:
    import os

    path = Path(os.environ["PDATA_HOME"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def _error(*args: str, code: int = 2) -> str:
    result = CliRunner().invoke(cli, ["dashboard", *args], catch_exceptions=False)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def test_bad_options_are_refused_naming_the_option(home: Path) -> None:
    assert "--port" in _error("--port", "70000") and "65535" in _error("--port", "70000")
    assert "--bind" in _error("--bind", "no-such-host.invalid")
    assert "no-such-run" in _error("--run", "no-such-run")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = _error("--port", str(port))
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port" in line
    assert "--interval" in _error("--interval", "0")


def test_without_the_extra_it_says_how_to_install_it(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    line = _error(code=1)
    assert "pdata dashboard needs Starlette and uvicorn" in line and "pip install 'pilot-data[dashboard]'" in line


def test_connections_send_without_waiting_for_acks() -> None:
    """The socket says it is TCP, so asyncio turns Nagle's algorithm off on every connection: a response
    written as head then body is not held ~40 ms for the client's delayed ACK (seen on every request over
    a kept-alive connection when the socket was made with protocol 0)."""
    import asyncio

    from pilotdata.dashboard import bind

    listener = bind("127.0.0.1", 0)

    async def accept_one() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=listener.sock)
        _, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        try:
            return await asyncio.wait_for(accepted, 10)
        finally:
            writer.close()
            server.close()

    try:
        assert asyncio.run(accept_one()) != 0
    finally:
        listener.sock.close()
