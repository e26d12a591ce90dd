"""``pdata history`` and ``pdata report`` on the events of real runs (fork pilot, embedded SQLite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pilotdata.cli.report import STATE_COLOURS, assign_lanes, timeline_bars
from pilotdata.config import default_coordination_url, default_namespace
from pilotdata.coordination import connect
from pilotdata.history import CUTimeline
from tests.cli.conftest import Pdata

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run_some_units(pdata: Pdata) -> dict[str, str]:
    ids = {name: pdata("submit", "--name", name, "--", "/bin/sh", "-c", cmd).stdout.strip()
           for name, cmd in (("ok1", "sleep 0.3"), ("ok2", "sleep 0.4"), ("ok3", "true"), ("bad", "exit 4"))}
    pdata("wait", "--timeout", "60", code=1)
    return ids


def _record_transfer(du: str, nbytes: int, destination: str) -> None:
    coord = connect(default_coordination_url(), default_namespace())
    try:  # what DataUnits records after a copy (the transfer engine's own record)
        coord.record_event("transfer", du, {"du": du, "bytes": nbytes, "seconds": 0.5, "source": "local",
                                            "destination": destination, "ok": True})
    finally:
        coord.close()


def test_history_filters(pdata: Pdata, pilot: str) -> None:
    ids = _run_some_units(pdata)
    events = pdata.json("history", "--cu", "bad")
    moves = [e["to_state"] for e in events if e["to_state"] != "StagingInput"]  # no inputs: staging may be skipped
    assert moves == ["New", "Pending", "Running", "Failed"]
    assert events[0]["from_state"] is None and events[-1]["from_state"] == "Running"
    assert events[-1]["detail"]["reason"] == "exit code 4" and events[-1]["pilot"] == pilot
    assert set(events[0]) == {"id", "source", "cursor", "entity", "entity_id", "from_state", "to_state", "time",
                              "pilot", "attempt", "detail"}
    failed = pdata.json("history", "--state", "Failed")
    assert [(e["entity_id"], e["to_state"]) for e in failed] == [(ids["bad"], "Failed")]
    done = pdata.json("history", "--state", "Done", "--entity", "cu")
    assert sorted(e["entity_id"] for e in done) == sorted(ids[n] for n in ("ok1", "ok2", "ok3"))
    last3 = pdata.json("history", "--limit", "3", "--since", "1h")
    assert len(last3) == 3 and [e["time"] for e in last3] == sorted(e["time"] for e in last3)
    assert pdata.json("history", "--since", "2999-01-01") == []
    assert [e["to_state"] for e in pdata.json("history", "--entity", "pilot")][:3] == ["New", "Pending", "Running"]
    again = pdata.json("history", "--cu", ids["bad"])  # draining twice stores nothing twice
    assert [e["cursor"] for e in again] == [e["cursor"] for e in events]
    table = pdata("history", "--cu", "bad").stdout.splitlines()
    assert table[0].split() == ["TIME", "ENTITY", "ID", "TRANSITION", "PILOT", "ATTEMPT", "DETAIL"]
    assert "Running -> Failed" in table[-1] and "reason=exit code 4" in table[-1]
    assert "ComputeUnit 'cu-nope' does not exist" in pdata.error("history", "--cu", "cu-nope")
    assert "'yesterday'" in pdata.error("history", "--since", "yesterday")


def test_report_png_timeline_and_bytes_per_site(pdata: Pdata, pilot: str, tmp_path: Path) -> None:
    matplotlib_image = pytest.importorskip("matplotlib.image")
    ids = _run_some_units(pdata)
    pdata("store", "add", "s1", str(tmp_path / "s1"), "--label", "datacenter=dc1", "--label", "machine=m1")
    _record_transfer("du-a", 5_000_000, f"file://{tmp_path / 's1'}")
    _record_transfer("du-b", 2_000_000, "sftp://remote.example.org/data")
    assert [t["bytes"] for t in pdata.json("history", "--transfers")] == [5_000_000, 2_000_000]

    out = tmp_path / "report" / "run.png"
    summary = pdata.json("report", "--out", str(out), "--title", "test run")
    assert summary["out"] == str(out) and summary["compute_units"] == len(ids) and summary["pilots"] == 1
    assert 1 <= summary["slots"] <= 2
    assert summary["bytes_per_site"] == {"dc1/m1": 5_000_000, "remote.example.org": 2_000_000}
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000
    image = matplotlib_image.imread(str(out))
    assert image.shape[1] == summary["width"] and image.shape[0] == summary["height"]
    assert summary["width"] >= 800 and summary["height"] >= 400
    pixels = (image[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    colours = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert len(colours) > 50  # bars, text, antialiasing: far from a blank canvas
    for state in ("Done", "Failed"):
        rgb = tuple(int(STATE_COLOURS[state][i:i + 2], 16) for i in (1, 3, 5))
        assert int(np.all(pixels == rgb, axis=1).sum()) > 20, f"no {state} bar in the report"
    assert pdata("report", "--out", str(out)).stdout.startswith(f"wrote {out} (")


def test_report_bad_output_and_missing_matplotlib(pdata: Pdata, tmp_path: Path) -> None:
    assert "must end in .png" in pdata.error("report", "--out", str(tmp_path / "r.jpg"))
    assert "Missing option '--out'" in pdata.error("report")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = pdata.error("report", "--out", str(blocker / "r.png"), code=1)  # an OSError: one line, no traceback
    assert line.startswith("Error: ") and str(blocker) in line
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # what an install without the extra looks like
            "from pilotdata.cli import main\n"
            f"sys.exit(main(['report', '--out', {str(tmp_path / 'r.png')!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                         timeout=60, check=False)
    assert out.returncode == 1
    assert out.stderr == "Error: pdata report needs matplotlib: pip install 'pilot-data[report]'\n"
    assert not (tmp_path / "r.png").exists()


def test_report_of_an_empty_namespace_still_draws(pdata: Pdata, tmp_path: Path) -> None:
    out = tmp_path / "empty.png"
    summary = pdata.json("report", "--out", str(out))
    assert summary["compute_units"] == 0 and summary["bytes_per_site"] == {}
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_lanes_reuse_free_slots() -> None:
    lanes = assign_lanes([("a", 0, 10), ("b", 1, 5), ("c", 5, 7), ("d", 10, 12), ("e", 2, 3)])
    assert lanes == {"a": 0, "b": 1, "e": 2, "c": 1, "d": 0}


def test_timeline_segments_show_staging_and_the_final_state() -> None:
    done = CUTimeline("s", "cu-1", "p1", 0, "Done", {"New": 0, "Pending": 1, "StagingInput": 2, "Running": 3,
                                                      "StagingOutput": 8, "Done": 9})
    retried = CUTimeline("s", "cu-2", "p1", 1, "Failed", {"New": 0, "Pending": 10, "StagingInput": 11,
                                                           "Running": 4, "Failed": 12})
    queued = CUTimeline("s", "cu-3", None, 0, "Pending", {"New": 0, "Pending": 1})
    bars = timeline_bars([done, retried, queued], now=20)
    segs = [(b.cu_id, b.start, b.width, b.colour) for b in bars]
    assert segs == [
        ("cu-1", 2, 1, "#ff7f0e"), ("cu-1", 3, 5, STATE_COLOURS["Done"]), ("cu-1", 8, 1, "#9467bd"),
        ("cu-2", 11, 1, "#ff7f0e")]  # the retry's old Running is before its last StagingInput: not drawn
    assert {b.lane for b in bars if b.cu_id == "cu-2"} == {0}
    assert json.dumps([b.pilot for b in bars]) == json.dumps(["p1"] * 4)
