"""PilotComputeService, ComputeDataService and ComputeUnit against real fork pilots (SQLite and Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pilotdata import ComputeDataService, ComputeUnit, PilotCompute, PilotComputeService, State
from pilotdata.errors import DescriptionError, NotFoundError, TimeoutExpired, UnknownSchemeError
from pilotdata.services import FailurePolicy
from pilotdata.session import Session
from pilotdata.states import Kind
from tests.servers import wait_until


def _pilot(
    session: Session, made: list[PilotComputeService], tmp_path: Path, **extra: object
) -> tuple[PilotComputeService, PilotCompute]:
    pcs = PilotComputeService(session=session, policy=FailurePolicy(heartbeat_ttl=3))
    made.append(pcs)
    desc = {"service_url": "fork://localhost", "number_of_processes": 2,
            "working_directory": str(tmp_path / "pilot"), **extra}
    return pcs, pcs.create_pilot(desc)


def test_pilot_runs_compute_units_bigjob_style(
    session: Session, pcs_factory: list[PilotComputeService], tmp_path: Path
) -> None:
    pcs, pilot = _pilot(session, pcs_factory, tmp_path)
    assert pilot.wait(timeout=30, state=State.Running) == State.Running
    cds = ComputeDataService(session=session)
    cds.add_pilot_compute_service(pcs)
    cus = [cds.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", "echo $GREETING $N"], "shell": False,
                                    "environment": [f"N={i}", "GREETING=hello"]}) for i in range(6)]
    cds.wait(timeout=60)
    assert [cu.get_state() for cu in cus] == [State.Done] * 6
    for i, cu in enumerate(cus):
        details = cu.get_details()
        assert details["exit_code"] == 0 and details["pilot"] == pilot.id
        assert (Path(details["sandbox"]) / "stdout").read_text() == f"hello {i}\n"
    assert pilot.get_details()["slots"] == 2


def test_failed_unit_reports_exit_code_and_reason(
    session: Session, pcs_factory: list[PilotComputeService], tmp_path: Path
) -> None:
    pcs, pilot = _pilot(session, pcs_factory, tmp_path)
    cds = ComputeDataService(session=session)
    cds.add_pilot_compute_service(pcs)
    bad = cds.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", "exit 255"], "shell": False})
    missing = cds.submit_compute_unit({"executable": "/no/such/program"})
    assert bad.wait(timeout=60) == State.Failed
    assert bad.get_exit_code() == 255
    assert missing.wait(timeout=60) == State.Failed
    assert "/no/such/program" in (missing.get_details()["reason"] or "")


def test_bad_description_records_nothing(session: Session) -> None:
    cds = ComputeDataService(session=session)
    with pytest.raises(DescriptionError, match="number_of_processes"):
        cds.submit_compute_units([{"executable": "/bin/true"}, {"executable": "/bin/true",
                                                                 "number_of_process": 2}])
    assert session.coord.list_ids(Kind.CU) == []
    pcs = PilotComputeService(session=session)
    with pytest.raises(UnknownSchemeError, match="gram"):
        pcs.create_pilot({"service_url": "gram://old.grid.org"})
    assert session.coord.list_ids(Kind.PILOT) == []


def test_bulk_submit_records_and_binds_in_chunks_and_runs_every_unit_once(
    session: Session, pcs_factory: list[PilotComputeService], tmp_path: Path
) -> None:
    from pilotdata.services.submission import SUBMIT_CHUNK, submit_units

    n = 2 * SUBMIT_CHUNK + 7
    seen: list[list[str]] = []

    def on_chunk(ids: list[str]) -> None:  # each chunk is recorded before the next is written
        assert session.coord.states(Kind.CU, ids) == ["New"] * len(ids)
        assert len(session.coord.list_ids(Kind.CU)) == sum(map(len, seen)) + len(ids)
        seen.append(ids)

    plain = submit_units(session, [{"executable": "/bin/true"}] * 3, on_chunk=on_chunk)
    assert [len(c) for c in seen] == [3] and seen[0] == [cu.id for cu in plain]
    seen.clear()
    pcs, pilot = _pilot(session, pcs_factory, tmp_path)
    cds = ComputeDataService(session=session)
    cds.add_pilot_compute_service(pcs)
    cus = cds.submit_compute_units([{"executable": "/bin/echo", "arguments": [str(i)]} for i in range(n)])
    assert len({cu.id for cu in cus}) == n
    cds.wait(timeout=120)
    records = session.coord.get_many(Kind.CU, [cu.id for cu in cus])
    assert all(r is not None and r.state == "Done" for r in records)
    outputs = [(Path(r.data["sandbox"]) / "stdout").read_text() for r in records if r is not None]
    assert outputs == [f"{i}\n" for i in range(n)]  # the i-th handle is the i-th description
    from pilotdata.history import History, HistoryWriter, queries

    history = History(f"sqlite:///{tmp_path / 'history.sqlite'}")
    HistoryWriter(session.coord, history).drain()
    done = [e.entity_id for e in queries.events(history, entity="cu", limit=None) if e.to_state == "Done"]
    assert sorted(done) == sorted(cu.id for cu in cus)  # each completed exactly once


def test_wait_until_follows_events_and_times_out_naming_the_outstanding(session: Session) -> None:
    from pilotdata.services.waiting import wait_until

    coord = session.coord
    coord.create_many(Kind.CU, [("w1", {}), ("w2", {})])
    coord.transition(Kind.CU, "w1", "Canceled")
    outstanding = r"1 of 2 ComputeUnit\(s\) not finished \(1 New, e\.g\. w2 New\); no live pilot: start one"
    with pytest.raises(TimeoutExpired, match=outstanding):
        wait_until(coord, Kind.CU, ["w1", "w2"], timeout=0.3)
    coord.transition(Kind.CU, "w2", "Pending")
    wait_until(coord, Kind.CU, ["w1", "w2"], {"Pending"}, timeout=5)  # a target state, not only final
    with pytest.raises(NotFoundError, match="nope"):
        wait_until(coord, Kind.CU, ["w1", "nope"], timeout=5)


def test_reconnect_by_id_from_another_process(
    session: Session, pcs_factory: list[PilotComputeService], tmp_path: Path
) -> None:
    pcs, pilot = _pilot(session, pcs_factory, tmp_path)
    cu = pilot.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["0.2"]})
    script = textwrap.dedent(f"""
        from pilotdata import ComputeUnit, PilotCompute
        from pilotdata.session import Session
        s = Session({session._url!r}, namespace={session.namespace!r})
        cu = ComputeUnit({cu.get_url()!r}, session=s)
        print(cu.wait(timeout=60), PilotCompute({pilot.get_url()!r}, session=s).get_state())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Done", "Running"]


