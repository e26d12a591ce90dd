"""The agent's process helpers: the reused worker threads (agent/pool.py) and the orphan reaper's
buffered ``-PGID`` lines (agent/reaper.py), run for real (threads, ``python -m agent.reaper``, process groups).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.pool import ThreadPool
from agent.reaper import Reaper
from tests.agent.harness import process_alive
from tests.servers import wait_until

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------- pool
def _idle(pool: ThreadPool, count: int) -> None:
    """Wait until ``count`` threads are back in the pool.

    A thread counts as idle only after its job has returned, so the job's own "finished" signal comes
    a moment before the pool can reuse the thread; waiting for that keeps the size assertions exact.
    """
    wait_until(lambda: pool.idle == count, 10, f"{count} idle thread(s)")


def test_jobs_run_on_named_daemon_threads() -> None:
    pool = ThreadPool("job")
    ran = threading.Event()
    seen: list[threading.Thread] = []

    def job() -> None:
        seen.append(threading.current_thread())
        ran.set()

    pool.submit(job)
    assert ran.wait(10)
    [thread] = seen
    assert thread is not threading.main_thread()
    assert thread.daemon and thread.name == "job-1"
    assert pool.size == 1


def test_sequential_jobs_reuse_one_thread() -> None:
    pool = ThreadPool("seq")
    threads: set[int] = set()
    for n in range(20):
        finished = threading.Event()

        def job(finished: threading.Event = finished) -> None:
            threads.add(threading.get_ident())
            finished.set()

        pool.submit(job)
        assert finished.wait(10), f"job {n}"
        _idle(pool, 1)
    assert pool.size == 1
    assert len(threads) == 1


def test_concurrently_blocked_jobs_get_a_thread_each_and_the_pool_keeps_them() -> None:
    pool = ThreadPool("conc")
    gate = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    def job() -> None:
        with lock:
            started.append(threading.get_ident())
        gate.wait(10)

    try:
        for _ in range(5):
            pool.submit(job)
        wait_until(lambda: len(started) == 5, 10, "5 jobs running at once")
        assert pool.size == 5
        assert len(set(started)) == 5
        gate.set()
        _idle(pool, 5)
        # five more at once fit on the five idle threads; a sixth needs a new one
        gate.clear()
        started.clear()
        for _ in range(5):
            pool.submit(job)
        wait_until(lambda: len(started) == 5, 10, "the second 5 jobs")
        assert pool.size == 5
        pool.submit(job)
        wait_until(lambda: len(started) == 6, 10, "the sixth job")
        assert pool.size == 6
    finally:
        gate.set()


def test_a_job_that_raises_does_not_kill_its_thread() -> None:
    pool = ThreadPool("err")
    threads: list[int] = []

    def bad() -> None:
        threads.append(threading.get_ident())
        raise RuntimeError("job bug")

    pool.submit(bad)
    _idle(pool, 1)  # the thread survived and is back in the pool
    ran = threading.Event()

    def good() -> None:
        threads.append(threading.get_ident())
        ran.set()

    pool.submit(good)
    assert ran.wait(10)
    assert pool.size == 1
    assert len(threads) == 2 and threads[0] == threads[1]


# ----------------------------------------------------------------------------------- reaper
@pytest.fixture
def groups() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Three real process groups (``sleep 30`` in a new session each), killed at the end."""
    procs = [subprocess.Popen(["sleep", "30"], start_new_session=True) for _ in range(3)]
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def _dead(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def test_close_kills_the_watched_groups(groups: list[subprocess.Popen[bytes]]) -> None:
    a, b, c = groups
    reaper = Reaper()
    try:
        reaper.watch(a.pid)
        reaper.watch(b.pid)
    finally:
        reaper.close()
    wait_until(lambda: _dead(a) and _dead(b), 10, "the watched groups to be killed")
    assert a.returncode == -signal.SIGKILL
    assert not _dead(c)


def test_close_sends_the_buffered_unwatch_lines_before_eof(groups: list[subprocess.Popen[bytes]]) -> None:
    a, b, c = groups
    reaper = Reaper()
    try:
        reaper.watch(a.pid)
        reaper.watch(b.pid)
        reaper.unwatch(b.pid)  # buffered: nothing written yet
        reaper.watch(c.pid)
        reaper.unwatch(c.pid)  # buffered until close
    finally:
        reaper.close()  # returns once the reaper has killed what it would and exited
    wait_until(lambda: _dead(a), 10, "the still-watched group to be killed")
    assert process_alive(b.pid) and not _dead(b)
    assert process_alive(c.pid) and not _dead(c)


_AGENT = """
import signal, sys
from agent.reaper import Reaper
a, b, c = map(int, sys.argv[1:4])
reaper = Reaper()
reaper.watch(a)
reaper.watch(b)
reaper.unwatch(b)
reaper.watch(c)  # carries "-b"
reaper.unwatch(c)
if sys.argv[4] == "flush":
    reaper.flush()  # carries "-c"
print(reaper._proc.pid, flush=True)
signal.pause()  # a live agent, until the test kills it
"""


@pytest.mark.parametrize("flush", [True, False])
def test_an_agent_killed_with_sigkill_leaves_the_reaper_only_what_it_sent(
    groups: list[subprocess.Popen[bytes]], flush: bool
) -> None:
    """The ``-PGID`` lines go out with the next ``+PGID`` or ``flush()``; the reaper acts on what arrived."""
    a, b, c = groups
    agent = subprocess.Popen(
        [sys.executable, "-c", _AGENT, str(a.pid), str(b.pid), str(c.pid), "flush" if flush else "-"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert agent.stdout is not None
        reaper_pid = int(agent.stdout.readline())
        agent.kill()  # the reaper's stdin closes with the agent
        agent.wait(10)
        wait_until(lambda: not process_alive(reaper_pid), 10, "the reaper to exit")
        wait_until(lambda: _dead(a), 10, "the watched group to be killed")
        if not flush:  # c's "-" line was only buffered: the reaper still had c
            wait_until(lambda: _dead(c), 10, "the group whose unwatch was never sent to be killed")
        assert not _dead(b)  # its "-" line went out with c's "+"
        assert _dead(c) is not flush
    finally:
        if agent.poll() is None:
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait()
