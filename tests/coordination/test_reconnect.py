"""Clients ride out a coordination outage (``Reconnecting``): a real redis-server with its AOF on is
restarted or killed under a waiting client; a longer outage ends in one clear error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata.coordination import TransitionRequest, connect
from pilotdata.coordination.base import TransitionResult
from pilotdata.coordination.reconnect import Reconnecting, applied_on_retry
from pilotdata.errors import CoordinationError, CoordinationUnavailableError
from pilotdata.session import Session
from pilotdata.states import Kind
from tests import servers

SECRET = "s3cr3t-reconnect-pw"


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[servers.RedisServer]:
    """A redis-server of this test, every write fsynced to its AOF, with a password."""
    server = servers.start_redis(tmp_path / "redis", password=SECRET, extra=servers.DURABLE)
    yield server
    server.stop()


def _restart_after(server: servers.RedisServer, seconds: float) -> threading.Thread:
    def restart() -> None:
        time.sleep(seconds)  # the outage: how long the server stays down
        server.start_again()

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("stop", ["shutdown", "kill9"])
def test_a_client_rides_out_a_three_second_redis_restart(durable_redis: servers.RedisServer, stop: str) -> None:
    session = Session(durable_redis.url, namespace="rc", reconnect_for=30)
    try:
        coord = session.coord
        coord.create_many(Kind.CU, [("c", {"description": {"executable": "/bin/true"}})], binder="cds-x")
        getattr(durable_redis, stop)()
        began = time.monotonic()
        restarter = _restart_after(durable_redis, 3.0)
        # every kind of call a waiting client makes: reads, blocking event reads, a checked move
        assert coord.get(Kind.CU, "c").state == "New"
        assert time.monotonic() - began >= 2.5
        assert coord.connected_for() < 5
        assert coord.events_after(None, limit=10)[0].id == "c"
        bind = TransitionRequest("c", "Pending", "New", queue="")
        assert coord.transition_many(Kind.CU, [bind])[0].ok
        assert coord.queued() == ["c"] and coord.unbound() == []
        restarter.join(10)
    finally:
        session.close()


def test_an_outage_longer_than_the_patience_is_one_clear_error(durable_redis: servers.RedisServer) -> None:
    session = Session(durable_redis.url, namespace="rc", reconnect_for=1.5)
    try:
        session.coord.ping()
        durable_redis.shutdown()
        began = time.monotonic()
        with pytest.raises(CoordinationUnavailableError) as info:
            session.coord.states(Kind.CU, ["c"])
        took = time.monotonic() - began
        assert 1.0 <= took <= 5.0
        message = str(info.value)
        assert f"redis://127.0.0.1:{durable_redis.port}/0" in message and "gave up after 1.5 s" in message
        assert SECRET not in message and SECRET not in repr(info.value.__cause__)
        assert "PDATA_RECONNECT" in message
    finally:
        session.close()


def test_the_patience_comes_from_pdata_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDATA_RECONNECT", "45")
    assert Session("sqlite:///x.sqlite").reconnect_for == 45.0
    monkeypatch.setenv("PDATA_RECONNECT", "soon")
    with pytest.raises(ValueError, match=r"PDATA_RECONNECT.*'soon'"):
        Session("sqlite:///x.sqlite")
    monkeypatch.delenv("PDATA_RECONNECT")
    assert Session("sqlite:///x.sqlite").reconnect_for == 60.0


def test_a_rejected_password_is_not_retried(durable_redis: servers.RedisServer) -> None:
    wrong = f"redis://:not-the-password@127.0.0.1:{durable_redis.port}/0"
    coord = Reconnecting(connect(wrong, "rc"), patience=30)
    began = time.monotonic()
    with pytest.raises(CoordinationError) as info:
        coord.ping()
    assert not isinstance(info.value, CoordinationUnavailableError)
    assert time.monotonic() - began < 5
    assert "not-the-password" not in str(info.value)
    coord.close()


def _result(cu: str, ok: bool, previous: str | None, to: str) -> TransitionResult:
    return TransitionResult("cu", cu, ok, previous, to, 0, 0.0)


def test_a_retried_batch_counts_moves_found_at_their_target_as_applied() -> None:
    requests = [
        TransitionRequest("a", "Running", "Pending"),
        TransitionRequest("a", "Done", "Running"),
        TransitionRequest("b", "Running", "Pending"),
        TransitionRequest("c", "Running", "Pending"),
        TransitionRequest("gone", "Running", "Pending"),
    ]
    results = [
        _result("a", False, "Done", "Running"),  # the first try applied both of a's moves
        _result("a", False, "Done", "Done"),
        _result("b", False, "Running", "Running"),  # applied, reply lost
        _result("c", False, "Canceled", "Running"),  # really refused
        _result("gone", False, None, "Running"),
    ]
    fixed = applied_on_retry(requests, results)
    assert [r.ok for r in fixed] == [True, True, True, False, False]
    assert fixed[0].previous == "Pending"
