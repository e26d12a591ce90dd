"""SLURM: ``sbatch``, ``squeue``/``scontrol`` (and ``sacct``, the ``jobcomp/filetxt`` log), ``scancel``.

Directives (``#SBATCH``): ``--job-name``, ``--ntasks`` (processes), ``--nodes`` and
``--ntasks-per-node`` (when cores per node are given; ``--no-kill`` on more than one node, so a failed
node does not end the allocation: the node-aware agent requeues that node's CUs and runs on),
``--time`` (minutes, rounded up), ``--partition`` (queue), ``--account`` (project), ``--chdir``,
``--output``, ``--error``.

Status: ``squeue -h -j IDS -o "%i %T %r"`` for the batch; for a job it no longer lists as active,
``scontrol show job -o`` (``JobState``, ``ExitCode``); when the controller forgot the job too (after
``MinJobAge``), ``sacct`` if accounting works and the ``jobcomp/filetxt`` log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

from pilotdata.errors import LaunchError
from pilotdata.launchers._runner import CommandRunner, RunResult
from pilotdata.launchers.base import JobState, JobStatus
from pilotdata.launchers.batch.system import BatchJob, BatchSystem, directive_value

SLURM_STATES: Mapping[str, JobState] = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "COMPLETED": JobState.DONE,
    "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,
    "DEADLINE": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "CANCELLED": JobState.CANCELED,
    "REVOKED": JobState.CANCELED,
}
"""SLURM job state (as ``squeue %T`` / ``scontrol`` / ``sacct`` print it) -> :class:`JobState`."""


def map_state(slurm_state: str) -> JobState:
    """The :class:`JobState` of a SLURM state (``CANCELLED by 0`` -> canceled; unrecognised -> unknown)."""
    word = slurm_state.strip().split(" ")[0].rstrip("+").upper()
    return SLURM_STATES.get(word, JobState.UNKNOWN)


def parse_sbatch_output(text: str) -> str:
    """The job id from ``sbatch --parsable`` output (``"42"`` or ``"42;cluster"``); ``ValueError`` if none."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise ValueError("sbatch printed no job id")
    job_id = lines[-1].split(";")[0].strip()
    if not Slurm.job_id_pattern.match(job_id):
        raise ValueError(f"sbatch printed {lines[-1]!r}, not a job id")
    return job_id


def parse_squeue(text: str) -> dict[str, tuple[str, str]]:
    """``squeue -h -o "%i %T %r"`` lines -> {job id: (state, reason)}."""
    jobs: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2:
            jobs[parts[0]] = (parts[1], parts[2].strip() if len(parts) > 2 else "")
    return jobs


def _field(text: str, name: str) -> str | None:
    match = re.search(rf"(?:^|\s){name}=(\S*)", text)
    return match.group(1) if match else None


def status_from_record(slurm_state: str, exit_code: str | None, reason: str | None = None) -> JobStatus:
    """A :class:`JobStatus` from a SLURM state, ``ExitCode`` (``"3:0"``: code:signal) and reason."""
    state = map_state(slurm_state)
    code: int | None = None
    if exit_code and ":" in exit_code:
        status, _, sig = exit_code.partition(":")
        if status.isdigit() and sig.isdigit():
            code = -int(sig) if int(sig) else int(status)
    elif exit_code and exit_code.isdigit():
        code = int(exit_code)
    word = slurm_state.strip().split(" ")[0]
    why = f"SLURM state {word}"
    if reason and reason not in ("None", "(null)"):
        why += f" ({reason})"
    if state is JobState.DONE:
        return JobStatus(state, code if code is not None else 0, None)
    if state in (JobState.PENDING, JobState.RUNNING):
        return JobStatus(state, None, reason if reason and reason not in ("None", "(null)") else None)
    return JobStatus(state, code, why)


def parse_scontrol_job(text: str) -> JobStatus | None:
    """The status in one ``scontrol show job -o`` line (None when it has no ``JobState``)."""
    state = _field(text, "JobState")
    if not state:
        return None
    return status_from_record(state, _field(text, "ExitCode"), _field(text, "Reason"))


def parse_jobcomp(text: str, job_id: str) -> JobStatus | None:
    """The last record of ``job_id`` in a ``jobcomp/filetxt`` log, if any."""
    found: JobStatus | None = None
    for line in text.splitlines():
        if _field(line, "JobId") == job_id:
            state = _field(line, "JobState")
            if state:
                found = status_from_record(state, _field(line, "ExitCode"))
    return found


