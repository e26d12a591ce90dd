"""How an agent starts and ends: walltime, failing worker, a pilot canceled by a client, bad starts,
and the coordination password staying out of the log. Each test runs its own ``python -m agent``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilotdata.coordination import connect
from pilotdata.states import Kind
from tests import servers
from tests.agent.conftest import Backend
from tests.agent.harness import AgentProcess, process_alive, sh, submit, submit_many, wait_state
from tests.servers import wait_until


def _pilot(backend: Backend, pilot: str = "p1") -> str:
    backend.coord.create(Kind.PILOT, pilot, {})
    backend.coord.transition(Kind.PILOT, pilot, "Pending")
    return pilot


def _events(backend: Backend, entity: str, entity_id: str) -> list[tuple[str | None, str | None, dict[str, Any]]]:
    return [
        (e.from_state, e.to_state, e.detail)
        for e in backend.coord.events_after(None, limit=10_000)
        if e.entity == entity and e.id == entity_id
    ]


def test_walltime_returns_unstarted_work_and_requeues_running_work(backend: Backend, tmp_path: Path) -> None:
    coord = backend.coord
    pilot = _pilot(backend)
    submit(coord, "long", sh("echo \\$\\$ > pid; exec sleep 60", working_directory=str(tmp_path)))
    submit(coord, "wide", {"executable": "/bin/true", "number_of_processes": 2})
    submit(coord, "later", {"executable": "/bin/true"})
    agent = AgentProcess(
        backend.url, backend.namespace, pilot, tmp_path / "work",
        "--slots", "2", "--walltime", "0.06", "--heartbeat-ttl", "3", "--kill-grace", "1",
    )
    try:
        wait_state(coord, "long", "Running")
        # wide is held (1 of 2 slots is busy) and later is prefetched behind it (one extra round of slots)
        assert coord.claimed(pilot) == ["long", "wide", "later"]
        wait_until(lambda: (tmp_path / "pid").exists(), 10, "the long CU to write its pid")
        pid = int((tmp_path / "pid").read_text())
        assert agent.wait(40) == 0, agent.log
    finally:
        agent.stop()
    assert not process_alive(pid)
    record = coord.get(Kind.PILOT, pilot)
    assert record.state == "Done"
    assert _events(backend, "pilot", pilot)[-1][2] == {"reason": "walltime reached"}
    assert coord.claimed(pilot) == []
    assert not coord.is_alive(pilot)
    assert pilot not in coord.expired_pilots()
    long, wide, later = coord.get_many(Kind.CU, ["long", "wide", "later"])
    assert long is not None and wide is not None and later is not None
    assert (long.state, long.attempt) == ("Pending", 1)  # killed and requeued via the retry path
    assert "walltime reached" in long.detail["reason"]
    assert (wide.state, wide.attempt) == ("Pending", 0)  # unstarted: returned unchanged
    assert (later.state, later.attempt) == ("Pending", 0)  # prefetched, never started: returned unchanged
    assert coord.queued() == ["long", "wide", "later"]


def test_failing_worker_is_removed_after_consecutive_failures(backend: Backend, tmp_path: Path) -> None:
    coord = backend.coord
    pilot = _pilot(backend)
    submit_many(coord, {"f1": sh("exit 1"), "f2": sh("exit 2"), "ok": {"executable": "/bin/true"}})
    agent = AgentProcess(
        backend.url, backend.namespace, pilot, tmp_path / "work",
        "--slots", "1", "--max-consecutive-failures", "2", "--heartbeat-ttl", "3",
    )
    try:
        assert agent.wait(30) == 1, agent.log
    finally:
        agent.stop()
    assert coord.get(Kind.PILOT, pilot).state == "Failed"
    reason = _events(backend, "pilot", pilot)[-1][2]["reason"]
    assert reason == "2 consecutive CU failures (remove a failing worker)"
    states = {r.id: (r.state, r.attempt) for r in coord.get_many(Kind.CU, ["f1", "f2", "ok"]) if r}
    assert states == {"f1": ("Failed", 0), "f2": ("Failed", 0), "ok": ("Pending", 0)}
    assert coord.queued() == ["ok"]
    assert coord.claimed(pilot) == []


def test_pilot_canceled_by_a_client_stops_the_agent(backend: Backend, tmp_path: Path) -> None:
    coord = backend.coord
    pilot = _pilot(backend)
    submit(coord, "sleeper", sh("echo \\$\\$ > pid; exec sleep 60", working_directory=str(tmp_path)))
    agent = AgentProcess(
        backend.url, backend.namespace, pilot, tmp_path / "work",
        "--heartbeat-ttl", "1.5", "--kill-grace", "1",
    )
    try:
        wait_state(coord, "sleeper", "Running")
        wait_until(lambda: (tmp_path / "pid").exists(), 10, "the CU to write its pid")
        coord.transition(Kind.PILOT, pilot, "Canceled", detail={"reason": "user"})
        assert agent.wait(30) == 0, agent.log
    finally:
        agent.stop()
    assert not process_alive(int((tmp_path / "pid").read_text()))
    assert coord.get(Kind.PILOT, pilot).state == "Canceled"
    sleeper = coord.get(Kind.CU, "sleeper")
    assert (sleeper.state, sleeper.attempt) == ("Pending", 1)
    assert coord.queued() == ["sleeper"]
    assert not coord.is_alive(pilot)


def test_agent_refuses_a_pilot_in_a_final_state(backend: Backend, tmp_path: Path) -> None:
    pilot = _pilot(backend)
    backend.coord.transition(Kind.PILOT, pilot, "Canceled")
    submit(backend.coord, "untouched", {"executable": "/bin/true"})
    agent = AgentProcess(backend.url, backend.namespace, pilot, tmp_path / "work")
    try:
        assert agent.wait(30) == 3
    finally:
        agent.stop()
    assert f"pilot {pilot!r} is Canceled; an agent starts only New or Pending pilots" in agent.log
    assert backend.coord.get(Kind.PILOT, pilot).state == "Canceled"
    assert backend.coord.queued() == ["untouched"]


def test_agent_with_an_unknown_coordination_scheme_exits_with_a_clear_error(tmp_path: Path) -> None:
    agent = AgentProcess("mongodb://127.0.0.1:1/x", "ns", "p1", tmp_path / "work")
    try:
        assert agent.wait(30) == 3
    finally:
        agent.stop()
    assert "unknown scheme 'mongodb'" in agent.log


def test_bad_arguments_exit_with_usage(tmp_path: Path) -> None:
    agent = AgentProcess("sqlite:///unused", "ns", "p1", tmp_path / "work", "--slots", "0")
    try:
        assert agent.wait(30) == 2
    finally:
        agent.stop()
    assert "--slots: expected an integer >= 1, got 0" in agent.log


PASSWORD = "agent-s3cret-pw"


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RedisServer]:
    """A real redis-server that requires a password."""
    server = servers.start_redis(tmp_path_factory.mktemp("redis-pw"), password=PASSWORD)
    yield server
    server.stop()


@pytest.mark.parametrize("url_in_env", [True, False], ids=["PDATA_URL", "--url"])
def test_coordination_password_never_reaches_the_log_or_the_cu(
    redis_with_password: servers.RedisServer, tmp_path: Path, namespace: str, url_in_env: bool
) -> None:
    url = redis_with_password.url
    assert PASSWORD in url
    with connect(url, namespace) as coord:
        coord.create(Kind.PILOT, "p1", {})
        submit(coord, "env", {"executable": "/usr/bin/env"})
        submit(coord, "fail", sh("exit 4"))
        agent = AgentProcess(
            url, namespace, "p1", tmp_path / "work", "--walltime", "0.04", "--log-level", "DEBUG",
            url_in_env=url_in_env,
        )
        try:
            assert agent.wait(30) == 0, agent.log
        finally:
            agent.stop()
        assert coord.get(Kind.CU, "env").state == "Done"
        assert coord.get(Kind.CU, "fail").state == "Failed"
        log = agent.log
        assert "pilot p1 running" in log and f"127.0.0.1:{redis_with_password.port}" in log
        assert PASSWORD not in log
        assert PASSWORD not in (tmp_path / "work" / "env" / "stdout").read_text()
        assert ("carries a password; prefer PDATA_URL" in log) is not url_in_env
        for event in coord.events_after(None):
            assert PASSWORD not in repr(event)
        for kind, ids in ((Kind.PILOT, ["p1"]), (Kind.CU, ["env", "fail"])):
            for record in coord.get_many(kind, ids):
                assert PASSWORD not in repr(record)


def _uploading_du(backend: Backend, du: str) -> None:
    """A DataUnit whose first upload never finishes (Pending, no replica)."""
    backend.coord.create(Kind.DU, du, {"name": du, "description": {}})
    backend.coord.transition(Kind.DU, du, "Pending")


def test_input_wait_is_bounded_and_then_fails_the_cu(backend: Backend, tmp_path: Path) -> None:
    coord = backend.coord
    pilot = _pilot(backend)
    _uploading_du(backend, "du-slow")
    submit(coord, "needs-du", {"executable": "/bin/true", "input_data": ["du-slow"]})
    agent = AgentProcess(
        backend.url, backend.namespace, pilot, tmp_path / "work", "--input-wait", "1"
    )
    try:
        wait_state(coord, "needs-du", "Failed", timeout=20)
        assert agent.terminate(30) == 0, agent.log
    finally:
        agent.stop()
    reason = coord.get(Kind.CU, "needs-du").data["reason"]
    assert reason == "input staging failed: input DataUnit du-slow is Pending: no complete replica after 1 s"


def test_walltime_during_an_input_wait_requeues_instead_of_failing(backend: Backend, tmp_path: Path) -> None:
    coord = backend.coord
    pilot = _pilot(backend)
    _uploading_du(backend, "du-slow")
    submit(coord, "needs-du", {"executable": "/bin/true", "input_data": ["du-slow"]})
    agent = AgentProcess(backend.url, backend.namespace, pilot, tmp_path / "work", "--walltime", "0.05")
    try:
        wait_state(coord, "needs-du", "StagingInput")
        assert agent.wait(30) == 0, agent.log
    finally:
        agent.stop()
    record = coord.get(Kind.CU, "needs-du")
    assert (record.state, record.attempt) == ("Pending", 1)
    assert "walltime reached" in record.detail["reason"]
    assert coord.queued() == ["needs-du"]
    assert coord.get(Kind.PILOT, pilot).state == "Done"
