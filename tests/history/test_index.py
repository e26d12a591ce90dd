"""The history's index tables (history_cus, the counters, run stats) against the truth, on SQLite and
PostgreSQL: folded batch by batch, rebuilt from the events, under concurrent writers, after a lost
pilot's requeue; and a history written by an older pilot-data migrated in place."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from pilotdata.coordination import Coordination, TransitionRequest, connect
from pilotdata.history import History, HistoryWriter, Transfer
from pilotdata.history.index import UNBOUND, CountRow, CURow, EndRow, IndexMark, RunStatsRow, rebuild
from pilotdata.records import TRANSFER_EVENT, ByteCategory, transfer_record
from pilotdata.runs import Origin, start_run
from pilotdata.states import ComputeUnitState as S
from pilotdata.states import Kind, PilotState


@pytest.fixture
def history(history_url: str) -> Iterator[History]:
    h = History(history_url)
    yield h
    h.close()


def cus_table(history: History, source: str) -> dict[str, dict[str, Any]]:
    with history.read() as conn:
        return {r["cu_id"]: dict(r) for r in conn.execute(select(CURow.__table__).where(CURow.source == source))
                .mappings()}


def counters(history: History, source: str) -> Counter[tuple[str, str, str]]:
    with history.read() as conn:
        return Counter({(r.run, r.place, r.state): r.n for r in conn.execute(
            select(CountRow.__table__).where(CountRow.source == source)) if r.n})


def truth(history: History, source: str) -> Counter[tuple[str, str, str]]:
    """The counters as a GROUP BY over the CU rows would give them."""
    return Counter((r["run"] or "", UNBOUND if r["place"] is None else r["place"], r["state"])
                   for r in cus_table(history, source).values())


def pilot(coord: Coordination, name: str, site: str) -> str:
    coord.create(Kind.PILOT, name, {"labels": {"datacenter": site, "machine": name}, "slots": 2})
    coord.transition(Kind.PILOT, name, PilotState.PENDING)
    coord.transition(Kind.PILOT, name, PilotState.RUNNING, pilot=name)
    return name


def scenario(coord: Coordination, tag: str = "") -> dict[str, str]:
    """CUs in every situation the fold must place right; returns CU id -> what happened to it."""
    run = start_run(coord, f"r{tag}", origin=Origin.USER).id
    a, b = pilot(coord, f"pa{tag}", "site-a"), pilot(coord, f"pb{tag}", "site-b")
    ids = {f"{tag}{k}": k for k in ("done", "failed", "retried", "queued-a", "shared", "claimed", "new", "bindfail",
                                     "canceled", "requeued", "stranded")}
    coord.create_many(Kind.CU, [(i, {"description": {"name": f"job-{k}", "number_of_processes": 2}, "run": run})
                                for i, k in ids.items()])

    def bind(cu: str, where: str | None) -> None:
        coord.transition(Kind.CU, cu, S.PENDING, detail={"pilot": where, "placement": "test"})
        coord.enqueue([cu], where)

    for cu, where in ((f"{tag}done", a), (f"{tag}failed", a), (f"{tag}retried", b), (f"{tag}queued-a", a),
                      (f"{tag}shared", None), (f"{tag}claimed", None), (f"{tag}canceled", b),
                      (f"{tag}requeued", b), (f"{tag}stranded", b)):
        bind(cu, where)
    coord.transition(Kind.CU, f"{tag}bindfail", S.FAILED, detail={"reason": "no pilot can run it"})
    for cu, p in ((f"{tag}done", a), (f"{tag}failed", a), (f"{tag}retried", b), (f"{tag}requeued", b)):
        coord.dequeue(cu)
        coord.transition(Kind.CU, cu, S.STAGING_INPUT, pilot=p, detail={"host": "h1"})
        coord.transition(Kind.CU, cu, S.RUNNING, pilot=p, detail={"slots": 2})
    coord.transition(Kind.CU, f"{tag}done", S.DONE, pilot=a, detail={"exit_code": 0})
    coord.transition(Kind.CU, f"{tag}failed", S.FAILED, pilot=a, detail={"exit_code": 3, "reason": "exit code 3"})
    coord.transition(Kind.CU, f"{tag}retried", S.PENDING, pilot=b, detail={"reason": "exit code 1", "retry": "1/2"})
    coord.transition(Kind.CU, f"{tag}retried", S.RUNNING, pilot=a)
    coord.transition(Kind.CU, f"{tag}retried", S.DONE, pilot=a, detail={"exit_code": 0})
    coord.transition(Kind.CU, f"{tag}canceled", S.CANCELED, detail={"reason": "canceled by user"})
    coord.dequeue(f"{tag}canceled")
    # pilot b dies (kill -9): its running CU and its own queue go back to the shared queue
    coord.transition_many(Kind.CU, [TransitionRequest(f"{tag}requeued", S.PENDING.value, S.RUNNING.value, b,
                                                      {"reason": f"pilot {b!r} lost; requeued", "lost_pilot": b})])
    coord.transition(Kind.PILOT, b, PilotState.FAILED, detail={"reason": "heartbeat lost"})
    coord.record_event(TRANSFER_EVENT, "du-x", transfer_record("du-x", 1000, 0.5, category=ByteCategory.STAGED,
                                                               source="file:///pd", destination=f"pilot-cache:{a}",
                                                               cu=f"{tag}done", source_pd="pd1"), pilot=a)
    return ids


def test_the_fold_places_every_cu_and_its_counters_match(coordination: Coordination, history: History) -> None:
    ids = scenario(coordination)
    writer = HistoryWriter(coordination, history, batch_size=4)  # many small batches
    writer.drain()
    rows = cus_table(history, writer.source)
    assert set(rows) == set(ids)
    where = {ids[i]: (r["state"], r["place"], r["site"]) for i, r in rows.items()}
    assert where == {
        "done": ("Done", "pa", "site-a/pa"), "failed": ("Failed", "pa", "site-a/pa"),
        "retried": ("Done", "pa", "site-a/pa"), "queued-a": ("Pending", "pa", "site-a/pa"),
        "shared": ("Pending", "", None), "claimed": ("Pending", "", None), "new": ("New", None, None),
        "bindfail": ("Failed", None, None), "canceled": ("Canceled", "pb", "site-b/pb"),
        "requeued": ("Pending", "", None),  # requeued after kill -9: shared queue, not the dead pilot
        "stranded": ("Pending", "", None),  # was on the dead pilot's own queue
    }
    assert {ids[i]: (r["name"], r["run"]) for i, r in rows.items()}["done"] == ("job-done", "r")
    assert rows["failed"]["exit_code"] == 3 and rows["failed"]["reason"] == "exit code 3"
    assert rows["retried"]["attempt"] == 1 and rows["retried"]["reason"] is None and rows["done"]["host"] == "h1"
    assert counters(history, writer.source) == truth(history, writer.source)
    with history.read() as conn:
        ends = {(r.state, r.n) for r in conn.execute(select(EndRow.__table__))}
        stats = conn.execute(select(RunStatsRow.__table__).where(RunStatsRow.run == "r")).one()
    assert sorted(ends) == [("Canceled", 1), ("Done", 2), ("Failed", 2)]
    assert stats.starts == 5 and stats.runs == 5  # retried twice; requeued ran once; done; failed
    assert stats.first_submit is not None and stats.first_start >= stats.first_submit
    assert stats.busy_sum == pytest.approx(stats.run_sum * 2)  # every CU takes 2 slots


def test_rebuild_from_the_events_gives_the_same_index(coordination: Coordination, history: History) -> None:
    scenario(coordination)
    writer = HistoryWriter(coordination, history, batch_size=3)
    writer.drain()
    before = (cus_table(history, writer.source), counters(history, writer.source))
    with history.write() as conn:
        conn.execute(delete(IndexMark))
    assert HistoryWriter(coordination, history).ensure_index() is True  # outdated: rebuilt
    assert (cus_table(history, writer.source), counters(history, writer.source)) == before
    with history.write() as conn:
        rebuild(conn, writer.source)  # without coordination: a pilot's labels (sites) are lost, ...
    rebuilt = cus_table(history, writer.source)
    assert {r["site"] for r in rebuilt.values()} == {None}
    facts = ("run", "name", "slots")  # ... a CU's run, name and slots are not: its creation event carries them
    assert {i: [r[k] for k in facts] for i, r in rebuilt.items()} == {
        i: [r[k] for k in facts] for i, r in before[0].items()}
    assert {r["run"] for r in rebuilt.values()} == {"r"}
    assert counters(history, writer.source) == truth(history, writer.source)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_folding_in_small_batches_writes_the_rows_one_batch_does(
    coordination: Coordination, history_url: str, tmp_path: Path, batch_size: int
) -> None:
    # small batches update stored rows column by column (only what changed), across a lost pilot's
    # requeue; the rows must be those of one batch that inserts every CU once
    scenario(coordination)
    with History(f"sqlite:///{tmp_path / 'one-batch.sqlite'}") as whole:
        writer = HistoryWriter(coordination, whole, batch_size=10_000)
        writer.drain()
        expected = (cus_table(whole, writer.source), counters(whole, writer.source))
    with History(history_url) as small:
        writer = HistoryWriter(coordination, small, batch_size=batch_size)
        writer.drain()
        assert (cus_table(small, writer.source), counters(small, writer.source)) == expected
        assert counters(small, writer.source) == truth(small, writer.source)


def test_a_stream_whose_creation_events_carry_no_facts_reads_them_from_the_records(
        coordination: Coordination, history: History) -> None:
    # a stream written by an older pilot-data: creation events had an empty detail
    desc = {"executable": "/bin/true", "name": "old-style", "number_of_processes": 3}
    coordination.create_many(Kind.CU, [(f"old-{i}", {"run": "r-old", "description": desc}) for i in range(2)])
    coordination.delete(Kind.CU, "old-1")  # its record is gone before the drain: nothing to read
    events = [replace(e, detail={}) if e.from_state is None else e for e in coordination.events_after(None)]
    assert [e.detail for e in events] == [{}, {}]
    writer = HistoryWriter(coordination, history)
    assert writer.store(events) == 2
    rows = cus_table(history, writer.source)
    assert {i: (r["run"], r["name"], r["slots"]) for i, r in rows.items()} == {
        "old-0": ("r-old", "old-style", 3), "old-1": (None, None, None)}
    assert counters(history, writer.source) == truth(history, writer.source)


def test_a_batch_stored_again_in_part_folds_only_its_new_events(
        coordination: Coordination, history: History, tmp_path: Path) -> None:
    scenario(coordination)
    stream = coordination.events_after(None, limit=100_000)
    writer = HistoryWriter(coordination, history)
    assert writer.store(stream[:7]) == 7
    assert writer.store(stream[:7]) == 0  # all stored: nothing folded twice
    assert writer.store(stream[4:15]) == 8  # the first four were stored: only the rest is folded
    writer.drain()
    clean = History(f"sqlite:///{tmp_path / 'clean.sqlite'}")  # the same stream drained in one go
    try:
        HistoryWriter(coordination, clean).drain()
        assert cus_table(history, writer.source) == cus_table(clean, writer.source)
        assert counters(history, writer.source) == counters(clean, writer.source) == truth(history, writer.source)
    finally:
        clean.close()


def test_concurrent_writers_fold_each_event_once(coordination_url: str, namespace: str, history_url: str) -> None:
    producer = connect(coordination_url, namespace)
    done = threading.Event()
    errors: list[BaseException] = []

    def drain() -> None:
        coord = connect(coordination_url, namespace)
        history = History(history_url)
        try:
            writer = HistoryWriter(coord, history, batch_size=3)
            while not done.is_set():
                writer.drain()
            writer.drain()
        except BaseException as exc:
            errors.append(exc)
        finally:
            history.close()
            coord.close()

    threads = [threading.Thread(target=drain) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(4):
            scenario(producer, tag=f"t{i}")
    finally:
        done.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    history = History(history_url)
    try:
        source = HistoryWriter(producer, history).source
        assert len(cus_table(history, source)) == 44
        assert counters(history, source) == truth(history, source)
    finally:
        history.close()
        producer.close()


def test_a_history_of_an_older_version_is_migrated(tmp_path: Path, coordination: Coordination) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the schema as an earlier pilot-data wrote it, with two records
        db.executescript("""
            CREATE TABLE history_transfers (id INTEGER PRIMARY KEY, source VARCHAR, cursor VARCHAR, du VARCHAR,
                bytes BIGINT, seconds FLOAT, source_url VARCHAR, destination_url VARCHAR, pilot VARCHAR,
                time FLOAT, ok BOOLEAN, detail JSON, UNIQUE (source, cursor));
            INSERT INTO history_transfers VALUES (1, 's', '1', 'du-1', 10, 1.0, 'file:///pd1', 'pilot-cache:p1',
                'p1', 1.0, 1, '{"method": "copy"}');
            INSERT INTO history_transfers VALUES (2, 's', '2', 'du-1', 10, 1.0, '/home/me/db.fa', 'file:///pd1',
                NULL, 2.0, 1, '{}');
        """)
    history = History(f"sqlite:///{path}")
    try:
        with history.read() as conn:
            categories = conn.execute(select(Transfer.category).order_by(Transfer.id)).scalars().all()
        assert categories == ["staged", "uploaded"]
        coordination.create(Kind.CU, "cu-after", {"description": {}})
        assert HistoryWriter(coordination, history).drain() == 1
        assert set(cus_table(history, HistoryWriter(coordination, history).source)) == {"cu-after"}
    finally:
        history.close()
    History(f"sqlite:///{path}").close()  # opening again changes nothing


def test_the_index_follows_time(coordination: Coordination, history: History) -> None:
    """A refresh after more work folds only the new events, on top of what is there."""
    writer = HistoryWriter(coordination, history)
    coordination.create(Kind.CU, "c1", {"description": {"name": "one"}})
    writer.drain()
    assert counters(history, writer.source) == Counter({("", UNBOUND, "New"): 1})
    coordination.transition(Kind.CU, "c1", S.PENDING, detail={"pilot": None})
    writer.drain()
    assert counters(history, writer.source) == Counter({("", "", "Pending"): 1})
    assert cus_table(history, writer.source)["c1"]["name"] == "one"
