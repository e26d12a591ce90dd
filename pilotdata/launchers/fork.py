"""``fork://localhost``: run the command as a detached process on this host.

The process is the exit-code wrapper (:mod:`~pilotdata.launchers._wrap`) in a new session, stdin from
``/dev/null``, output appended to files in the working directory; ``env`` goes into its environment
(never onto its command line). Job ids and the probing/cancelling logic are shared with the ssh
launcher (:mod:`~pilotdata.launchers._detached`). When this launcher started the process it is our
child, so it is reaped here; any other process can still read its status from the control directory.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from pilotdata.errors import LaunchError
from pilotdata.launchers import _detached
from pilotdata.launchers.base import JobStatus, Launcher, LaunchSpec

log = logging.getLogger(__name__)

LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})


class ForkLauncher(Launcher):
    """Starts jobs as detached local processes.

    Options: ``python`` (interpreter that runs the wrapper; default this one), ``grace`` (seconds
    between SIGTERM and SIGKILL on cancel; default 5).
    """

    schemes: ClassVar[tuple[str, ...]] = ("fork", "subprocess")
    options: ClassVar[frozenset[str]] = frozenset({"python", "grace"})

    def __init__(self, url: str = "fork://localhost", *, python: str | None = None, grace: float = 5.0) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        if parts.scheme not in self.schemes or (parts.hostname or "") not in LOCAL_HOSTS or parts.path not in ("", "/"):
            raise LaunchError(f"{self.url}: fork runs on this host only: use fork://localhost (or ssh://host)")
        self._python = python
        self._grace = float(grace)
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def submit(self, spec: LaunchSpec) -> str:
        """Start ``spec.argv`` detached in ``spec.working_directory`` (created); return its job id."""
        workdir = str(Path(spec.working_directory).expanduser().resolve())
        stdout, stderr = spec.output_paths(workdir)
        walltime = spec.walltime_minutes * 60 if spec.walltime_minutes else None
        try:
            proc, job_id = _detached.spawn(
                spec.argv,
                env=spec.env,
                cwd=workdir,
                stdout=stdout,
                stderr=stderr,
                control_dir=spec.control_directory(workdir),
                walltime_seconds=walltime,
                grace=self._grace,
                python=self._python,
            )
        except OSError as exc:
            raise LaunchError(
                f"{self.url}: cannot start pilot {spec.pilot_id} in {workdir}: {exc.strerror or exc}"
            ) from exc
        self._children[job_id] = proc
        log.info("fork: started pilot %s as pid %d in %s", spec.pilot_id, proc.pid, workdir)
        return job_id

    def _reap(self) -> None:
        """Collect our children that have exited (so they do not linger as zombies)."""
        for job_id, proc in list(self._children.items()):
            if proc.poll() is not None:
                self._children.pop(job_id, None)

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Read each job's recorded exit code, or check that its process is alive."""
        self._reap()
        return {job_id: _detached.probe(job_id) for job_id in job_ids}

    def cancel(self, job_id: str) -> None:
        """SIGTERM the job's process group, SIGKILL it after the grace period; no-op if it ended."""
        try:
            stopped = _detached.terminate(job_id, self._grace, reap=self._reap)
        except ValueError as exc:
            raise LaunchError(f"{self.url}: {exc}") from exc
        except PermissionError as exc:
            raise LaunchError(f"{self.url}: not allowed to signal job {job_id}: {exc}") from exc
        if stopped:
            log.info("fork: canceled job %s", job_id)

    def close(self) -> None:
        """Reap finished children; running jobs keep running (they are detached)."""
        self._reap()
