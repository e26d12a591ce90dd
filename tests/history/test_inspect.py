"""The query layer (``pilotdata.inspect``) on a real coordination backend and SQLite / PostgreSQL histories:
filters and paging, the live overlay of claims on the counts, throughput, failures, bytes of CUs and of
DataUnits as such, and bad input."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pilotdata.coordination import Coordination, TransitionRequest
from pilotdata.errors import DescriptionError, NotFoundError
from pilotdata.history import History
from pilotdata.inspect import SHARED, CUFilter, Inspector, glob_to_like
from pilotdata.records import TRANSFER_EVENT, ByteCategory, transfer_record
from pilotdata.runs import start_run
from pilotdata.states import ComputeUnitState as S
from pilotdata.states import Kind, PilotState


@pytest.fixture
def ins(coordination: Coordination, history_url: str) -> Iterator[Inspector]:
    history = History(history_url)
    yield Inspector(coordination, history)
    history.close()


def _pilot(coord: Coordination, name: str, site: str) -> None:
    coord.create(Kind.PILOT, name, {"labels": {"datacenter": site, "machine": f"{name}-node"}, "slots": 4})
    coord.transition(Kind.PILOT, name, PilotState.PENDING)
    coord.transition(Kind.PILOT, name, PilotState.RUNNING, pilot=name)
    coord.heartbeat(name, 60)


def _work(coord: Coordination) -> str:
    """30 CUs of one run on two pilots at two sites, names with LIKE's special characters."""
    run = start_run(coord, "r").id
    _pilot(coord, "pa", "site-a")
    _pilot(coord, "pb", "site-ab")  # a site whose name starts with the other's
    names = [f"job_{i:02d}" if i % 2 else f"Job%{i:02d}" for i in range(30)]
    coord.create_many(Kind.CU, [(f"cu-{i:02d}", {"description": {"name": n}, "run": run})
                                for i, n in enumerate(names)])
    coord.transition_many(Kind.CU, [TransitionRequest(f"cu-{i:02d}", S.PENDING.value,
                                                      detail={"pilot": "pa" if i < 20 else None})
                                    for i in range(30)])
    for i in range(10):
        pilot = "pa" if i < 5 else "pb"
        coord.transition(Kind.CU, f"cu-{i:02d}", S.RUNNING, pilot=pilot)
        ending = S.FAILED if i in (3, 7) else S.DONE
        coord.transition(Kind.CU, f"cu-{i:02d}", ending, pilot=pilot,
                         detail={"reason": "exit code 2", "exit_code": 2} if ending is S.FAILED else {})
    return run


def test_filters_paging_and_cursors(ins: Inspector, coordination: Coordination) -> None:
    run = _work(coordination)
    ins.refresh()
    everything = ins.list_cus(CUFilter(run=run), limit=100)
    assert everything.total == 30 and [c.id for c in everything.rows] == [f"cu-{i:02d}" for i in range(30)]
    assert ins.list_cus(CUFilter(run=run, states=(S.FAILED.value,))).total == 2
    assert {c.id for c in ins.list_cus(CUFilter(site="site-a")).rows} == {f"cu-{i:02d}" for i in range(5)} | {
        f"cu-{i:02d}" for i in range(10, 20)}  # site-a, not site-ab: the Pending ones bound to pa too
    assert ins.list_cus(CUFilter(site="site-ab")).total == 5
    assert ins.list_cus(CUFilter(pilot=SHARED)).total == 10  # bound to no pilot: the shared queue
    assert ins.list_cus(CUFilter(name="job_*")).total == 15  # '_' is a literal, case-insensitive
    assert ins.list_cus(CUFilter(name="JOB%0?")).total == 5  # '%' is a literal: Job%00 ... Job%08
    assert ins.list_cus(CUFilter(name="j*")).total == 30
    by_offset, cursor_pages = [], []
    page = ins.list_cus(CUFilter(run=run), limit=7)
    while True:
        cursor_pages += [c.id for c in page.rows]
        if page.cursor is None or len(page.rows) < 7:
            break
        page = ins.list_cus(CUFilter(run=run), limit=7, after=page.cursor)
    offset: int | None = 0
    while offset is not None:
        page = ins.list_cus(CUFilter(run=run), limit=7, offset=offset)
        by_offset += [c.id for c in page.rows]
        offset = page.next_offset
    assert cursor_pages == by_offset == [c.id for c in everything.rows]
    newest = ins.list_cus(CUFilter(run=run), limit=3, newest_first=True)
    assert [c.id for c in newest.rows] == ["cu-29", "cu-28", "cu-27"]
    assert [c.id for c in ins.iter_cus(CUFilter(run=run), batch=4)] == [c.id for c in everything.rows]
    assert glob_to_like("a_b%c*d?") == "a\\_b\\%c%d_"


