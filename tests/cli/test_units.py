"""``pdata cu ls|show`` and the smaller things a newcomer trips over: logs that say why, the wait timeout in
words, a warning when no pilot runs, a mistyped PDATA_HOME, ``pdata agent --help``, explain's durations,
progress bars with MB/s, and completion of ids."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pilotdata.cli.output import _ByteBar, human_duration
from tests.cli.conftest import Pdata, run_pdata, snapshot


def _units(pdata: Pdata) -> dict[str, str]:
    ids = {}
    for i in range(5):
        ids[f"ok{i}"] = pdata("submit", "--name", f"ok{i}", "--", "/bin/sh", "-c", f"echo {i}").stdout.strip()
    ids["bad"] = pdata("submit", "--name", "bad", "--", "/bin/sh", "-c", "echo doomed >&2; exit 7").stdout.strip()
    ids["nope"] = pdata("submit", "--name", "nope", "--", "/no/such/program").stdout.strip()
    pdata("wait", "--timeout", "60", code=1)
    return ids


def test_cu_ls_filters_pages_and_json(pdata: Pdata, pilot: str) -> None:
    ids = _units(pdata)
    listing = pdata.json("cu", "ls")
    assert listing["total"] == 7 and [r["name"] for r in listing["rows"]] == [*(f"ok{i}" for i in range(5)), "bad",
                                                                              "nope"]
    row = listing["rows"][5]
    assert (row["id"], row["state"], row["place"], row["exit_code"], row["reason"]) == (
        ids["bad"], "Failed", pilot, 7, "exit code 7")
    assert row["queue_wait"] is not None and row["duration"] is not None
    failed = pdata.json("cu", "ls", "--state", "failed")  # any case
    assert {r["name"] for r in failed["rows"]} == {"bad", "nope"}
    assert pdata.json("cu", "ls", "--name", "OK*")["total"] == 5
    assert pdata.json("cu", "ls", "--pilot", pilot)["total"] == 7
    assert pdata.json("cu", "ls", "--pilot", "shared")["total"] == 0
    page = pdata.json("cu", "ls", "--limit", "3", "--offset", "3")
    assert [r["name"] for r in page["rows"]] == ["ok3", "ok4", "bad"] and page["next_offset"] == 6
    assert [r["name"] for r in pdata.json("cu", "ls", "--newest", "--limit", "1")["rows"]] == ["nope"]
    shown = pdata("cu", "ls", "--limit", "2")
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:5] == ["ID", "NAME", "STATE", "WHERE", "SITE"] and len(lines) == 3
    assert "showing 1-2 of 7" in shown.stderr and "--offset 2" in shown.stderr
    assert "'Finished' is not a ComputeUnit state" in pdata.error("cu", "ls", "--state", "Finished")
    assert "(no compute units in run" in pdata("cu", "ls", "--name", "zzz*").stdout
    assert pdata.json("cu", "ls", "--all-runs")["total"] == 7


def test_cu_show_prints_states_inputs_and_the_reason(pdata: Pdata, pilot: str, tmp_path: Path) -> None:
    (tmp_path / "db.txt").write_text("x" * 1000)
    pdata("store", "add", "s1", f"file://{tmp_path / 's1'}")
    db = pdata("put", str(tmp_path / "db.txt"), "--name", "db").stdout.strip()
    first = pdata("submit", "--name", "first", "--input", "db", "--", "/bin/sh", "-c", "wc -c < db.txt").stdout.strip()
    pdata("wait", first, "--timeout", "60")
    second = pdata("submit", "--name", "second", "--input", "db", "--", "/bin/false").stdout.strip()
    pdata("wait", second, "--timeout", "60", code=1)
    one = pdata.json("cu", "show", "first")
    assert one["state"] == "Done" and one["description"]["executable"] == "/bin/sh"
    assert [e["to"] for e in one["events"]] == ["New", "Pending", "StagingInput", "Running", "Done"]
    assert [(i["du"], i["category"], i["bytes"], i["source"]) for i in one["inputs"]] == [(db, "linked", 1000, "s1")]
    assert Path(one["sandbox"]).is_dir() and one["in_coordination"] is True
    two = pdata.json("cu", "show", second)
    assert [(i["category"], i["bytes"]) for i in two["inputs"]] == [("cache_hit", 1000)]
    assert two["bytes"]["cache_hit"] == 1000 and two["bytes"]["moved"] == 0 and two["exit_code"] == 1
    text = pdata("cu", "show", second).stdout
    for expected in ("reason:     exit code 1", "states:", "inputs:", "cache hit", "Failed", "queue wait:"):
        assert expected in text, expected
    assert "ComputeUnit 'cu-nope' does not exist" in pdata.error("cu", "show", "cu-nope")


def test_logs_say_why_and_show_the_agent_log(pdata: Pdata, pilot: str) -> None:
    ids = _units(pdata)
    line = pdata.error("logs", "nope", code=1)
    assert line == f"Error: {ids['nope']} is Failed and has no sandbox (it never started): executable not found: " \
                   "/no/such/program"
    bad = pdata("logs", "bad")
    assert "doomed" in bad.stdout and bad.stderr.strip() == f"==> {ids['bad']} Failed: exit code 7 <=="
    agent_log = pdata("logs", "--pilot", pilot).stdout
    assert f"pilot {pilot} running" in agent_log and "executable not found" in agent_log
    assert "name a ComputeUnit, or a pilot with --pilot" in pdata.error("logs")


def test_submit_without_a_pilot_warns_and_the_wait_timeout_reads_well(pdata: Pdata) -> None:
    result = pdata("submit", "--", "/bin/true")
    cu = result.stdout.strip()
    assert result.stderr == (f"pdata: warning: no live pilot: {cu} waits on the shared queue until one starts "
                             "(pdata pilot start fork://localhost --cores N)\n")
    line = pdata.error("wait", "--timeout", "0.3", code=1)
    assert line == (f"Error: timed out after 0.3s: 1 of 1 ComputeUnit(s) not finished (1 Pending, e.g. {cu} Pending); "
                    "no pilot is running: start one (pdata pilot start fork://localhost --cores N)")
    assert "[" not in line


def test_read_commands_refuse_a_missing_pdata_home(pdata: Pdata, tmp_path: Path) -> None:
    typo = tmp_path / "pdata-hoem"
    env = {"PDATA_HOME": str(typo)}
    for args in (["status"], ["cu", "ls"], ["ls"], ["pilot", "ls"], ["run", "ls"], ["history"], ["wait"],
                 ["report"]):
        line = pdata.error(*args, env=env)
        assert f"PDATA_HOME '{typo}' does not exist" in line, (args, line)
    assert not typo.exists()  # nothing was created
    pdata("store", "add", "s1", f"file://{tmp_path / 's1'}", env=env)  # a command that records makes it
    assert typo.is_dir()
    assert pdata.json("cu", "ls", "--all-runs", env=env)["total"] == 0


def test_agent_help_is_pdata_agents_own() -> None:
    out = run_pdata(["agent", "--help"], env=dict(os.environ))
    assert out.returncode == 0 and out.stdout.startswith("usage: pdata agent [-h] --pilot PILOT")
    assert "python -m agent" not in out.stdout and "--max-reassign" in out.stdout
    bad = run_pdata(["agent", "--slots", "x", "--pilot", "p"], env=dict(os.environ))
    assert bad.returncode == 2 and bad.stderr.startswith("usage: pdata agent")


def test_explain_prints_durations_people_read(pdata: Pdata, pilot: str, tmp_path: Path) -> None:
    (tmp_path / "tiny.txt").write_text("x")
    pdata("store", "add", "s1", f"file://{tmp_path / 's1'}")
    pdata("put", str(tmp_path / "tiny.txt"), "--name", "tiny")
    cu = pdata("submit", "--input", "tiny", "--", "/bin/true").stdout.strip()
    pdata("wait", cu, "--timeout", "60")
    text = pdata("explain", cu).stdout
    assert "e-0" not in text and " s" in text
    assert [human_duration(x) for x in (None, 0, 2e-7, 0.34, 2.5, 250, 7500)] == [
        "-", "0 s", "< 1 ms", "340 ms", "2.5 s", "4 min 10 s", "2 h 5 min"]


def test_progress_bars_show_megabytes_and_rate() -> None:
    clock = iter([100.0, 102.0, 104.0])
    bar = _ByteBar("put", 100_000_000, enabled=True, clock=lambda: next(clock))
    try:
        bar(20_000_000, 0)  # the bar starts at t=100
        assert bar.info() == "20.0 MB/100.0 MB, 10.0 MB/s"  # 20 MB in 2 s
        bar(20_000_000, 1)
        assert bar.info() == "40.0 MB/100.0 MB, 10.0 MB/s"
    finally:
        bar.close()


def test_completion_offers_store_du_cu_pilot_and_run_ids(pdata: Pdata, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("data")
    pdata("store", "add", "scratch", f"file://{tmp_path / 's'}")
    du = pdata("put", str(tmp_path / "f.txt"), "--name", "genome").stdout.strip()
    cu = pdata("submit", "--", "/bin/true").stdout.strip()
    run = pdata.json("cu", "ls")["run"]
    env = dict(os.environ)

    def offered(words: str) -> list[str]:
        parts = words.split(" ")
        out = run_pdata([], env={**env, "_PDATA_COMPLETE": "bash_complete", "COMP_WORDS": words,
                                  "COMP_CWORD": str(len(parts) - 1)})
        assert out.returncode == 0, out.stderr
        return [line.split(",", 1)[1] for line in out.stdout.splitlines()]

    assert offered("pdata store show sc") == ["scratch"]
    assert set(offered("pdata show ")) == {du, "genome"}
    assert offered("pdata show gen") == ["genome"]
    assert offered(f"pdata cu show {cu[:6]}") == [cu]
    assert offered("pdata report --run ") == [run]
    assert offered("pdata put f.txt --store s") == ["scratch"]
    missing = run_pdata([], env={**env, "PDATA_HOME": str(tmp_path / "nope"), "_PDATA_COMPLETE": "bash_complete",
                                 "COMP_WORDS": "pdata show ", "COMP_CWORD": "2"})
    assert missing.returncode == 0 and not (tmp_path / "nope").exists()


def test_bad_input_to_the_new_commands_changes_nothing(pdata: Pdata) -> None:
    pdata("submit", "--", "/bin/true")
    before = snapshot()
    cases = {
        ("submit", "--run", "bad name!", "/bin/true"): "a run name is 1-64 characters",
        ("cu", "ls", "--limit", "0"): "--limit",
        ("cu", "ls", "--run", "nope"): "run 'nope' does not exist",
        ("cu", "ls", "--run", "x", "--all-runs"): "exclude each other",
        ("cu", "show", "cu-nope"): "does not exist",
        ("run", "show", "nope"): "run 'nope' does not exist",
        ("run", "start", "bad/name"): "a run name is 1-64 characters",
        ("resubmit",): "--failed",
        ("gc", "--runs-older-than", "soon"): "'soon' is not an age",
        ("status", "--run", "nope"): "run 'nope' does not exist",
    }
    for args, expected in cases.items():
        line = pdata.error(*args)
        assert expected in line, (args, line)
    assert snapshot() == before
    assert json.loads(pdata("--json", "run", "ls").stdout)[0]["total"] == 1
