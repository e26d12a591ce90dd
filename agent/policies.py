"""Failure policies, named after DIANE's (see ``docs/failures.md``).

* **failed task max reassign** (:meth:`Policies.may_retry`): a CU whose run failed in a retryable way
  (non-zero exit, timeout) goes back to Pending with attempt+1 while ``attempt < max_retries`` (the
  CU's own ``max_retries``, else the pilot's ``--max-retries``, default 0).
* **lost task max reassign** (:meth:`Policies.may_reassign`): a CU taken back from a pilot that died
  (expired heartbeat, detected by any agent through ``requeue_lost``) or stopped (walltime) goes
  back while ``attempt < max_reassign`` (``--max-reassign``), else it is Failed.
* **remove a failing worker** (:class:`FailureStreak`): after ``--max-consecutive-failures`` CU
  failures in a row (0: off) the agent stops taking work and ends Failed.

The CU's ``attempt`` counter counts every rerun, whatever the cause; each policy compares it to its
own limit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from agent.task import Task


@dataclass(frozen=True)
class Policies:
    """The policy limits of one agent (from its command line)."""

    max_retries: int = 0
    max_reassign: int = 3
    max_consecutive_failures: int = 0

    def retries_for(self, task: Task) -> int:
        """The failed-task budget of ``task``: its own ``max_retries`` or the pilot default."""
        mr = task.description.max_retries
        return self.max_retries if mr is None else mr

    def may_retry(self, task: Task) -> bool:
        """Failed task max reassign: whether a failed run of ``task`` is rerun."""
        return task.attempt < self.retries_for(task)

    def may_reassign(self, attempt: int) -> bool:
        """Lost task max reassign: whether a CU at ``attempt`` is requeued after its pilot stopped."""
        return attempt < self.max_reassign


class FailureStreak:
    """Counts CU failures in a row (remove a failing worker); a success resets it. Thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """Failures since the last success."""
        with self._lock:
            return self._count

    def failure(self) -> bool:
        """Record a failure; True when the limit is on and reached (the worker should be removed)."""
        with self._lock:
            self._count += 1
            return self.limit > 0 and self._count >= self.limit

    def success(self) -> None:
        """Record a success (resets the streak)."""
        with self._lock:
            self._count = 0

    @property
    def tripped(self) -> bool:
        """Whether the limit is on and reached."""
        with self._lock:
            return self.limit > 0 and self._count >= self.limit
