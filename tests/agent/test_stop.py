"""Every stop path hands the work back: a batch system's signal that reaches the CUs too, a CU that
exits 0 on SIGTERM, work taken back from a live agent, a claim the agent never heard of.

Each test runs its own ``python -m agent`` on both backends and asserts on states, attempts and the
event stream, not on log lines alone.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from pilotdata.states import Kind
from tests.agent.conftest import Backend
from tests.agent.harness import AgentProcess, all_events, process_alive, sh, submit, wait_final, wait_state
from tests.servers import wait_until


def _pilot(backend: Backend, pilot: str = "p1") -> str:
    backend.coord.create(Kind.PILOT, pilot, {})
    backend.coord.transition(Kind.PILOT, pilot, "Pending")
    return pilot


def _agent(backend: Backend, pilot: str, tmp_path: Path, *, slots: int, kill_grace: int | None = None) -> AgentProcess:
    """The agent of these tests: a 3 s heartbeat TTL, its workdir under ``tmp_path``."""
    grace = [] if kill_grace is None else ["--kill-grace", str(kill_grace)]
    return AgentProcess(backend.url, backend.namespace, pilot, tmp_path / "work", "--slots", str(slots),
                        "--heartbeat-ttl", "3", *grace)


def _pids(directory: Path, names: list[str]) -> list[int]:
    wait_until(lambda: all((directory / f"{n}.pid").exists() for n in names), 20, "the CUs to write their pids")
    return [int((directory / f"{n}.pid").read_text()) for n in names]


def _state(pid: int) -> str:
    """A process's state letter from /proc (``T`` stopped, ``Z`` ended, not reaped), "" once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return ""
    return next(line.split()[1] for line in status.splitlines() if line.startswith("State:"))


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("order", ["agent first", "CUs first"])
def test_a_batch_system_sigterm_to_every_process_hands_the_cus_back(
    backend: Backend, tmp_path: Path, order: str
) -> None:
    """scancel / preemption / a time limit signal the agent *and* its CUs; none may end Failed or stranded.

    ``die`` dies of the signal; ``trap`` catches it and exits 0 (a well-behaved program). Signalled
    before the agent, a dying CU gives the stop STOP_WINDOW seconds to arrive; after, both go back.
    """
    coord = backend.coord
    pilot = _pilot(backend)
    submit(coord, "die", sh(f"echo $$ > {tmp_path}/die.pid; exec sleep 60"))
    submit(coord, "trap", sh(f"trap 'exit 0' TERM; echo $$ > {tmp_path}/trap.pid; sleep 60 & wait"))
    agent = _agent(backend, pilot, tmp_path, slots=2, kill_grace=1)
    try:
        wait_state(coord, "die", "Running")
        wait_state(coord, "trap", "Running")
        die_pid, trap_pid = _pids(tmp_path, ["die", "trap"])
        if order == "agent first":
            agent.process.send_signal(signal.SIGTERM)
            wait_until(lambda: "stopping: signal SIGTERM" in agent.log, 10, "the agent to start stopping")
            _signal_all([die_pid, trap_pid], signal.SIGTERM)
        else:
            _signal_all([die_pid], signal.SIGTERM)
            wait_until(lambda: not process_alive(die_pid), 10, "the CU to die")
            agent.process.send_signal(signal.SIGTERM)
            # a CU that traps the signal and exits 0 before the agent was signalled at all has finished
            # (Done, docs/failures.md): signal it once the agent stops (test_cus_that_trap_... below
            # signals the agent and the trapping CUs at once)
            wait_until(lambda: "stopping: signal SIGTERM" in agent.log, 10, "the agent to start stopping")
            _signal_all([trap_pid], signal.SIGTERM)
        assert agent.wait(30) == 0, agent.log
    finally:
        agent.stop()
    records = {r.id: r for r in coord.get_many(Kind.CU, ["die", "trap"]) if r is not None}
    assert {k: (r.state, r.attempt) for k, r in records.items()} == {"die": ("Pending", 1), "trap": ("Pending", 1)}
    assert "signal SIGTERM" in records["die"].detail["reason"]
    assert sorted(coord.queued()) == ["die", "trap"] and coord.claimed(pilot) == []
    assert not [e for e in all_events(coord) if e.entity == "cu" and e.to_state in ("Failed", "Done")]
    assert "letting go" not in agent.log