def test_cancel_unit_and_wait_timeout(session: Session, pcs_factory: list[PilotComputeService], tmp_path: Path) -> None:
    pcs, pilot = _pilot(session, pcs_factory, tmp_path)
    cu = pilot.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["60"]})
    wait_until(lambda: cu.get_state() == State.Running, 30, "the CU to run")
    with pytest.raises(TimeoutExpired):
        cu.wait(timeout=0.3)
    cu.cancel()
    assert cu.wait(timeout=30) == State.Canceled
    wait_until(lambda: not session.coord.claimed(pilot.id), 30, "the agent to release the canceled CU")


def test_pilot_whose_process_dies_is_marked_and_work_requeued(
    sqlite_session: Session, pcs_factory: list[PilotComputeService], tmp_path: Path
) -> None:
    """BigJob #30: a pilot whose job ended never stays Running; its claimed work goes back to the queue."""
    pcs, pilot = _pilot(sqlite_session, pcs_factory, tmp_path)
    assert pilot.wait(timeout=30, state=State.Running) == State.Running
    cu = pilot.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["60"]})
    wait_until(lambda: cu.get_state() == State.Running, 30, "the CU to run")
    agent_pid = int(pilot.get_details()["host"]["pid"]) if isinstance(pilot.get_details()["host"], dict) \
        else int(sqlite_session.coord.get(Kind.PILOT, pilot.id).data["pid"])
    os.kill(agent_pid, signal.SIGKILL)
    wait_until(lambda: pcs.refresh().get(pilot.id) or pilot.get_state() in ("Failed", "Done"), 30,
               "refresh to notice the dead pilot")
    assert pilot.get_state() in (State.Failed, State.Done)
    rec = sqlite_session.coord.get(Kind.CU, cu.id)
    assert rec.state == "Pending" and rec.attempt == 1
    assert cu.id in sqlite_session.coord.queued(None)


def test_unit_bigger_than_any_pilot_fails_clearly(
    session: Session, pcs_factory: list[PilotComputeService], tmp_path: Path
) -> None:
    pcs, pilot = _pilot(session, pcs_factory, tmp_path)
    cds = ComputeDataService(session=session)
    cds.add_pilot_compute_service(pcs)
    cu = cds.submit_compute_unit({"executable": "/bin/true", "number_of_processes": 8})
    assert cu.wait(timeout=30) == State.Failed
    assert "slot" in (cu.get_details()["reason"] or "")


def test_callbacks_and_explain(sqlite_session: Session, pcs_factory: list[PilotComputeService], tmp_path: Path) -> None:
    pcs, pilot = _pilot(sqlite_session, pcs_factory, tmp_path, affinity_datacenter_label="site-a")
    cds = ComputeDataService(session=sqlite_session)
    cds.add_pilot_compute_service(pcs)
    seen: list[str] = []
    cu = cds.submit_compute_unit({"executable": "/bin/true", "affinity_datacenter_label": "site-a"})
    cu.add_done_callback(lambda c: seen.append(c.get_state()))
    assert cu.wait(timeout=60) == State.Done
    wait_until(lambda: seen == ["Done"], 10, "the done callback")
    text = cds.explain(cu)
    assert cu.id in text and pilot.id in text
    assert isinstance(ComputeUnit(cu.id, session=sqlite_session).get_details()["times"]["Done"], float)
