"""IBM Spectrum LSF: ``bsub < SCRIPT``, ``bjobs -a -o``, ``bkill``.

Directives (``#BSUB``): ``-J`` (name), ``-cwd``, ``-o``, ``-e``, ``-n`` (processes), ``-R
"span[ptile=C]"`` (cores per node), ``-W H:MM`` (walltime), ``-q`` (queue), ``-P`` (project). LSF
reads ``#BSUB`` lines only from a script on ``bsub``'s standard input, hence ``bsub < SCRIPT``.

Status: ``bjobs -a -noheader -o "jobid stat exit_code delimiter='|'" IDS`` for the batch (LSF 9.1.1
or later); ``-a`` keeps finished jobs listed for ``CLEAN_PERIOD`` (one hour by default), after
which the exit code the job script wrote decides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

from pilotdata.errors import LaunchError
from pilotdata.launchers._runner import RunResult
from pilotdata.launchers.base import JobState, JobStatus
from pilotdata.launchers.batch.system import BatchJob, BatchSystem, directive_value

LSF_STATES: Mapping[str, JobState] = {
    "PEND": JobState.PENDING,
    "PROV": JobState.PENDING,  # waiting for a dynamically provisioned host
    "PSUSP": JobState.PENDING,  # suspended while pending
    "WAIT": JobState.PENDING,  # chunk job member waiting
    "RUN": JobState.RUNNING,
    "USUSP": JobState.RUNNING,  # suspended while running (by the user)
    "SSUSP": JobState.RUNNING,  # suspended while running (by LSF)
    "DONE": JobState.DONE,
    "EXIT": JobState.FAILED,
    "ZOMBI": JobState.FAILED,  # killed while its host was unreachable
    "UNKWN": JobState.UNKNOWN,  # the execution host's daemon stopped answering
}
"""LSF ``STAT`` -> :class:`JobState`."""

BJOBS_FORMAT = "jobid stat exit_code delimiter='|'"
"""The ``bjobs -o`` format the status call asks for."""


def parse_bsub_output(text: str) -> str:
    """The id in ``Job <1234> is submitted to queue <normal>.``; ``ValueError`` if none."""
    match = re.search(r"Job <(\d+)> is submitted", text)
    if not match:
        raise ValueError(f"bsub printed {text.strip()[:200]!r}, not a job id")
    return match.group(1)


def parse_bjobs(text: str) -> dict[str, JobStatus]:
    """``bjobs -noheader -o "jobid stat exit_code delimiter='|'"`` lines -> {job id: status}.

    ``Job <N> is not found`` lines (unknown ids) are skipped. ``exit_code`` is ``-`` until the job
    exits; above 128 it is 128 + the signal that killed the job (``bkill``, run limit).
    """
    out: dict[str, JobStatus] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        job_id, stat = parts[0], parts[1].upper()
        raw = parts[2] if len(parts) > 2 else "-"
        code = int(raw) if raw.isdigit() else None
        state = LSF_STATES.get(stat, JobState.UNKNOWN)
        if state is JobState.DONE:
            out[job_id] = JobStatus(JobState.DONE, 0, None)
        elif state is JobState.FAILED:
            if code is not None and code > 128:
                out[job_id] = JobStatus(JobState.FAILED, -(code - 128), f"LSF state {stat}, exit code {code}")
            else:
                why = f"LSF state {stat}" + (f", exit code {code}" if code else "")
                out[job_id] = JobStatus(JobState.FAILED, code, why)
        else:
            out[job_id] = JobStatus(state, None, f"LSF state {stat}" if stat not in ("PEND", "RUN") else None)
    return out


class Lsf(BatchSystem):
    """LSF through ``bsub``, ``bjobs``, ``bkill`` (no options of its own; ``env`` carries ``LSF_ENVDIR``)."""

    name: ClassVar[str] = "LSF"
    prefix: ClassVar[str] = "#BSUB"
    submit_command: ClassVar[str] = "bsub"
    status_command: ClassVar[str] = "bjobs"
    cancel_command: ClassVar[str] = "bkill"
    gone: ClassVar[tuple[str, ...]] = ("Job has already finished", "No matching job found", "is not found")

    def directives(self, job: BatchJob) -> list[str]:
        """``-J``, ``-cwd``, ``-o``, ``-e``, ``-n``, ``-R span[ptile]``, ``-W``, ``-q``, ``-P``."""
        spec = job.spec
        lines = [
            f"-J {job.name}",
            f"-cwd {directive_value('working_directory', job.working_directory)}",
            f"-o {directive_value('stdout', job.stdout)}",
            f"-e {directive_value('stderr', job.stderr)}",
            f"-n {job.processes}",
        ]
        if job.cores_per_node is not None:
            lines.append(f'-R "span[ptile={job.cores_per_node}]"')
        minutes = job.walltime_minutes
        if minutes is not None:
            lines.append(f"-W {minutes // 60}:{minutes % 60:02d}")
        if spec.queue:
            lines.append(f"-q {directive_value('queue', spec.queue)}")
        if job.project:
            lines.append(f"-P {directive_value('project', job.project)}")
        return lines

    def submit(self, job: BatchJob) -> str:
        """``bsub < SCRIPT`` (through ``sh``, so the script arrives on standard input)."""
        result = self.run("sh", "-c", 'exec bsub < "$1"', "sh", job.script, command="bsub")
        if result.returncode != 0:
            raise LaunchError(f"{self.url}: bsub rejected pilot {job.spec.pilot_id}: {result.error_text()}")
        try:
            return parse_bsub_output(result.stdout + result.stderr)
        except ValueError as exc:
            raise LaunchError(f"{self.url}: {exc}") from exc

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One ``bjobs -a`` for the batch; unknown ids (``Job <N> is not found``) are left out."""
        result = self.run("bjobs", "-a", "-noheader", "-o", BJOBS_FORMAT, *job_ids)
        listed = parse_bjobs(result.stdout)
        if result.returncode != 0 and not listed and not self.is_gone(result):
            raise self.fail("bjobs", result)
        return {job_id: listed[job_id] for job_id in job_ids if job_id in listed}

    def cancel(self, job_id: str) -> RunResult:
        """``bkill ID``."""
        return self.run("bkill", job_id)
