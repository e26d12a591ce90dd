"""Runs: what a run groups (pdata submits, put, a ComputeDataService, a named run), what "current" means for
wait / cu ls / report, ``pdata run ls|show|start`` and ``pdata resubmit --failed``."""

from __future__ import annotations

from pathlib import Path

from pilotdata import ComputeDataService, PilotComputeService
from pilotdata.errors import DescriptionError
from pilotdata.runs import current_run, list_runs
from pilotdata.session import Session
from tests.cli.conftest import Pdata


def test_submits_join_the_open_run_and_wait_closes_it(pdata: Pdata, pilot: str) -> None:
    first = [pdata.json("submit", "--name", f"a{i}", "--", "/bin/sh", "-c", "exit 1" if i == 0 else "true")
             for i in range(3)]
    runs = {cu["run"] for cu in first}
    assert len(runs) == 1
    run_a = runs.pop()
    assert pdata("wait", "--timeout", "60", code=1).stdout == f"run {run_a}: 2 Done, 1 Failed\n"
    # the run is closed: the next submission starts a new, current run
    second = pdata.json("submit", "--name", "b", "--", "/bin/true")
    assert second["run"] != run_a
    assert pdata("wait", "--timeout", "60").stdout == f"run {second['run']}: 1 Done\n"  # the old failure is not here
    assert [r["name"] for r in pdata.json("cu", "ls")["rows"]] == ["b"]
    assert pdata.json("cu", "ls", "--run", run_a)["total"] == 3
    assert pdata.json("wait", "--all", code=1)["counts"] == {"Done": 3, "Failed": 1}
    runs_ls = pdata.json("run", "ls")
    assert [(r["id"], r["total"], r["counts"], r["current"], r["origin"]) for r in runs_ls] == [
        (run_a, 3, {"Done": 2, "Failed": 1}, False, "cli"), (second["run"], 1, {"Done": 1}, True, "cli")]
    table = pdata("run", "ls").stdout.splitlines()
    assert table[0].split()[:4] == ["RUN", "ORIGIN", "STARTED", "CUS"] and table[2].startswith(f"* {second['run']}")
    shown = pdata.json("run", "show", run_a)
    assert shown["failures"] == [{"reason": "exit code 1", "count": 1, "examples": [first[0]["id"]]}]
    assert shown["pilots"] == [pilot] and shown["finished"] and shown["queue_wait_mean"] is not None
    assert pdata.json("report")["run"] == second["run"]


def test_named_runs_from_the_flag_and_the_environment(pdata: Pdata, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    pdata("store", "add", "s1", f"file://{tmp_path / 's1'}")
    du = pdata.json("put", str(tmp_path / "f"), "--run", "assembly")
    cu = pdata.json("submit", "--run", "assembly", "--", "/bin/true")
    other = pdata.json("submit", "--", "/bin/true", env={"PDATA_RUN": "nightly"})
    assert cu["run"] == "assembly" and other["run"] == "nightly"
    assert pdata.json("cu", "ls", "--run", "assembly")["rows"][0]["id"] == cu["id"]
    assert pdata.json("cu", "ls", env={"PDATA_RUN": "nightly"})["rows"][0]["id"] == other["id"]
    assert pdata.json("cu", "ls")["run"] == "nightly"  # the run started last is the current one
    session = Session()
    try:
        assert session.coord.get("du", du["id"]).data["run"] == "assembly"
        assert [r.id for r in list_runs(session.coord)] == ["assembly", "nightly"]
    finally:
        session.close()
    started = pdata("run", "start", "next").stdout.strip()
    assert started == "next" and pdata.json("submit", "--", "/bin/true")["run"] == "next"
    assert "exists already" in pdata.error("run", "start", "next")


def test_a_compute_data_service_has_its_own_run(tmp_path: Path) -> None:
    session = Session()
    try:
        pcs = PilotComputeService(session=session)
        cds = ComputeDataService(session=session)
        assert cds.run is None  # nothing submitted yet: no run
        cu = cds.submit_compute_unit({"executable": "/bin/true"})
        run = cds.run
        assert run is not None and session.coord.get("cu", cu.id).data["run"] == run
        assert current_run(session.coord).id == run and current_run(session.coord).is_open
        named = ComputeDataService(session=session, run="calibration")
        named.submit_compute_unit({"executable": "/bin/true"})
        assert named.run == "calibration" and named.get_details()["run"] == "calibration"
        cds.close()
        assert next(r for r in list_runs(session.coord) if r.id == run).closed is not None
        try:
            ComputeDataService(session=session, run="no spaces")
        except DescriptionError as exc:
            assert exc.field == "run"
        else:
            raise AssertionError("a bad run name was accepted")
        pcs.cancel()
    finally:
        session.close()


def test_resubmit_failed_units_as_a_new_run(pdata: Pdata, pilot: str, tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    ids = [pdata("submit", "--name", f"t{i}", "--", "/bin/sh", "-c", f"test -e {flag} || test {i} = 0").stdout.strip()
           for i in range(3)]
    pdata("wait", "--timeout", "60", code=1)
    run = pdata.json("cu", "ls")["run"]
    flag.write_text("")
    result = pdata.json("resubmit", "--failed")
    new_run = result["run"]
    assert new_run == f"{run}-retry1" and result["parent"] == run
    assert set(result["resubmitted"]) == set(ids[1:])
    assert pdata("wait", "--timeout", "60").stdout == f"run {new_run}: 2 Done\n"  # the new run is current
    rows = pdata.json("cu", "ls")["rows"]
    assert sorted(r["name"] for r in rows) == ["t1", "t2"] and all(r["state"] == "Done" for r in rows)
    assert pdata.json("run", "show", new_run)["parent"] == run
    assert "no Failed ComputeUnit left to resubmit" in pdata.error("resubmit", "--failed", run, code=1)
    assert "no Failed ComputeUnit left" in pdata.error("resubmit", "--failed", code=1)
