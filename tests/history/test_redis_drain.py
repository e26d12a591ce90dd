"""Draining the Redis coordination backend (a real redis-server) into SQLite and PostgreSQL histories."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pilotdata.coordination import Coordination, connect
from pilotdata.history import History, HistoryWriter, queries, source_id
from tests.history.workload import all_events, run_workload
from tests.servers import RedisServer, wait_until

pytest.importorskip("pilotdata.coordination.redis_backend", reason="the Redis coordination backend")


@pytest.fixture
def redis_coordination(redis_server: RedisServer, namespace: str) -> Iterator[Coordination]:
    coord = connect(redis_server.url, namespace=namespace)
    yield coord
    coord.close()


def test_redis_stream_drains_once_and_resumes(
    redis_coordination: Coordination, redis_server: RedisServer, namespace: str, history_url: str
) -> None:
    work = run_workload(redis_coordination, n_cus=4)
    stream = all_events(redis_coordination)
    with History(history_url) as history:
        writer = HistoryWriter(redis_coordination, history, batch_size=6)
        assert writer.source == source_id(redis_coordination) == f"{namespace}@{redis_coordination.url}"
        assert writer.drain(limit=8) == 8
    # restart: new client, new History; continue where the first stopped, store nothing twice
    with connect(redis_server.url, namespace=namespace) as coord2, History(history_url) as history:
        writer = HistoryWriter(coord2, history)
        assert writer.stored_cursor() == stream[7].cursor
        assert writer.drain(trim=True) == len(stream) - 8
        assert writer.drain() == 0
        assert all_events(coord2) == []  # trimmed up to what is stored
        assert all(queries.completions(history, cu) == 1 for cu in work.done)
        assert len(queries.transfers(history)) == work.transfers
        stored = len(queries.events(history)) + len(queries.transfers(history))
        assert stored == len(stream)
        # each detail stored as the stream's text (not encoded again) reads back as the stream's detail
        assert all(ev.detail_text is not None for ev in stream)
        for cu in work.done:
            assert [e.detail for e in queries.events_for(history, "cu", cu)] == [
                ev.detail for ev in stream if ev.entity == "cu" and ev.id == cu]


def test_redis_run_uses_blocking_reads(redis_coordination: Coordination, history_url: str) -> None:
    with History(history_url) as history:
        writer = HistoryWriter(redis_coordination, history)
        stop = threading.Event()
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(writer.run(stop, interval=0.5)))
        thread.start()
        try:
            redis_coordination.create("cu", "r1", {"description": {}})
            wait_until(lambda: queries.events_for(history, "cu", "r1"), 10, "the event of r1 to be stored")
        finally:
            stop.set()
            thread.join(10)
        assert not thread.is_alive()
        assert result == [1]
