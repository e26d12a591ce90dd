"""The orphan reaper: kills a dead agent's CU process groups.

Each CU runs in its own session (so a cancel or timeout can kill its whole tree), which also means a
``kill -9`` of the agent would leave the CUs running, unowned, while their work is requeued
elsewhere: the same CU would run to completion twice. The agent therefore starts this small sidecar
(``python -m agent.reaper``) with a pipe on its stdin and tells it ``+PGID`` when a CU starts and
``-PGID`` when it has ended. When the pipe closes (the agent exited, however it died) the reaper
SIGKILLs every group still registered, then exits. It ignores SIGINT/SIGTERM/SIGHUP so that a signal
meant for the agent's terminal or job does not take it away first.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)


def serve(lines: Iterable[str] | None = None) -> set[int]:
    """Read ``+PGID`` / ``-PGID`` lines (default: stdin) until EOF, SIGKILL the groups left; return them."""
    stream: Iterable[str] = sys.stdin if lines is None else lines
    groups: set[int] = set()
    for line in stream:
        line = line.strip()
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
    return groups


class Reaper:
    """The agent's handle on the reaper sidecar. Best effort: if it cannot start, the agent runs on.

    ``Reaper(start=False)`` is an inert stand-in (every call is a no-op).
    """

    def __init__(self, *, start: bool = True) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
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
        with self._lock:
            if self._proc is None or self._proc.stdin is None:
                return
            try:
                self._proc.stdin.write(line + "\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                log.warning("orphan reaper is gone; CUs may outlive a killed agent")
                self._proc = None

    def watch(self, pgid: int) -> None:
        """Register a CU's process group."""
        self._send(f"+{pgid}")

    def unwatch(self, pgid: int) -> None:
        """Forget a process group whose CU has ended."""
        self._send(f"-{pgid}")

    def close(self) -> None:
        """Close the pipe (the reaper kills what is still registered and exits) and reap it."""
        with self._lock:
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