class Slurm(BatchSystem):
    """SLURM through its client commands.

    Options: ``slurm_conf`` (exported as ``SLURM_CONF`` to the client commands), ``sbatch_options``
    (extra ``#SBATCH`` options; the same as the common ``directives``), ``jobcomp`` (path of a
    ``jobcomp/filetxt`` log; found with ``scontrol show config`` when not given).
    """

    name: ClassVar[str] = "SLURM"
    prefix: ClassVar[str] = "#SBATCH"
    submit_command: ClassVar[str] = "sbatch"
    status_command: ClassVar[str] = "squeue"
    cancel_command: ClassVar[str] = "scancel"
    options: ClassVar[frozenset[str]] = frozenset({"slurm_conf", "sbatch_options", "jobcomp"})
    gone: ClassVar[tuple[str, ...]] = (
        "Invalid job id",
        "invalid job id",
        "already completing or completed",
        "Job has already finished",
    )

    def __init__(
        self,
        runner: CommandRunner,
        url: str,
        client_env: Mapping[str, str] | None = None,
        *,
        slurm_conf: str | None = None,
        sbatch_options: Sequence[str] = (),
        jobcomp: str | None = None,
    ) -> None:
        env = dict(client_env or {})
        if slurm_conf:
            env["SLURM_CONF"] = slurm_conf
        super().__init__(runner, url, env)
        if isinstance(sbatch_options, str):
            raise LaunchError(f"{url}: option sbatch_options must be a list of options, not one string")
        self.extra_directives = tuple(sbatch_options)
        self._jobcomp = jobcomp
        self._jobcomp_looked_up = jobcomp is not None
        self._sacct_works = True

    # ------------------------------------------------------------------------------ script
    def directives(self, job: BatchJob) -> list[str]:
        """``--job-name`` .. ``--error``, then ``sbatch_options``."""
        spec = job.spec
        lines = [f"--job-name={job.name}", f"--ntasks={job.processes}"]
        if job.nodes is not None:
            lines += [f"--nodes={job.nodes}", f"--ntasks-per-node={job.cores_per_node}"]
            if job.nodes > 1:  # a failed node must not revoke the allocation: the agent runs on without it
                lines.append("--no-kill")
        if job.walltime_minutes is not None:
            lines.append(f"--time={job.walltime_minutes}")
        if spec.queue:
            lines.append(f"--partition={directive_value('queue', spec.queue)}")
        if job.project:
            lines.append(f"--account={directive_value('project', job.project)}")
        lines += [
            f"--chdir={directive_value('working_directory', job.working_directory)}",
            f"--output={directive_value('stdout', job.stdout)}",
            f"--error={directive_value('stderr', job.stderr)}",
        ]
        for extra in self.extra_directives:
            if not isinstance(extra, str) or "\n" in extra or not extra.startswith("-"):
                raise LaunchError(f"sbatch_options: {extra!r} must be one option starting with '-'")
            lines.append(extra)
        return lines

    # --------------------------------------------------------------------------- lifecycle
    def submit(self, job: BatchJob) -> str:
        """``sbatch --parsable SCRIPT``; the id is read from ``id`` or ``id;cluster``."""
        result = self.run("sbatch", "--parsable", job.script)
        if result.returncode != 0:
            raise LaunchError(f"{self.url}: sbatch rejected pilot {job.spec.pilot_id}: {result.error_text()}")
        try:
            return parse_sbatch_output(result.stdout)
        except ValueError as exc:
            raise LaunchError(f"{self.url}: {exc}") from exc

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """``squeue`` for the batch: the jobs it lists as pending or running."""
        result = self.run("squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T %r")
        if result.returncode != 0:
            if self.is_gone(result):
                return {}
            raise self.fail("squeue", result)
        out: dict[str, JobStatus] = {}
        for job_id, (slurm_state, reason) in parse_squeue(result.stdout).items():
            if map_state(slurm_state) in (JobState.PENDING, JobState.RUNNING):
                out[job_id] = status_from_record(slurm_state, None, reason)
        return out

    def ended(self, job_id: str) -> JobStatus | None:
        """``scontrol show job``, then ``sacct``, then the ``jobcomp/filetxt`` log."""
        result = self.run("scontrol", "show", "job", "-o", job_id)
        if result.returncode == 0:
            found = parse_scontrol_job(result.stdout)
            if found:
                return found
        elif not self.is_gone(result):
            raise self.fail(f"scontrol show job {job_id}", result)
        return self._from_sacct(job_id) or self._from_jobcomp(job_id)

    def _from_sacct(self, job_id: str) -> JobStatus | None:
        if not self._sacct_works:
            return None
        result = self.runner.run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode"],
                                 env=self.client_env)
        if result.returncode != 0:
            self._sacct_works = False  # accounting_storage/none, or no sacct: stop asking
            return None
        for line in result.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[0] == job_id:
                return status_from_record(parts[1], parts[2])
        return None

    def _from_jobcomp(self, job_id: str) -> JobStatus | None:
        if not self._jobcomp_looked_up:
            self._jobcomp_looked_up = True
            result = self.run("scontrol", "show", "config")
            if result.returncode == 0:
                config = dict(
                    (k.strip(), v.strip()) for k, _, v in (line.partition("=") for line in result.stdout.splitlines())
                )
                if config.get("JobCompType") == "jobcomp/filetxt" and config.get("JobCompLoc"):
                    self._jobcomp = config["JobCompLoc"]
        if not self._jobcomp:
            return None
        result = self.runner.run(["grep", "-E", f"^JobId={job_id} ", self._jobcomp])
        return parse_jobcomp(result.stdout, job_id) if result.returncode == 0 else None

    def cancel(self, job_id: str) -> RunResult:
        """``scancel ID``."""
        return self.run("scancel", job_id)