def test_cus_that_trap_sigterm_and_exit_0_signalled_with_the_agent_are_handed_back(
    backend: Backend, tmp_path: Path
) -> None:
    """The batch system signals the agent and, a moment later, its CUs, which trap SIGTERM and exit 0 at
    once. A worker can see such an exit before the agent's main thread has run its signal handler; the
    signal is already in the agent's wakeup pipe then, so the worker waits for the stop: none is Done.
    (Signalled the other way round, a CU may finish before the agent hears anything: that one is Done,
    and rightly; docs/failures.md.) Before the wakeup pipe, 5 of 6 runs recorded trapping CUs Done."""
    coord = backend.coord
    pilot = _pilot(backend)
    names = ["t1", "t2", "t3"]
    for name in names:
        submit(coord, name, sh(f"trap 'exit 0' TERM; echo $$ > {tmp_path}/{name}.pid; sleep 60 & wait"))
    agent = _agent(backend, pilot, tmp_path, slots=3, kill_grace=1)
    try:
        for name in names:
            wait_state(coord, name, "Running")
        pids = _pids(tmp_path, names)
        # the agent's SIGTERM is sent first but reaches no thread before the CUs have ended: the agent is
        # stopped meanwhile (as a loaded node leaves it without a core); when it runs again, its workers
        # see the exits and its signal arrives at the same moment
        agent.process.send_signal(signal.SIGSTOP)
        wait_until(lambda: _state(agent.process.pid) == "T", 10, "the agent to be stopped")
        agent.process.send_signal(signal.SIGTERM)
        _signal_all(pids, signal.SIGTERM)
        wait_until(lambda: all(_state(pid) in ("Z", "") for pid in pids), 10, "the CUs to end")
        agent.process.send_signal(signal.SIGCONT)
        assert agent.wait(30) == 0, agent.log
    finally:
        agent.stop()
    records = [r for r in coord.get_many(Kind.CU, names) if r is not None]
    assert sorted((r.id, r.state, r.attempt) for r in records) == [(n, "Pending", 1) for n in names]
    assert sorted(coord.queued()) == names and coord.claimed(pilot) == []
    assert not [e for e in all_events(coord) if e.entity == "cu" and e.to_state in ("Failed", "Done")]


def test_a_burst_of_stop_signals_stops_the_agent_once_and_cleanly(backend: Backend, tmp_path: Path) -> None:
    """A batch system's group kill and the launcher wrapper's forward reach the agent together, and an
    impatient user presses Ctrl-C twice. The stop used to be requested inside the signal handler: a
    second signal re-entered it while the first held the stop event's lock, and the agent hung until
    the launcher's SIGKILL (1 in about 10 cancels of a fork pilot), its work not handed back."""
    coord = backend.coord
    pilot = _pilot(backend)
    submit(coord, "long", sh("exec sleep 60"))
    agent = _agent(backend, pilot, tmp_path, slots=1, kill_grace=1)
    try:
        wait_state(coord, "long", "Running")
        for _ in range(100):
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                try:
                    os.kill(agent.process.pid, sig)
                except ProcessLookupError:  # it already stopped: the point of the test
                    break
        assert agent.wait(30) == 0, agent.log
    finally:
        agent.stop()
    record = coord.get(Kind.CU, "long")
    assert (record.state, record.attempt) == ("Pending", 1)
    assert coord.queued() == ["long"] and coord.claimed(pilot) == []
    assert agent.log.count(f"pilot {pilot} stopping: signal") == 1


