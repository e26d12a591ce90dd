"""The read helpers over a history drained from a real coordination backend (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import pilotdata.history
from pilotdata.coordination import Coordination
from pilotdata.history import History, HistoryWriter, queries
from tests.history.workload import TRANSFERS, Workload, all_events, run_workload


@pytest.fixture
def drained(coordination: Coordination, history_url: str) -> Iterator[tuple[History, Workload, Coordination]]:
    """A history holding one workload's events."""
    work = run_workload(coordination, n_cus=5)
    history = History(history_url)
    HistoryWriter(coordination, history).drain()
    yield history, work, coordination
    history.close()


def test_events_for_one_entity_in_order(drained: tuple[History, Workload, Coordination]) -> None:
    history, work, _ = drained
    retried = queries.events_for(history, "cu", work.retried)
    assert [(e.from_state, e.to_state, e.attempt) for e in retried] == [
        (None, "New", 0),
        ("New", "Pending", 0),
        ("Pending", "StagingInput", 0),
        ("StagingInput", "Running", 0),
        ("Running", "Pending", 1),
        ("Pending", "Running", 1),
        ("Running", "StagingOutput", 1),
        ("StagingOutput", "Done", 1),
    ]
    assert retried[4].detail == {"reason": "node lost"}
    assert [e.time for e in retried] == sorted(e.time for e in retried)
    assert queries.events_for(history, "cu", "no-such-cu") == []
    pilot_states = [e.to_state for e in queries.events_for(history, "pilot", "cu-pilot")]
    assert pilot_states == ["New", "Pending", "Running"]


def test_events_filters(drained: tuple[History, Workload, Coordination]) -> None:
    history, work, coord = drained
    stream = [ev for ev in all_events(coord) if ev.entity != "transfer"]
    everything = queries.events(history)
    assert [e.cursor for e in everything] == [ev.cursor for ev in stream]

    done = queries.events(history, entity="cu", state="Done")
    assert sorted(e.entity_id for e in done) == sorted(work.done)
    assert {e.entity for e in queries.events(history, state="Running")} == {"cu", "pilot"}
    assert all(e.pilot == "cu-pilot" for e in queries.events(history, pilot="cu-pilot"))
    assert queries.events(history, pilot="nobody") == []

    middle = stream[len(stream) // 2].time
    later = queries.events(history, since=middle)
    earlier = queries.events(history, until=middle)
    assert later and earlier
    assert all(e.time >= middle for e in later) and all(e.time < middle for e in earlier)
    assert len(later) + len(earlier) == len(stream)

    assert [e.cursor for e in queries.events(history, limit=3)] == [ev.cursor for ev in stream[:3]]
    newest = queries.events(history, limit=2, newest_first=True)
    assert [e.cursor for e in newest] == [stream[-1].cursor, stream[-2].cursor]


def test_completions_count_done_transitions(drained: tuple[History, Workload, Coordination]) -> None:
    history, work, _ = drained
    assert all(queries.completions(history, cu) == 1 for cu in work.done)
    assert queries.completions(history, work.failed[0]) == 0
    assert queries.completions(history, "never-existed") == 0


def test_transfers_and_bandwidth_samples(drained: tuple[History, Workload, Coordination]) -> None:
    history, _, _ = drained
    records = queries.transfers(history)
    assert [(t.du, t.bytes, t.seconds, t.source_url, t.destination_url, t.ok) for t in records] == TRANSFERS
    assert [t.ok for t in queries.transfers(history, ok=False)] == [False]
    assert {t.du for t in queries.transfers(history, du="du-q")} == {"du-q"}
    assert len(queries.transfers(history, pilot="cu-pilot")) == len(TRANSFERS)
    assert [t.du for t in queries.transfers(history, limit=1, newest_first=True)] == ["du-q"]

    samples = {(s.source_url, s.destination_url): s for s in queries.bandwidth_samples(history)}
    assert set(samples) == {
        ("file:///scratch/pd1", "file:///scratch/pd2"),
        ("s3://bucket/pd3", "file:///scratch/pd2"),
    }
    local = samples["file:///scratch/pd1", "file:///scratch/pd2"]
    assert (local.bytes, local.seconds, local.transfers) == (10_000_000, 4.0, 2)
    assert local.bytes_per_second == 2_500_000
    remote = samples["s3://bucket/pd3", "file:///scratch/pd2"]
    assert (remote.bytes, remote.transfers) == (1_000, 1)  # the failed transfer is not evidence
    latest = max(t.time for t in records)
    assert queries.bandwidth_samples(history, since=latest + 1) == []


def test_cu_timeline(drained: tuple[History, Workload, Coordination]) -> None:
    history, work, _ = drained
    timelines = {t.cu_id: t for t in queries.cu_timeline(history)}
    assert set(timelines) == set(work.done) | set(work.failed)

    retried = timelines[work.retried]
    assert (retried.pilot, retried.attempt, retried.state) == ("cu-pilot", 1, "Done")
    assert set(retried.times) == {"New", "Pending", "StagingInput", "Running", "StagingOutput", "Done"}
    events = queries.events_for(history, "cu", work.retried)
    assert retried.times["Running"] == events[5].time  # the latest entry into Running (after the retry)
    assert retried.first == events[0].time and retried.last == events[-1].time
    assert retried.times["New"] <= retried.times["Running"] <= retried.times["Done"]

    failed = timelines[work.failed[0]]
    assert (failed.state, failed.attempt) == ("Failed", 0)
    assert "Done" not in failed.times

    only = queries.cu_timeline(history, [work.failed[0]])
    assert [t.cu_id for t in only] == [work.failed[0]]
    assert queries.cu_timeline(history, []) == []


def test_public_api_is_exported() -> None:
    assert set(pilotdata.history.__all__) == {
        "TRANSFER_ENTITY", "BandwidthSample", "CUTimeline", "DrainMark", "Event", "EventRecord", "History",
        "HistoryWriter", "Transfer", "TransferRecord", "bandwidth_samples", "completions", "cu_timeline",
        "events", "events_for", "queries", "redact_url", "source_id", "sources", "transfers",
    }
    assert all(hasattr(pilotdata.history, name) for name in pilotdata.history.__all__)
