"""The orphan reaper: kills a dead agent's CU process groups.

Each CU runs in its own session (so a cancel or timeout can kill its whole tree), which also means a
``kill -9`` of the agent would leave the CUs running, unowned, while their work is requeued
elsewhere: the same CU would run to completion twice. The agent therefore starts this small sidecar
(``python -m agent.reaper``) with a pipe on its stdin and tells it ``+PGID`` when a CU starts and
``-PGID`` when it has ended. When the pipe closes (the agent exited, however it died) the reaper
SIGKILLs every group still registered, deletes what unfinished fetches left in the pilot cache it was
told about (``=PATH``: :func:`transfer.cache.clean_stale`), then exits. The ``-PGID`` lines wait in the agent and go out
with the next ``+PGID`` (one write per CU instead of two) or with :meth:`Reaper.flush`, which the
agent calls about once a second: a group is forgotten at most a second late, far too soon for its
number to be given to another process group. The reaper reads the pipe every
:data:`DRAIN_EVERY` seconds and at the agent's end, without being woken by each line
(:func:`pipe_lines`). It ignores SIGINT/SIGTERM/SIGHUP so that a signal
meant for the agent's terminal or job does not take it away first.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator

log = logging.getLogger(__name__)


DRAIN_EVERY = 0.2
"""Seconds between the reaper's reads of the pipe while the agent lives (see :func:`pipe_lines`)."""


def pipe_lines(fd: int, every: float = DRAIN_EVERY) -> Iterator[str]:
    """The lines written to the pipe ``fd`` until its writer closes it, read every ``every`` seconds.

    The reaper does not wait in a read, which the agent's write would wake once per CU (a context
    switch, and a core taken from the CUs, for a line that matters only when the agent dies): it waits in
    ``poll`` for the hang-up alone (a pipe reports it without being asked for input), and reads what
    gathered in the pipe every ``every`` seconds, so the pipe never fills (64 KiB hold about 9,000 lines,
    some seconds of the fastest CUs). The lines stay in the kernel until read: none is lost when the agent
    dies between two reads; everything is read before the groups are killed.
    """
    poller = select.poll()
    poller.register(fd, 0)  # POLLHUP / POLLERR only: data arriving does not wake this process
    os.set_blocking(fd, False)
    pending = b""
    while True:
        hung_up = bool(poller.poll(every * 1000))
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:  # EOF: the writer is gone and the pipe is empty
                hung_up = True
                break
            pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace")
        if hung_up:
            if pending:
                yield pending.decode("utf-8", "replace")
            return


def serve(lines: Iterable[str] | None = None) -> set[int]:
    """Read ``+PGID`` / ``-PGID`` / ``=CACHE`` lines (default: stdin, :func:`pipe_lines`) until EOF, SIGKILL
    the groups left, clean the caches; return the groups."""
    stream: Iterable[str] = pipe_lines(sys.stdin.fileno()) if lines is None else lines
    groups: set[int] = set()
    caches: list[str] = []
    for line in stream:
        line = line.strip()
        if line.startswith("=") and len(line) > 1:
            caches.append(line[1:])
            continue
        if len(line) < 2 or line[0] not in "+-" or not line[1:].isdigit():
            continue
        pgid = int(line[1:])
        if line[0] == "+":
            groups.add(pgid)
        else:
            groups.discard(pgid)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if caches:
        from transfer.cache import clean_stale  # only now: the reaper stays small while it waits

        for root in caches:
            if os.path.isdir(root):
                try:
                    clean_stale(root)
                except OSError as exc:
                    log.warning("could not clean the pilot cache %s: %s", root, exc)
    return groups


class Reaper:
    """The agent's handle on the reaper sidecar. Best effort: if it cannot start, the agent runs on.

    ``Reaper(start=False)`` is an inert stand-in (every call is a no-op).
    """

    def __init__(self, *, start: bool = True) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._ended: list[str] = []
        if not start:
            return
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "agent.reaper"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                text=True,
                close_fds=True,
            )
        except OSError as exc:
            log.warning("orphan reaper not started (%s); CUs may outlive a killed agent", exc)

    def _send(self, line: str) -> None:
        """Write the pending ``-PGID`` lines and ``line`` (if any) in one write; call with the lock held."""
        if self._proc is None or self._proc.stdin is None:
            self._ended.clear()
            return
        text = "".join(self._ended) + line
        self._ended.clear()
        if not text:
            return
        try:
            self._proc.stdin.write(text)
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            log.warning("orphan reaper is gone; CUs may outlive a killed agent")
            self._proc = None

    def watch(self, pgid: int) -> None:
        """Register a CU's process group (before the CU can outlive a dying agent: written at once)."""
        with self._lock:
            self._send(f"+{pgid}\n")

    def watch_cache(self, root: str | os.PathLike[str]) -> None:
        """Have the reaper clean this pilot cache's leftovers (:func:`transfer.cache.clean_stale`) at the end."""
        text = os.fspath(root)
        if "\n" in text:
            return
        with self._lock:
            self._send(f"={text}\n")

    def unwatch(self, pgid: int) -> None:
        """Forget a process group whose CU has ended (sent with the next write)."""
        with self._lock:
            self._ended.append(f"-{pgid}\n")

    def flush(self) -> None:
        """Send the pending ``-PGID`` lines now."""
        with self._lock:
            self._send("")

    def close(self) -> None:
        """Close the pipe (the reaper kills what is still registered and exits) and reap it."""
        with self._lock:
            self._send("")  # ended groups first: the reaper must not kill numbers no longer ours
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    """Entry point of ``python -m agent.reaper``."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
