"""Single submits gathered into batches (ComputeDataService.submit_compute_unit): what is recorded when,
in which order, and what a client that dies or exits leaves behind (SQLite and Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from pilotdata import ComputeDataService, PilotComputeService, State
from pilotdata.errors import DescriptionError
from pilotdata.history import History, HistoryWriter, queries
from pilotdata.services import FailurePolicy
from pilotdata.session import Session
from pilotdata.states import Kind
from tests.servers import wait_until


def test_a_loop_of_single_submits_runs_every_unit_once_in_order(session: Session,
                                                                 pcs_factory: list[PilotComputeService],
                                                                 tmp_path: Path) -> None:
    pcs = PilotComputeService(session=session, policy=FailurePolicy(heartbeat_ttl=3))
    pcs_factory.append(pcs)
    pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 1,
                      "working_directory": str(tmp_path / "pilot")})
    cds = ComputeDataService(session=session, submit_linger=0.05)
    cds.add_pilot_compute_service(pcs)
    out = tmp_path / "order"
    cus = [cds.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", f"echo {i} >> {out}"],
                                    "shell": False}) for i in range(40)]
    cds.wait(timeout=120)
    assert [cu.get_state() for cu in cus] == [State.Done] * 40
    # one slot: they ran one at a time, in submit order (each batch is recorded in order, batches in turn)
    assert out.read_text().split() == [str(i) for i in range(40)]
    history = History(f"sqlite:///{tmp_path / 'history.sqlite'}")
    HistoryWriter(session.coord, history).drain()
    done = Counter(e.entity_id for e in queries.events(history, entity="cu", limit=None) if e.to_state == "Done")
    assert done == {cu.id: 1 for cu in cus}


def test_a_handle_read_records_its_batch_at_once(session: Session) -> None:
    cds = ComputeDataService(session=session, submit_linger=60)  # the timer would not fire in this test
    cus = [cds.submit_compute_unit({"executable": "/bin/true"}) for _ in range(3)]
    assert session.coord.list_ids(Kind.CU) == []  # gathered, not recorded yet
    assert cus[1].get_state() == "Pending"  # no live pilot: bound to the shared queue; the read recorded all three
    assert sorted(session.coord.list_ids(Kind.CU)) == sorted(cu.id for cu in cus)
    more = cds.submit_compute_unit({"executable": "/bin/true"})
    assert [cu.id for cu in cds.list_compute_units()] == [cu.id for cu in (*cus, more)]
    assert session.coord.get(Kind.CU, more.id).state == "Pending"


def test_the_linger_timer_records_a_batch_nobody_reads(session: Session) -> None:
    cds = ComputeDataService(session=session, submit_linger=0.05)
    cus = [cds.submit_compute_unit({"executable": "/bin/true"}) for _ in range(5)]
    wait_until(lambda: len(session.coord.list_ids(Kind.CU)) == 5, 10, "the batch to be recorded by the timer")
    assert sorted(session.coord.list_ids(Kind.CU)) == sorted(cu.id for cu in cus)


def test_a_bad_single_submit_raises_at_once_and_records_nothing(session: Session) -> None:
    cds = ComputeDataService(session=session, submit_linger=60)
    good = cds.submit_compute_unit({"executable": "/bin/true"})
    with pytest.raises(DescriptionError, match="number_of_processes"):
        cds.submit_compute_unit({"executable": "/bin/true", "number_of_process": 2})
    cds.flush()
    assert session.coord.list_ids(Kind.CU) == [good.id]


def _client(session: Session, tail: str) -> str:
    return textwrap.dedent(f"""
        import os, signal, sys
        from pilotdata import ComputeDataService
        from pilotdata.session import Session
        s = Session({session._url!r}, namespace={session.namespace!r})
        cds = ComputeDataService(session=s, submit_linger=60)
        ids = [cds.submit_compute_unit({{"executable": "/bin/true"}}).id for _ in range(7)]
        print(" ".join(ids), flush=True)
    """) + textwrap.dedent(tail)


def test_a_client_that_exits_records_what_it_submitted(session: Session) -> None:
    """A normal exit, and one by an uncaught exception, record the submits still gathered (atexit)."""
    for tail in ("sys.exit(0)", "raise RuntimeError('the user script failed')"):
        out = subprocess.run([sys.executable, "-c", _client(session, tail)], capture_output=True, text=True,
                             timeout=60)
        ids = out.stdout.split()
        assert len(ids) == 7, out.stderr
        assert session.coord.states(Kind.CU, ids) == ["Pending"] * 7, out.stderr


def test_a_client_killed_before_its_batch_was_recorded_leaves_nothing_half_made(session: Session) -> None:
    """The guarantee's edge: killed within the linger, the gathered CUs never existed; nothing is stranded."""
    proc = subprocess.Popen([sys.executable, "-c", _client(session, "signal.pause()")], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        ids = proc.stdout.readline().split()
        assert len(ids) == 7
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert session.coord.get_many(Kind.CU, ids) == [None] * 7
    assert session.coord.list_ids(Kind.CU) == [] and session.coord.queued() == []
