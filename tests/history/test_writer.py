"""Draining a real coordination backend into SQLite and PostgreSQL histories."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pilotdata.coordination import Coordination, connect
from pilotdata.history import (
    DrainMark,
    Event,
    History,
    HistoryWriter,
    Transfer,
    queries,
    source_id,
)
from tests.history.workload import all_events, run_workload
from tests.servers import wait_until


@pytest.fixture
def history(history_url: str) -> Iterator[History]:
    h = History(history_url)
    yield h
    h.close()


def count(history: History, model: type[Event] | type[Transfer] | type[DrainMark]) -> int:
    with history.read() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def stored_cursors(history: History) -> list[str]:
    with history.read() as conn:
        return [
            *conn.execute(select(Event.cursor)).scalars(),
            *conn.execute(select(Transfer.cursor)).scalars(),
        ]


def test_drain_writes_every_event_once(coordination: Coordination, history: History) -> None:
    work = run_workload(coordination)
    stream = all_events(coordination)
    writer = HistoryWriter(coordination, history, batch_size=7)  # several batches

    assert writer.drain() == len(stream)

    assert sorted(stored_cursors(history)) == sorted(ev.cursor for ev in stream)
    assert count(history, Transfer) == work.transfers
    assert count(history, Event) == len(stream) - work.transfers
    assert writer.stored_cursor() == stream[-1].cursor
    # every transition is there with its states, pilot, attempt and detail
    stored = queries.events_for(history, "cu", work.retried)
    expected = [ev for ev in stream if ev.entity == "cu" and ev.id == work.retried]
    assert [(e.cursor, e.from_state, e.to_state, e.pilot, e.attempt, e.time, e.detail) for e in stored] == [
        (e.cursor, e.from_state, e.to_state, e.pilot, e.attempt, e.time, e.detail) for e in expected
    ]


def test_drain_twice_writes_nothing_new(coordination: Coordination, history: History) -> None:
    run_workload(coordination)
    writer = HistoryWriter(coordination, history)
    first = writer.drain()
    rows = count(history, Event) + count(history, Transfer)
    marks = count(history, DrainMark)

    assert writer.drain() == 0
    assert HistoryWriter(coordination, history).drain() == 0

    assert count(history, Event) + count(history, Transfer) == rows == first
    assert count(history, DrainMark) == marks  # a batch that adds nothing leaves no mark


def test_store_of_already_stored_events_is_a_no_op(coordination: Coordination, history: History) -> None:
    run_workload(coordination)
    stream = all_events(coordination)
    writer = HistoryWriter(coordination, history)
    assert writer.store(stream[:5]) == 5

    assert writer.store(stream[:5]) == 0  # the unique constraint, not the cursor, keeps them single
    assert writer.store(stream[3:9]) == 4
    assert writer.drain() == len(stream) - 9
    assert sorted(stored_cursors(history)) == sorted(ev.cursor for ev in stream)


def test_drain_resumes_after_restart(
    coordination: Coordination, history_url: str, coordination_url: str, namespace: str
) -> None:
    run_workload(coordination)
    stream = all_events(coordination)
    first = History(history_url)
    assert HistoryWriter(coordination, first, batch_size=4).drain(limit=10) == 10
    first.close()

    # a new process: new History, new coordination client, new writer
    coord2 = connect(coordination_url, namespace=namespace)
    again = History(history_url)
    try:
        writer = HistoryWriter(coord2, again)
        assert writer.stored_cursor() == stream[9].cursor
        coord2.create("cu", "late", {"description": {}})
        assert writer.drain() == len(stream) - 10 + 1
        assert sorted(stored_cursors(again)) == sorted([ev.cursor for ev in all_events(coord2)])
        assert [e.to_state for e in queries.events_for(again, "cu", "late")] == ["New"]
    finally:
        coord2.close()
        again.close()


def test_drain_limit_bounds_the_events_read(coordination: Coordination, history: History) -> None:
    run_workload(coordination)
    total = len(all_events(coordination))
    writer = HistoryWriter(coordination, history, batch_size=3)

    assert writer.drain(limit=0) == 0
    assert writer.drain(limit=5) == 5
    assert writer.drain(limit=5) == 5
    assert writer.drain() == total - 10


def test_transfer_records_go_to_the_transfers_table(coordination: Coordination, history: History) -> None:
    coordination.record_event(
        "transfer", "du-1",
        {"du": "du-1", "bytes": 2048, "seconds": 0.25, "source": "sftp://alice:pw123@127.0.0.1/pd",
         "destination": "file:///scratch/pd", "ok": True, "reason": "fast path"},
        pilot="p1",
    )
    coordination.record_event("transfer", "du-2", {"du": "du-2", "bytes": "lots"}, pilot="p1")  # malformed
    coordination.record_event("replica", "du-1", {"pd": "pd-1", "status": "complete"})
    HistoryWriter(coordination, history).drain()

    [t] = queries.transfers(history)
    assert (t.du, t.bytes, t.seconds, t.pilot, t.ok) == ("du-1", 2048, 0.25, "p1", True)
    assert t.source_url == "sftp://alice:***@127.0.0.1/pd"  # never a password in history
    assert t.destination_url == "file:///scratch/pd"
    assert t.detail == {"reason": "fast path"}
    assert t.bytes_per_second == 8192
    # the well-formed transfer is not an event; the malformed one is kept as an event, not lost
    as_events = queries.events(history, entity="transfer")
    assert [(e.entity, e.entity_id) for e in as_events] == [("transfer", "du-2")]
    [replica] = queries.events(history, entity="replica")
    assert (replica.from_state, replica.to_state, replica.detail) == (
        None, None, {"pd": "pd-1", "status": "complete"}
    )


def test_trim_drops_only_stored_events(coordination: Coordination, history: History) -> None:
    run_workload(coordination)
    total = len(all_events(coordination))
    writer = HistoryWriter(coordination, history)

    assert writer.drain(limit=5, trim=True) == 5
    assert len(all_events(coordination)) == total - 5
    assert writer.drain(trim=True) == total - 5
    assert all_events(coordination) == []
    coordination.create("du", "after-trim", {"name": "x"})
    assert writer.drain(trim=True) == 1
    assert count(history, Event) + count(history, Transfer) == total + 1


def test_two_writers_draining_concurrently_store_each_event_once(
    coordination: Coordination, history_url: str, coordination_url: str, namespace: str
) -> None:
    producer_done = threading.Event()
    new_rows: list[int] = []
    errors: list[BaseException] = []

    def write() -> None:
        coord = connect(coordination_url, namespace=namespace)
        try:
            history = History(history_url)  # both writers also create the schema at the same moment
            try:
                writer = HistoryWriter(coord, history, batch_size=5)
                total = 0
                while not producer_done.is_set():
                    total += writer.drain()
                total += writer.drain()
                new_rows.append(total)
            finally:
                history.close()
        except BaseException as exc:
            errors.append(exc)
        finally:
            coord.close()

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for round_ in range(4):
            run_workload(coordination, n_cus=5, prefix=f"r{round_}")
    finally:
        producer_done.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    stream = all_events(coordination)
    check = History(history_url)
    try:
        assert sum(new_rows) == len(stream)  # each event counted as new by exactly one writer
        cursors = stored_cursors(check)
        assert len(cursors) == len(set(cursors)) == len(stream)
        assert set(cursors) == {ev.cursor for ev in stream}
        assert all(queries.completions(check, f"r{r}-{i}") == 1 for r in range(4) for i in range(4))
    finally:
        check.close()


def test_run_follows_the_stream_until_stopped(coordination: Coordination, history: History) -> None:
    writer = HistoryWriter(coordination, history)
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(writer.run(stop, interval=0.2)))
    thread.start()
    try:
        coordination.create("cu", "live", {"description": {}})
        coordination.transition("cu", "live", "Pending")
        wait_until(
            lambda: [e.to_state for e in queries.events_for(history, "cu", "live")] == ["New", "Pending"],
            10, "the running writer to store the live CU's events",
        )
        coordination.transition("cu", "live", "Running")
        coordination.transition("cu", "live", "Done")
        wait_until(lambda: queries.completions(history, "live") == 1, 10, "the completion to be stored")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert result == [4]
    assert writer.drain() == 0


def test_sources_separate_namespaces(coordination_url: str, namespace: str, history: History) -> None:
    a = connect(coordination_url, namespace=f"{namespace}a")
    b = connect(coordination_url, namespace=f"{namespace}b")
    try:
        a.create("cu", "same-id", {"description": {}})
        b.create("cu", "same-id", {"description": {}})
        b.transition("cu", "same-id", "Pending")
        wa, wb = HistoryWriter(a, history), HistoryWriter(b, history)

        assert wa.source == source_id(a) == f"{namespace}a@{a.url}"
        assert wb.source != wa.source
        assert (wa.drain(), wb.drain()) == (1, 2)
        assert queries.sources(history) == sorted([wa.source, wb.source])
        assert len(queries.events_for(history, "cu", "same-id", source=wa.source)) == 1
        assert len(queries.events_for(history, "cu", "same-id", source=wb.source)) == 2
        timelines = {t.source: t.state for t in queries.cu_timeline(history, ["same-id"])}
        assert timelines == {wa.source: "New", wb.source: "Pending"}
    finally:
        a.close()
        b.close()


def test_a_detail_is_stored_as_the_stream_holds_it_or_encoded_when_the_text_is_missing(
    coordination: Coordination, history_url: str, tmp_path: Path
) -> None:
    work = run_workload(coordination)
    stream = all_events(coordination)
    assert all(ev.detail_text is not None and json.loads(ev.detail_text) == ev.detail for ev in stream)
    # the stream's text (no second encoding), and events of a reader that has no text (encoded): the same rows
    with History(history_url) as from_text:
        assert HistoryWriter(coordination, from_text).store(stream) == len(stream)
        kept = queries.events_for(from_text, "cu", work.retried)
    with History(f"sqlite:///{tmp_path / 'encoded.sqlite'}") as encoded:
        without_text = [replace(ev, detail_text=None) for ev in stream]
        assert HistoryWriter(coordination, encoded).store(without_text) == len(stream)
        again = queries.events_for(encoded, "cu", work.retried)
    expected = [ev.detail for ev in stream if ev.entity == "cu" and ev.id == work.retried]
    assert [e.detail for e in kept] == [e.detail for e in again] == expected
    assert any(expected)  # not only empty details