def test_a_cu_that_exits_0_when_the_agent_stops_it_is_handed_back_not_stranded(
    backend: Backend, tmp_path: Path
) -> None:
    """The issue's case: a CU ending with 0 just as a signal stop runs used to be 'let go', Running forever."""
    coord = backend.coord
    pilot = _pilot(backend)
    submit(coord, "trap", sh("trap 'exit 0' TERM; sleep 60 & wait"))
    agent = _agent(backend, pilot, tmp_path, slots=1, kill_grace=2)
    try:
        wait_state(coord, "trap", "Running")
        assert agent.terminate(30) == 0, agent.log
    finally:
        agent.stop()
    record = coord.get(Kind.CU, "trap")
    assert (record.state, record.attempt) == ("Pending", 1)
    assert coord.queued() == ["trap"] and coord.claimed(pilot) == []


@pytest.mark.parametrize("slots", ["1", "2"])
def test_work_taken_back_from_a_live_agent_is_never_written_by_it(backend: Backend, tmp_path: Path,
                                                                   slots: str) -> None:
    """A detector requeued the pilot's work (it looked lost): the old run is killed, its moves refused,
    and the CU completes once, in its second run. The agent claims the requeued id again while the old
    run is still being killed (a free slot, or its prefetch): the old run's release must not drop that
    claim (which left the CU Pending in no queue)."""
    coord = backend.coord
    pilot = _pilot(backend)
    marker = tmp_path / "first-run"
    submit(coord, "x", sh(f"if [ -e {marker} ]; then echo second >> {tmp_path}/runs; exit 0; fi; "
                          f"echo $$ > {marker}; echo first >> {tmp_path}/runs; exec sleep 60"))
    agent = _agent(backend, pilot, tmp_path, slots=int(slots), kill_grace=1)
    try:
        wait_state(coord, "x", "Running")
        wait_until(marker.exists, 10, "the first run to start")
        first = int(marker.read_text())
        taken = coord.requeue_lost(pilot, 3, force=True)
        assert taken.requeued == ["x"]
        wait_until(lambda: not process_alive(first), 10, "the first run to be killed")
        assert wait_final(coord, "x", 30, agent) == "Done"
        assert agent.terminate(30) == 0, agent.log
    finally:
        agent.stop()
    assert (tmp_path / "runs").read_text().split() == ["first", "second"]
    events = [e for e in all_events(coord) if e.entity == "cu" and e.id == "x"]
    assert Counter(e.to_state for e in events)["Done"] == 1
    assert coord.get(Kind.CU, "x").attempt == 1
    # after the take-back no event of attempt 0 was written by the old run
    cut = next(i for i, e in enumerate(events) if e.detail.get("lost_pilot") == pilot)
    assert all(e.attempt == 1 for e in events[cut:])


def test_a_claim_the_agent_never_heard_of_is_handed_back_and_run(backend: Backend, tmp_path: Path) -> None:
    """An id in the pilot's in-progress list that no worker holds (a claim whose reply was lost) is
    returned to the queue within a few checks, then claimed and run, instead of waiting for the stop."""
    coord = backend.coord
    pilot = _pilot(backend)
    submit(coord, "busy", sh("sleep 6"))
    agent = _agent(backend, pilot, tmp_path, slots=1)
    try:
        wait_state(coord, "busy", "Running")  # its one slot is taken: the agent claims nothing now
        submit(coord, "lost-reply", {"executable": "/bin/true"}, pilot=pilot)
        assert coord.claim(pilot) == ["lost-reply"]  # claimed in its name; the agent never saw the reply
        wait_until(lambda: coord.queued() == ["lost-reply"], 10, "the unknown claim to be handed back")
        assert coord.get(Kind.CU, "busy").state == "Running"
        assert wait_final(coord, "lost-reply", 30, agent) == "Done"
        assert agent.terminate(30) == 0, agent.log
    finally:
        agent.stop()
    assert coord.claimed(pilot) == []
    assert "no worker holds" in agent.log
