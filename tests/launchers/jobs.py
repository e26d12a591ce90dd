"""Waiting for a batch job to end, as the launcher tests of every batch system do."""

from __future__ import annotations

from pilotdata.launchers import JobState, JobStatus, Launcher
from tests.servers import wait_until


def wait_final(launcher: Launcher, job: str, timeout: float, system: str,
               seen: list[JobState] | None = None) -> JobStatus:
    """``job``'s final status, polled through ``launcher`` for up to ``timeout`` s; every state seen on
    the way is appended to ``seen``. ``system`` names the batch system in the timeout message."""
    def check() -> JobStatus | None:
        status = launcher.status([job])[job]
        if seen is not None:
            seen.append(status.state)
        return status if status.is_final else None

    result: JobStatus = wait_until(check, timeout, f"{system} job {job} to end")
    return result
