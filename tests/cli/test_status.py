"""``pdata status``: where ComputeUnits are counted (a busy pilot's queue, the shared queue after a kill -9),
the header agreeing with the rows, and ``--watch`` redrawing in place in a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from pilotdata.config import default_coordination_url, default_namespace
from pilotdata.coordination import connect
from pilotdata.states import Kind
from tests.cli.conftest import Pdata, pdata_argv
from tests.servers import wait_until


def _coord_state(kind: Kind, entity: str) -> str:
    coord = connect(default_coordination_url(), default_namespace())
    try:
        return coord.get(kind, entity).state
    finally:
        coord.close()


def _shared_row(status: dict[str, Any]) -> dict[str, int]:
    row: dict[str, int] = status["compute_units"]["by_place"].get("(shared queue)", {})
    return row


def test_a_cu_bound_to_a_busy_pilot_counts_under_it(pdata: Pdata) -> None:
    pilot = pdata("pilot", "start", "fork://localhost", "--cores", "1", "--label", "datacenter=site-a",
                  "--wait", "--timeout", "60").stdout.strip()
    try:
        busy = pdata("submit", "--label", "datacenter=site-a", "--", "/bin/sleep", "30").stdout.strip()
        wait_until(lambda: _coord_state(Kind.CU, busy) == "Running", 30, "the first CU to run")
        bound = pdata.json("submit", "--label", "datacenter=site-a", "--", "/bin/true")
        assert bound["state"] == "Pending" and bound["pilot"] == pilot  # waits for the busy pilot
        status = pdata.json("status")
        assert status["compute_units"]["by_place"] == {pilot: {"Running": 1, "Pending": 1}}
        assert status["shared_queue"] == 0 == _shared_row(status).get("Pending", 0)
        assert [(p["id"], p["slots"], p["busy"], p["queued"]) for p in status["pilots"]] == [(pilot, 1, 1, 1)]
        lines = pdata("status").stdout.splitlines()
        assert lines[1] == "pilots: 1 live, 1 slots, 1 busy; shared queue: 0 Pending"
        header = lines[3].split()
        row = lines[4].split()
        assert header == ["PLACE", "SITE", "PILOT", "STATE", "Pending", "Running", "ALL"]
        assert row == [pilot, "site-a", "Running", "1", "1", "2"]
        assert "(shared queue)" not in "\n".join(lines)
        explained = pdata.json("explain", bound["id"])  # explain agrees: not "pilot -"
        assert explained["where"] == pilot and f"waiting on: {pilot}" in explained["explanation"]
        pdata("cancel", busy)
        pdata("wait", bound["id"], "--timeout", "60")
    finally:
        pdata("pilot", "stop", "--all")


def test_after_a_kill_9_the_requeued_cu_is_in_the_shared_queue(pdata: Pdata) -> None:
    pilot = pdata("pilot", "start", "fork://localhost", "--cores", "1", "--heartbeat-ttl", "3", "--wait",
                  "--timeout", "60").stdout.strip()
    try:
        cu = pdata("submit", "--", "/bin/sleep", "60").stdout.strip()
        wait_until(lambda: _coord_state(Kind.CU, cu) == "Running", 30, "the CU to run")
        coord = connect(default_coordination_url(), default_namespace())
        try:
            pid = int(coord.get(Kind.PILOT, pilot).data["pid"])
        finally:
            coord.close()
        os.kill(pid, signal.SIGKILL)
        status = wait_until(lambda: (s := pdata.json("status"))["shared_queue"] == 1 and s, 30,
                            "status to find the dead pilot and its requeued CU")
        assert status["compute_units"]["by_place"] == {"(shared queue)": {"Pending": 1}}
        assert status["pilots"] == []  # the dead pilot is no live pilot
        assert _coord_state(Kind.PILOT, pilot) == "Failed"
        text = pdata("status").stdout
        assert "shared queue: 1 Pending" in text and pilot not in text
        shown = pdata.json("cu", "show", cu)
        assert (shown["state"], shown["place"], shown["attempt"]) == ("Pending", "", 1)
    finally:
        pdata("pilot", "stop", "--all")
        pdata("cancel", "--all")


def test_watch_without_a_terminal_prints_frames(pdata: Pdata) -> None:
    out = pdata("status", "--watch", "--interval", "0.1", "--count", "2").stdout
    frames = out.split("\n\n\n")
    assert out.count("pdata status: ") == 2 and "\x1b[" not in out
    assert "(Ctrl-C to stop)" in frames[0] or "Ctrl-C to stop" in out
    assert "--watch draws a live view" in pdata.error("--json", "status", "--watch")


def test_watch_redraws_in_place_in_a_terminal_and_exits_cleanly_on_ctrl_c(pdata: Pdata, tmp_path: Path) -> None:
    pdata("submit", "--name", "waiting", "--", "/bin/true")  # something to show: one CU on the shared queue
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen([*pdata_argv(), "status", "--watch", "--interval", "0.2"], stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while seen.count(b"\x1b[H") < 3 and time.monotonic() < deadline:  # three frames drawn in place
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                seen += os.read(master, 65536)
        assert seen.count(b"\x1b[H") >= 3, seen[-500:]
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as the terminal sends it to the foreground group
        # keep reading, as a terminal does: a full pty would block the redraw (and its exit) in write()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    chunk = b""
                seen += chunk
            if proc.poll() is not None and not ready:
                break
        assert proc.poll() == 0, seen[-500:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = seen.decode(errors="replace")
    assert text.startswith("\x1b[?25l\x1b[2J")  # cursor hidden, screen cleared once
    assert "shared queue: 1 Pending" in text and "\x1b[K" in text and "\x1b[J" in text
    assert text.rstrip().endswith("\x1b[?25h")  # the cursor is back
    assert "Traceback" not in text and "Error" not in text
