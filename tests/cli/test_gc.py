"""``pdata gc``: each rule on real leftovers (a deleted store directory, a finished run, an ended pilot's
directory, a part file a killed copy left, an empty namespace); ``--dry-run`` changes nothing."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from pilotdata.config import data_dir, default_coordination_url
from pilotdata.coordination import connect
from pilotdata.history import History, HistoryWriter
from pilotdata.states import Kind
from tests.cli.conftest import Pdata, snapshot


def _what(plan: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(item["what"], item["target"]) for item in plan}


def test_dataunits_whose_replicas_are_gone(pdata: Pdata, tmp_path: Path) -> None:
    (tmp_path / "db.fa").write_text(">s\nACGT\n")
    for name in ("a", "b"):
        pdata("store", "add", name, f"file://{tmp_path / name}")
    both = pdata("put", str(tmp_path / "db.fa"), "--name", "both", "--store", "a").stdout.strip()
    pdata("replicate", both, "--to", "b")
    only_a = pdata("put", str(tmp_path / "db.fa"), "--name", "only-a", "--store", "a").stdout.strip()
    only_b = pdata("put", str(tmp_path / "db.fa"), "--name", "only-b", "--store", "b").stdout.strip()
    shutil.rmtree(tmp_path / "a")  # what the BLAST example's teardown used to leave behind
    assert pdata("verify", both, code=1)
    before = snapshot()
    plan = pdata.json("gc", "--dry-run")
    assert plan["dry_run"] and _what(plan["would_remove"]) == {("replica", f"{both} on a"), ("dataunit", only_a)}
    assert snapshot() == before  # a dry run changes nothing
    assert "(dry run: nothing was changed)" in pdata("gc", "--dry-run").stdout
    done = pdata.json("gc")
    assert _what(done["removed"]) == {("replica", f"{both} on a"), ("dataunit", only_a)}
    assert {r["id"] for r in pdata.json("ls")} == {both, only_b}
    assert pdata.json("verify", both)["ok"] is True  # the surviving replica checks out
    assert pdata.json("gc")["removed"] == []  # nothing left to do


def test_finished_runs_sandboxes_and_pilot_directories(pdata: Pdata, pilot: str) -> None:
    cu = pdata("submit", "--", "/bin/sh", "-c", "echo kept").stdout.strip()
    pdata("wait", "--timeout", "60")
    old_run = pdata.json("cu", "ls")["run"]
    sandbox = Path(pdata.json("cu", "show", cu)["sandbox"])
    assert sandbox.is_dir()
    # recent things stay with the default retention (7 days for runs, 1 day for sandboxes)
    assert pdata.json("gc", "--dry-run")["would_remove"] == []
    plan = pdata.json("gc", "--dry-run", "--runs-older-than", "0s")
    assert _what(plan["would_remove"]) == {("compute units", f"1 of run {old_run}"), ("run", old_run)}
    pdata("gc", "--runs-older-than", "0s")
    assert not sandbox.exists()
    assert pdata.json("run", "ls") == []
    assert [r["id"] for r in pdata.json("run", "ls", "--all")] == [old_run]  # the history remembers it
    shown = pdata.json("cu", "show", cu)
    assert shown["state"] == "Done" and shown["in_coordination"] is False and shown["description"] is None
    assert [r["id"] for r in pdata.json("cu", "ls", "--run", old_run)["rows"]] == [cu]  # by the history
    assert pdata.json("report", "--run", old_run)["states"] == {"Done": 1}
    pdata("pilot", "stop", pilot)
    workdir = data_dir() / "pilots" / pilot
    assert workdir.is_dir()
    plan = pdata.json("gc", "--dry-run", "--sandboxes-older-than", "0s")
    assert [(i["what"], i["target"]) for i in plan["would_remove"]] == [("pilot directory", str(workdir))]
    pdata("gc", "--sandboxes-older-than", "0s")
    assert not workdir.exists()


def test_a_run_still_in_use_is_kept(pdata: Pdata) -> None:
    pdata("submit", "--", "/bin/true")  # no pilot: Pending, the run is not finished
    assert pdata.json("gc", "--runs-older-than", "0s")["removed"] == []


def test_stale_part_files_and_empty_namespaces(pdata: Pdata, tmp_path: Path) -> None:
    pdata("store", "add", "s1", f"file://{tmp_path / 's1'}")
    stale = tmp_path / "s1" / "du-x" / ".genome.fa.part-0123abcd"
    fresh = tmp_path / "s1" / "du-x" / ".other.fa.part-89abcdef"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    # a namespace whose work is all gone, known to the history
    empty = connect(default_coordination_url(), "leftover")
    try:
        empty.create(Kind.CU, "cu-gone", {"description": {}})
        empty.delete(Kind.CU, "cu-gone")
        with History() as history:
            HistoryWriter(empty, history).drain()
        assert empty.last_cursor() is not None
    finally:
        empty.close()
    plan = pdata.json("gc", "--dry-run")
    assert _what(plan["would_remove"]) == {("part file", f"file://{stale}"), ("namespace", "leftover")}
    assert plan["bytes"] == 100
    pdata("gc")
    assert not stale.exists() and fresh.exists()  # a copy that may still be running is left alone
    check = connect(default_coordination_url(), "leftover")
    try:
        assert check.last_cursor() is None
    finally:
        check.close()
