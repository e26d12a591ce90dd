"""Compute commands against real fork pilots: pilot start/ls/show/stop, submit, wait, status, cancel,
logs, explain, agent; bad input changes nothing; secrets never printed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pilotdata.cli.output import human_age
from pilotdata.config import default_coordination_url, default_namespace
from pilotdata.coordination import connect
from pilotdata.data import ReplicaManager
from pilotdata.descriptions import DataUnitDescription
from pilotdata.session import Session
from pilotdata.states import Kind
from tests.cli.conftest import Pdata, run_pdata, snapshot
from tests.servers import RedisServer, wait_until


def test_pilot_start_ls_show_stop(pdata: Pdata, pilot: str) -> None:
    rows = pdata.json("pilot", "ls")
    assert len(rows) == 1
    row = rows[0]
    assert {k: row[k] for k in ("id", "state", "site", "resource", "slots", "busy", "queued", "labels")} == {
        "id": pilot, "state": "Running", "site": None, "resource": "fork://localhost", "slots": 2, "busy": 0,
        "queued": 0, "labels": {}}
    table = pdata("pilot", "ls").stdout.splitlines()
    assert table[0].split() == ["ID", "STATE", "SITE", "RESOURCE", "SLOTS", "BUSY", "QUEUED", "LABELS", "AGE"]
    assert table[1].split()[:7] == [pilot, "Running", "-", "fork://localhost", "2", "0", "0"]
    shown = pdata.json("pilot", "show", pilot)
    assert shown["state"] == "Running" and shown["slots"] == 2 and shown["launcher"]["scheme"] == "fork"
    assert "resource: fork://localhost" in pdata("pilot", "show", pilot).stdout
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) <= 2:  # the pilot's 2 slots cover the CPUs: its CUs are bound (cpu_binding auto)
        assert shown["cpu_binding"] == cpus
        lines = [line.split() for line in pdata("pilot", "show", pilot).stdout.splitlines()]
        assert ["cpus:", ",".join(map(str, cpus))] in lines
    else:
        assert shown["cpu_binding"] is None

    assert pdata("pilot", "stop", pilot).stderr == f"stopped {pilot}\n"
    assert pdata.json("pilot", "ls") == []
    ended = pdata.json("pilot", "ls", "--all")
    assert [(r["id"], r["state"]) for r in ended] == [(pilot, "Canceled")]
    # AGE of an ended pilot is its lifetime: it stops growing
    assert ended[0]["ended"] >= ended[0]["created"]
    age = pdata("pilot", "ls", "--all").stdout.splitlines()[1].split()[-1]
    assert age == human_age(ended[0]["created"], ended[0]["ended"])


def test_pilot_start_bad_input_records_nothing(pdata: Pdata, tmp_path: Path) -> None:
    before = snapshot()
    cases = {
        ("pilot", "start", "gram://grid.example.org"): "gram",
        ("pilot", "start", "fork://elsewhere.example.org"): "fork runs on this host only",
        ("pilot", "start", "fork://localhost", "--cores", "0"): "--cores",
        ("pilot", "start", "fork://localhost", "--label", "dc"): "'dc' is not KEY=VALUE",
        ("pilot", "start", "fork://localhost", "--launcher-option", "colour=blue"): "colour",
        ("pilot", "start", "fork://localhost", "--walltime", "-1"): "--walltime",
        ("pilot", "start", "fork://localhost", "--cpu-binding", "sockets"): "--cpu-binding",
        ("pilot", "show", "pilot-nope"): "pilot 'pilot-nope' does not exist",
        ("pilot", "stop", "pilot-nope"): "pilot 'pilot-nope' does not exist",
        ("pilot", "stop",): "name the pilots to stop, or pass --all",
    }
    for args, expected in cases.items():
        line = pdata.error(*args)
        assert expected in line, (args, line)
    assert snapshot() == before


def test_submit_wait_status_logs_explain(pdata: Pdata, pilot: str) -> None:
    ids = [pdata("submit", "--name", f"hello{i}", "--env", f"N={i}", "--", "/bin/sh", "-c",
                 "echo hello $N").stdout.strip() for i in range(3)]
    bad = pdata.json("submit", "--name", "bad", "/bin/sh", "-c", "echo oops >&2; exit 3")
    assert bad["state"] == "Pending" and bad["id"].startswith("cu-")
    result = pdata("--json", "wait", code=1)
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"Done": 3, "Failed": 1}
    assert summary["failed"] == [{"id": bad["id"], "state": "Failed", "exit_code": 3, "reason": "exit code 3"}]
    assert result.stderr.strip() == (f"Error: 1 of 4 ComputeUnit(s) did not finish Done; first: {bad['id']} Failed "
                                     "(exit code 3); see 'pdata cu ls --state Failed'")
    assert pdata("wait", *ids).stdout == "3 Done\n"
    forced = pdata("--progress", "wait", *ids)  # a bar on stderr (without a terminal: its label once)
    assert forced.stdout == "3 Done\n" and forced.stderr.startswith("waiting")

    status = pdata.json("status")
    assert status["compute_units"] == {"total": {"Done": 3, "Failed": 1}, "by_place": {pilot: {"Done": 3, "Failed": 1}}}
    assert [p["id"] for p in status["pilots"]] == [pilot] and status["shared_queue"] == 0
    human = pdata("status").stdout
    assert f"{pilot}  -     Running" in human and "TOTAL" in human

    assert pdata("logs", "hello1", "--stdout").stdout == "hello 1\n"
    assert pdata("logs", "bad", "--stderr").stdout == "oops\n"
    both = pdata("logs", ids[2]).stdout
    assert "==> stdout" in both and "hello 2" in both and "==> stderr" in both

    explained = pdata.json("explain", ids[0])
    assert explained["state"] == "Done" and explained["pilot"] == pilot
    assert explained["explanation"].startswith(f"{ids[0]}: state Done, pilot {pilot}")
    assert pilot in pdata("explain", "hello0").stdout


def test_cancel_and_wait_timeout(pdata: Pdata, pilot: str) -> None:
    cu = pdata("submit", "--name", "long", "/bin/sleep", "60").stdout.strip()
    wait_until(lambda: _state(cu) == "Running", 30, "the CU to run")
    line = pdata.error("wait", cu, "--timeout", "0.5", code=1)
    assert "timed out after 0.5s" in line and cu in line
    assert pdata("cancel", "long").stderr == f"canceled {cu}\n"
    result = pdata("wait", cu, code=1)
    assert result.stdout == "1 Canceled\n"
    assert pdata("cancel", cu).stderr == f"{cu} already Canceled\n"
    assert "name the ComputeUnits to cancel" in pdata.error("cancel")
    assert "ComputeUnit 'cu-nope' does not exist" in pdata.error("cancel", cu, "cu-nope")


def _state(cu: str) -> str:
    """The CU's state, read straight from the embedded default coordination of this test."""
    coord = connect(default_coordination_url(), default_namespace())
    try:
        return coord.get(Kind.CU, cu).state
    finally:
        coord.close()


