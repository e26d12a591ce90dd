"""Reused worker threads: a CU runs on an idle thread of the pool, a new one only when none is idle.

Starting a thread per CU costs a ``clone``, a stack and a GIL hand-off while the new thread
announces itself; at hundreds of short CUs a second that was a visible share of the agent's time.
The pool keeps its threads (daemon threads: a CU stuck in a transfer never holds up the agent's
exit) and starts another only when every thread is busy, so it grows to the agent's peak of
concurrent CUs and stays there.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class ThreadPool:
    """Runs callables on reused daemon threads; never queues work behind a busy thread."""

    def __init__(self, name: str = "cu") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0

    @property
    def size(self) -> int:
        """Threads started so far."""
        with self._lock:
            return self._threads

    @property
    def idle(self) -> int:
        """Threads waiting for a job."""
        with self._lock:
            return self._idle

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job()`` on an idle thread, or on a new one if every thread is busy."""
        with self._lock:
            if self._idle:
                self._idle -= 1  # that thread is (about to be) waiting in get(): it takes this job
            else:
                self._threads += 1
                threading.Thread(target=self._serve, name=f"{self.name}-{self._threads}", daemon=True).start()
        self._jobs.put(job)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:  # a job handles its own errors; this only keeps the thread alive
                log.exception("worker job failed")
            with self._lock:
                self._idle += 1
