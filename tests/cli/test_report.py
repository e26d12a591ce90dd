"""``pdata history`` and ``pdata report`` (PNG, self-contained HTML, the trace in CSV and JSON) on the events
of real runs (fork pilot, embedded SQLite)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from pilotdata.cli.timeline import STATE_COLOURS, Segment, assign_lanes
from pilotdata.config import default_coordination_url, default_namespace
from pilotdata.coordination import connect
from pilotdata.inspect import TraceRow
from pilotdata.records import TRANSFER_EVENT, ByteCategory, transfer_record
from tests.cli.conftest import Pdata

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run_some_units(pdata: Pdata) -> dict[str, str]:
    ids = {name: pdata("submit", "--name", name, "--", "/bin/sh", "-c", cmd).stdout.strip()
           for name, cmd in (("ok1", "sleep 0.3"), ("ok2", "sleep 0.4"), ("ok3", "true"), ("bad", "exit 4"))}
    pdata("wait", "--timeout", "60", code=1)
    return ids


def _record_transfer(du: str, nbytes: int, destination: str, category: ByteCategory, cu: str | None = None,
                     run: str | None = None) -> None:
    coord = connect(default_coordination_url(), default_namespace())
    try:
        coord.record_event(TRANSFER_EVENT, du, transfer_record(du, nbytes, 0.5, category=category, source="local",
                                                               destination=destination, cu=cu, run=run))
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
    assert [e["entity"] for e in pdata.json("history", "--entity", "run")] == ["run"] * 2  # started, closed
    again = pdata.json("history", "--cu", ids["bad"])  # draining twice stores nothing twice
    assert [e["cursor"] for e in again] == [e["cursor"] for e in events]
    table = pdata("history", "--cu", "bad").stdout.splitlines()
    assert table[0].split() == ["TIME", "ENTITY", "ID", "TRANSITION", "PILOT", "ATTEMPT", "DETAIL"]
    assert "Running -> Failed" in table[-1] and "reason=exit code 4" in table[-1]
    assert "ComputeUnit 'cu-nope' does not exist" in pdata.error("history", "--cu", "cu-nope")
    assert "'yesterday'" in pdata.error("history", "--since", "yesterday")


def _colour_pixels(pixels: np.ndarray, colour: str) -> int:
    rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return int(np.all(pixels == rgb, axis=1).sum())


def test_report_png_html_and_figures_of_the_current_run(pdata: Pdata, pilot: str, tmp_path: Path) -> None:
    matplotlib_image = pytest.importorskip("matplotlib.image")
    ids = _run_some_units(pdata)
    run = pdata.json("cu", "ls")["run"]
    _record_transfer("du-a", 5_000_000, "pilot-cache:p1", ByteCategory.STAGED, cu=ids["ok1"])
    _record_transfer("du-b", 2_000_000, "file:///s2", ByteCategory.UPLOADED, run=run)
    _record_transfer("du-c", 9_000_000, "file:///s3", ByteCategory.UPLOADED, run="another-run")

    out = tmp_path / "report" / "run.png"
    summary = pdata.json("report", "--out", str(out), "--title", "test run")
    assert summary["run"] == run and summary["out"] == str(out) and summary["compute_units"] == len(ids)
    assert summary["states"] == {"Done": 3, "Failed": 1} and summary["pilots"] == 1
    assert summary["slots"] == 2  # both slots are rows, even one that never ran anything
    assert 0 < summary["busy_slot_seconds"] <= summary["offered_slot_seconds"]
    assert summary["idle_slot_seconds"] == pytest.approx(summary["offered_slot_seconds"] -
                                                          summary["busy_slot_seconds"], abs=0.01)
    assert 0 < summary["utilisation"] <= 1 and summary["queue_wait_mean"] >= 0
    assert summary["bytes"]["staged"] == 5_000_000 and summary["bytes"]["uploaded"] == 2_000_000  # not du-c
    assert summary["transfers"] == 2
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000
    image = matplotlib_image.imread(str(out))
    assert image.shape[1] == summary["width"] and image.shape[0] == summary["height"]
    pixels = (image[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    for colour in (STATE_COLOURS["Done"], STATE_COLOURS["Failed"], "#eeeeee"):  # runs, failures, idle lifetime
        assert _colour_pixels(pixels, colour) > 20, f"no {colour} in the report"
    assert pdata("report", "--out", str(out)).stdout.splitlines()[-1].startswith(f"wrote {out} (")

    page = tmp_path / "run.html"
    pdata("report", "--out", str(page))
    text = page.read_text()
    _assert_self_contained(text)
    for cu in ids.values():
        assert cu in text
    assert "utilisation" in text and "queue wait" in text and "staged" in text and "<rect" in text
    figures = pdata("report").stdout
    assert figures.startswith(f"pilot-data run {run}: 4 CUs (3 Done, 1 Failed), utilisation ")
    assert "staged 5.0 MB" in figures


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.refs += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href", "action")]


def _assert_self_contained(text: str) -> None:
    """No script, no stylesheet or image from anywhere, no address to fetch: it opens offline."""
    parser = _Links()
    parser.feed(text)
    assert parser.refs == [], parser.refs
    assert {"svg", "style"} <= parser.tags and not {"script", "link", "img", "iframe"} & parser.tags
    assert not re.search(r"https?://|url\(|@import", text.replace("http://www.w3.org/2000/svg", ""))


def test_trace_export_csv_and_json(pdata: Pdata, pilot: str, tmp_path: Path) -> None:
    ids = _run_some_units(pdata)
    _record_transfer("du-a", 1234, "pilot-cache:p", ByteCategory.STAGED, cu=ids["ok2"])
    csv_path, json_path = tmp_path / "t" / "trace.csv", tmp_path / "trace.json"
    assert pdata.json("report", "--trace", str(csv_path))["trace_rows"] == 4
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert list(rows[0]) == list(TraceRow.FIELDS)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"ok1", "ok2", "ok3", "bad"}
    bad = by_name["bad"]
    assert (bad["state"], bad["exit_code"], bad["reason"], bad["pilot"]) == ("Failed", "4", "exit code 4", pilot)
    assert float(bad["pending"]) <= float(bad["running"]) <= float(bad["ended"])
    assert float(bad["queue_wait"]) == pytest.approx(float(bad["running"]) - float(bad["pending"]), abs=1e-6)
    assert by_name["ok2"]["bytes_staged"] == "1234" and by_name["ok1"]["bytes_staged"] == "0"
    assert float(by_name["ok2"]["duration"]) >= 0.3  # it slept 0.4 s
    pdata("report", "--trace", str(json_path))
    doc = json.loads(json_path.read_text())
    assert [d["id"] for d in doc] == [r["id"] for r in rows]
    assert doc[1]["bytes"] == {c.value: (1234 if c is ByteCategory.STAGED else 0) for c in ByteCategory}
    streamed = pdata("report", "--trace", "-").stdout  # CSV on stdout, nothing else
    assert streamed.splitlines()[0] == ",".join(TraceRow.FIELDS) and len(streamed.splitlines()) == 5


def test_report_bad_output_and_missing_matplotlib(pdata: Pdata, tmp_path: Path) -> None:
    pdata("submit", "--", "/bin/true")  # a run to report on (its CU never runs: no pilot)
    assert "must end in .png or .html" in pdata.error("report", "--out", str(tmp_path / "r.jpg"))
    assert "must end in .csv or .json" in pdata.error("report", "--trace", str(tmp_path / "t.txt"))
    assert "run 'nope' does not exist" in pdata.error("report", "--run", "nope")
    assert "exclude each other" in pdata.error("report", "--run", "x", "--all-runs")
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
    assert out.stderr == ("Error: pdata report needs matplotlib for a PNG: pip install 'pilot-data[report]' "
                          "(or write --out FILE.html)\n")
    assert not (tmp_path / "r.png").exists()
    html_only = subprocess.run([sys.executable, "-c", code.replace("r.png", "r.html")], capture_output=True,
                               text=True, env=dict(os.environ), timeout=60, check=False)
    assert html_only.returncode == 0, html_only.stderr  # the HTML needs no matplotlib
    _assert_self_contained((tmp_path / "r.html").read_text())


def test_report_without_any_run(pdata: Pdata, tmp_path: Path) -> None:
    assert "no run yet" in pdata.error("report")
    summary = pdata.json("report", "--all-runs", "--out", str(tmp_path / "empty.png"))
    assert summary["compute_units"] == 0 and summary["bytes_by_site"] == {}
    assert (tmp_path / "empty.png").read_bytes()[:8] == PNG_SIGNATURE


def test_lanes_reuse_free_slots() -> None:
    lanes = assign_lanes([("a", 0, 10), ("b", 1, 5), ("c", 5, 7), ("d", 10, 12), ("e", 2, 3)])
    assert lanes == {"a": 0, "b": 1, "e": 2, "c": 1, "d": 0}


def test_segment_colours() -> None:
    assert Segment("p", 0, "run", 0, 1, "c", None, "Failed").colour == STATE_COLOURS["Failed"]
    assert Segment("p", 0, "run", 0, 1, "c", None, "Running").colour == STATE_COLOURS["active"]
    assert Segment("p", 0, "stage_in", 0, 1, "c", None, "Done").colour == "#ff7f0e"