def test_submit_bad_input_records_nothing(pdata: Pdata, tmp_path: Path) -> None:
    pdata("store", "add", "s1", str(tmp_path / "s1"))
    session = Session()
    try:
        fresh = ReplicaManager(session.coord).register(DataUnitDescription(name="not-uploaded"))
    finally:
        session.close()
    before = snapshot()
    cases = {
        ("submit", "--input", "du-nope", "/bin/true"): "DataUnit 'du-nope' does not exist",
        ("submit", "--input", fresh, "/bin/true"): f"DataUnit {fresh} is New; expected Pending or Running or Done",
        ("submit", "--output", f"{fresh}:*.txt", "/bin/true"): f"DataUnit {fresh} is New; expected Running",
        ("submit", "--output", "nocolon", "/bin/true"): "'nocolon' is not DU:GLOB",
        ("submit", "--output", "du-nope:*.txt", "/bin/true"): "DataUnit 'du-nope' does not exist",
        ("submit", "--env", "NOVALUE", "/bin/true"): "'NOVALUE' is not KEY=VALUE",
        ("submit", "--cores", "0", "/bin/true"): "--cores",
        ("submit", "--pilot", "pilot-nope", "/bin/true"): "pilot 'pilot-nope' does not exist",
        ("submit",): "Missing argument",
        ("submit", "--timeout", "0", "/bin/true"): "--timeout",
    }
    for args, expected in cases.items():
        line = pdata.error(*args)
        assert expected in line, (args, line)
    assert snapshot() == before


def test_submitted_unit_runs_after_pdata_exits(pdata: Pdata, tmp_path: Path) -> None:
    """Submitted with no pilot alive, from a pdata process that exits; a pilot started later runs it."""
    env = dict(os.environ)
    sub = run_pdata(["--json", "submit", "--name", "later", "--label", "datacenter=site-a", "--", "/bin/sh", "-c",
                     "echo ran"], env=env)
    assert sub.returncode == 0, sub.stderr
    cu = json.loads(sub.stdout)
    assert cu["state"] == "Pending" and cu["pilot"] == "shared queue"
    assert "no live pilot" in cu["placement"]
    assert pdata.json("status")["shared_queue"] == 1
    try:
        started = run_pdata(["pilot", "start", "fork://localhost", "--cores", "1", "--label", "datacenter=site-a",
                             "--wait"], env=env)
        assert started.returncode == 0, started.stderr
        waited = run_pdata(["wait", "later", "--timeout", "60"], env=env)
        assert waited.returncode == 0 and waited.stdout == "1 Done\n", waited.stderr
        assert pdata("logs", "later", "--stdout").stdout == "ran\n"
        status = pdata.json("status")  # the CU ran on the pilot started afterwards
        assert status["compute_units"]["by_place"] == {started.stdout.strip(): {"Done": 1}}
    finally:
        pdata("pilot", "stop", "--all")