def test_counts_lay_the_live_claims_over_the_index(ins: Inspector, coordination: Coordination) -> None:
    run = _work(coordination)
    coordination.enqueue([f"cu-{i:02d}" for i in range(20, 30)], None)
    claimed = coordination.claim("pb", limit=2)  # prefetched by pb: still Pending, but on pb now
    assert len(claimed) == 2
    ins.refresh()
    counts = ins.counts(run)
    assert counts.rows["pb"] == {"Done": 4, "Failed": 1, "Pending": 2}
    assert counts.rows[SHARED] == {"Pending": 8} and counts.shared_queue == 8
    assert counts.rows["pa"] == {"Done": 4, "Failed": 1, "Pending": 10}
    assert counts.total == {"Done": 8, "Failed": 2, "Pending": 20}
    assert counts.sites == {"pa": "site-a/pa-node", "pb": "site-ab/pb-node"}
    assert ins.counts("other-run").rows == {"pa": {}, "pb": {}}  # the live pilots, with nothing of it


def test_failures_throughput_details_and_bad_input(ins: Inspector, coordination: Coordination) -> None:
    run = _work(coordination)
    ins.refresh()
    [group] = ins.failures(run)
    assert (group.reason, group.count, sorted(group.examples)) == ("exit code 2", 2, ["cu-03", "cu-07"])
    buckets = ins.throughput(run, bucket=3600)
    assert sum(sum(c.values()) for _, c in buckets) == 10 and sum(c.get("Failed", 0) for _, c in buckets) == 2
    details = ins.cu("cu-03")
    assert (details.summary.state, details.summary.exit_code, details.summary.reason) == ("Failed", 2, "exit code 2")
    assert [e["to"] for e in details.events] == ["New", "Pending", "Running", "Failed"]
    assert details.in_coordination and details.description == {"name": "job_03"}
    with pytest.raises(NotFoundError):
        ins.cu("cu-nope")
    with pytest.raises(DescriptionError):
        CUFilter(states=("Finished",))
    with pytest.raises(DescriptionError):
        ins.list_cus(limit=0)
    with pytest.raises(DescriptionError):
        ins.list_cus(after="not-a-cursor")
    summary = ins.run(run)
    assert summary.counts == {"Done": 8, "Failed": 2, "Pending": 20} and summary.pilots == ["pa", "pb"]
    assert summary.sites == ["site-a/pa-node", "site-ab/pb-node"] and not summary.finished


def test_bytes_of_cus_and_of_data_units_as_such(ins: Inspector, coordination: Coordination) -> None:
    run = _work(coordination)

    def record(nbytes: int, category: ByteCategory, cu: str | None = None, pilot: str | None = None) -> None:
        coordination.record_event(TRANSFER_EVENT, "du-1", transfer_record(
            "du-1", nbytes, 0.1, category=category, source="s", destination="d", cu=cu,
            run=None if cu else run), pilot=pilot)

    record(1000, ByteCategory.UPLOADED)
    record(1000, ByteCategory.LINKED)  # a replica made as a link
    record(1000, ByteCategory.STAGED, "cu-00", "pa")
    record(1000, ByteCategory.CACHE_HIT, "cu-01", "pa")
    record(1000, ByteCategory.LINKED, "cu-05", "pb")
    record(50, ByteCategory.OUTPUT, "cu-05", "pb")
    ins.refresh()
    totals = ins.bytes(run)
    assert totals.by_category == {"uploaded": 1000, "replicated": 0, "staged": 1000, "linked": 2000,
                                  "cache_hit": 1000, "output": 50}
    assert (totals.moved, totals.inputs, totals.saved, totals.linked_replicas) == (2050, 3000, 2000, 1000)
    per_site = ins.bytes_by("site", run)
    assert per_site["site-a/pa-node"].inputs == 2000 and per_site["site-ab/pb-node"].saved == 1000
    assert per_site["client"].by_category["uploaded"] == 1000 and per_site["client"].inputs == 0
    trace = {row.id: row for row in ins.trace(run)}
    assert trace["cu-05"].bytes["linked"] == 1000 and trace["cu-05"].bytes["output"] == 50
    assert trace["cu-03"].state == "Failed" and trace["cu-03"].ended is not None
    assert ins.cu("cu-01").inputs[0].category == "cache_hit"
