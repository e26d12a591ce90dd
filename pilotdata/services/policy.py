"""Failure policies, named after DIANE's master/worker policies.

============================  ==========================================  =========
field                         DIANE name                                  default
============================  ==========================================  =========
``lost_task_max_reassign``    LOST_TASK_MAX_ASSIGN                        3
``failed_task_max_reassign``  FAILED_TASK_MAX_ASSIGN                      0
``remove_failed_worker``      REMOVE_FAILED_WORKER (after N failures)     0 (off)
``heartbeat_ttl``             worker heartbeat period (x3)                15 s
============================  ==========================================  =========

See ``docs/failures.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pilotdata.errors import DescriptionError


@dataclass(frozen=True)
class FailurePolicy:
    """How many times lost and failed ComputeUnits are retried, and when a pilot is removed."""

    lost_task_max_reassign: int = 3
    """A CU whose pilot died (heartbeat expired) goes back to the queue at most this many times."""
    failed_task_max_reassign: int = 0
    """A CU that exited non-zero is retried this many times (a CU's own ``max_retries`` wins)."""
    remove_failed_worker: int = 0
    """A pilot stops taking work and ends Failed after this many consecutive CU failures (0: never)."""
    heartbeat_ttl: float = 15.0
    """Seconds after the last heartbeat at which a pilot counts as lost."""

    def __post_init__(self) -> None:
        for name in ("lost_task_max_reassign", "failed_task_max_reassign", "remove_failed_worker"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DescriptionError(f"{name}: expected an integer >= 0, got {value!r}", field=name, value=value)
        ttl = self.heartbeat_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise DescriptionError(f"heartbeat_ttl: expected seconds > 0, got {ttl!r}", field="heartbeat_ttl",
                                   value=ttl)

    def agent_arguments(self) -> list[str]:
        """The ``python -m agent`` options that carry this policy."""
        return [
            "--max-reassign", str(self.lost_task_max_reassign),
            "--max-retries", str(self.failed_task_max_reassign),
            "--max-consecutive-failures", str(self.remove_failed_worker),
            "--heartbeat-ttl", str(self.heartbeat_ttl),
        ]