def test_real_pdata_process_json_pilot_ls(pilot: str) -> None:
    out = run_pdata(["--json", "pilot", "ls"], env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["id"], r["state"], r["slots"]) for r in rows] == [(pilot, "Running", 2)]
    assert set(rows[0]) == {"id", "state", "site", "resource", "slots", "busy", "claimed", "queued", "labels",
                            "created", "started", "ended", "reason", "walltime_left"}
    bad = run_pdata(["pilot", "show", "pilot-nope"], env=dict(os.environ))
    assert (bad.returncode, bad.stdout, bad.stderr) == (2, "", "Error: pilot 'pilot-nope' does not exist\n")


def test_pdata_agent_runs_a_pilot_with_the_agents_options(pdata: Pdata, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agent.sqlite'}"
    assert "--max-reassign" in pdata("agent", "--help").stdout
    out = run_pdata(["--url", url, "--namespace", "agents", "agent", "--pilot", "pilot-by-hand", "--slots", "1",
                     "--walltime", "0.02", "--workdir", str(tmp_path / "wd")], env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    coord = connect(url, "agents")
    try:
        rec = coord.get(Kind.PILOT, "pilot-by-hand")
        assert rec.state == "Done" and rec.data["slots"] == 1
    finally:
        coord.close()
    bad = run_pdata(["agent", "--slots", "0", "--pilot", "p"], env=dict(os.environ))
    assert bad.returncode == 2 and "--slots" in bad.stderr


def test_password_in_the_coordination_url_is_never_printed(pdata: Pdata, secret_redis: RedisServer,
                                                            tmp_path: Path) -> None:
    password = secret_redis.password
    assert password
    env = {"PDATA_URL": secret_redis.url}
    outputs = []
    try:
        pilot = pdata("pilot", "start", "fork://localhost", "--wait", "--timeout", "60", env=env)
        outputs.append(pilot)
        cu = pdata("submit", "--", "/bin/echo", "hi", env=env)
        outputs.append(cu)
        for args in (["wait", "--timeout", "60"], ["--json", "status"], ["status"], ["--json", "pilot", "ls"],
                     ["pilot", "show", pilot.stdout.strip()], ["config", "show"], ["--json", "config", "show"],
                     ["history", "--limit", "5"]):
            outputs.append(pdata(*args, env=env))
        assert f"coordination: redis://127.0.0.1:{secret_redis.port}/0" in pdata("status", env=env).stdout
        outputs.append(pdata("--debug", "explain", "cu-nope", code=2, env=env))
        wrong = secret_redis.url.replace(password, password + "x")
        outputs.append(pdata("pilot", "ls", code=1, env={"PDATA_URL": wrong}))
        assert outputs[-1].stderr.startswith("Error: ") and len(outputs[-1].stderr.splitlines()) == 1
        outputs.append(pdata("--debug", "pilot", "ls", code=1, env={"PDATA_URL": wrong}))
        assert "Traceback" in outputs[-1].stderr
    finally:
        outputs.append(pdata("pilot", "stop", "--all", env=env))
    for result in outputs:
        assert password not in result.stdout and password not in result.stderr, result.stdout + result.stderr


def test_submit_fails_only_for_a_placement_failure_not_for_a_run_that_already_failed(
    pdata: Pdata, pilot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wide = pdata("submit", "--cores", "8", "/bin/true", code=1)  # wider than every pilot: never queued
    assert wide.stderr.startswith(f"Error: {wide.stdout.strip()} failed at submission: ") and "8" in wide.stderr
    # a fast pilot may run and fail the CU before submit reads it back: that is the run's failure, not submit's
    from pilotdata.cli import compute

    original = compute._submit_and_bind

    def submitted_then_run_and_failed(session: Session, *args: Any) -> str:
        cu_id = original(session, *args)
        wait_until(lambda: session.coord.get(Kind.CU, cu_id).state == "Failed"
                   or session.coord.transition(Kind.CU, cu_id, "Failed", expected="Pending").ok, 30,
                   "the CU to fail")
        return cu_id

    monkeypatch.setattr(compute, "_submit_and_bind", submitted_then_run_and_failed)
    cu = pdata("submit", "--", "/bin/false").stdout.strip()
    assert _state(cu) == "Failed"
    assert pdata("wait", cu, code=1).stdout == "1 Failed\n"
