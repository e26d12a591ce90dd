"""A killed agent's unfinished fetches (``tmp/<key>.<token>`` with ``.part-`` files) do not stay in the
pilot cache: the next agent using the cache removes them when it starts, the reaper when the agent
dies; a fetch still running in another process (its key locked) is left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.reaper import serve
from pilotdata.states import Kind
from tests.agent.conftest import Backend
from tests.agent.harness import AgentProcess
from tests.servers import wait_until
from transfer.cache import clean_stale

KEY_DEAD, KEY_LIVE = "du-dead-0123abcd", "du-live-4567ef01"


def _leftovers(cache: Path) -> tuple[Path, Path, Path]:
    """A killed fetch, a running one and an interrupted eviction, as they look on disk."""
    dead = cache / "tmp" / f"{KEY_DEAD}.aaaaaaaaaaaaaaaa" / "data"
    live = cache / "tmp" / f"{KEY_LIVE}.bbbbbbbbbbbbbbbb" / "data"
    trash = cache / "trash" / f"{KEY_DEAD}.cccccccccccccccc"
    for d in (dead, live, trash, cache / "locks", cache / "entries"):
        d.mkdir(parents=True, exist_ok=True)
    (dead / ".big.bin.part-0123456789abcdef").write_bytes(b"x" * 4096)
    (live / ".other.bin.part-fedcba9876543210").write_bytes(b"y" * 10)
    (trash / "old.bin").write_bytes(b"z")
    return dead.parent, live.parent, trash


def _hold_lock(cache: Path, key: str) -> subprocess.Popen[bytes]:
    """Another process fetching ``key``: it holds the key's flock until killed."""
    script = (
        "import fcntl, os, signal, sys\n"
        f"fd = os.open({str(cache / 'locks' / (key + '.lock'))!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsignal.pause()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
    return proc


def test_clean_stale_removes_dead_fetches_but_not_a_running_one(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    dead, live, trash = _leftovers(cache)
    holder = _hold_lock(cache, KEY_LIVE)
    try:
        assert clean_stale(cache) == 2
        assert not dead.exists() and not trash.exists()
        assert live.exists()
    finally:
        holder.kill()
        holder.wait(10)
    assert clean_stale(cache) == 1 and not live.exists()


def test_the_reaper_cleans_the_cache_it_was_told_about_when_its_agent_is_gone(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    dead, _live, trash = _leftovers(cache)
    serve([f"={cache}\n"])  # the pipe closed: the agent died
    assert not dead.exists() and not trash.exists()
    assert not list((cache / "tmp").glob("**/*.part-*"))


def test_an_agent_starting_on_the_cache_removes_the_leftovers(backend: Backend, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    dead, live, trash = _leftovers(workdir / ".cache")
    backend.coord.create(Kind.PILOT, "p", {})
    agent = AgentProcess(backend.url, backend.namespace, "p", workdir, "--slots", "1", "--heartbeat-ttl", "3")
    try:
        wait_until(lambda: backend.coord.get(Kind.PILOT, "p").state == "Running", 20, "the agent to register")
        assert not dead.exists() and not trash.exists() and not live.exists()
        assert agent.terminate(30) == 0
    finally:
        agent.stop()
