"""PBS (Torque, PBS Pro / OpenPBS): ``qsub``, ``qstat -f``, ``qdel``.

Directives (``#PBS``): ``-N`` (name), ``-l nodes=N:ppn=C`` (Torque) or ``-l select=N:ncpus=C:mpiprocs=C``
(PBS Pro; option ``pbs_flavor="pro"`` or the ``pbspro://`` scheme), ``-l walltime=HH:MM:SS``, ``-q``
(queue), ``-A`` (project / account), ``-o`` / ``-e``. Without cores per node the pilot asks for one
node with all its processes (``nodes=1:ppn=N``). ``-o`` and ``-e`` are also given to ``qsub`` itself:
the ``qsub`` wrapper of SLURM's ``slurm-wlm-torque`` overrides the script's ``-o`` with its own
default otherwise.

Status: ``qstat -f IDS`` (PBS Pro: ``qstat -x -f IDS``, which also lists finished jobs) for the
batch. Torque keeps completed jobs as state ``C`` with ``exit_status`` for ``keep_completed``
seconds; PBS Pro's finished jobs are ``F`` with ``Exit_status``. An exit status above 256 is
256 + the signal that killed the job (``qdel``, walltime).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

from pilotdata.errors import LaunchError
from pilotdata.launchers._runner import CommandRunner, RunResult
from pilotdata.launchers.base import JobState, JobStatus
from pilotdata.launchers.batch.system import BatchJob, BatchSystem, directive_value, signal_exit

PBS_STATES: Mapping[str, JobState] = {
    "Q": JobState.PENDING,  # queued
    "H": JobState.PENDING,  # held
    "W": JobState.PENDING,  # waiting for its start time
    "T": JobState.PENDING,  # being moved
    "M": JobState.PENDING,  # moved to another server (PBS Pro)
    "R": JobState.RUNNING,
    "E": JobState.RUNNING,  # exiting after having run
    "S": JobState.RUNNING,  # suspended
    "U": JobState.RUNNING,  # suspended: workstation busy (PBS Pro)
    "B": JobState.RUNNING,  # array job: at least one subjob started
    "C": JobState.DONE,  # completed (Torque); exit_status decides done / failed
    "F": JobState.DONE,  # finished (PBS Pro); Exit_status decides
    "X": JobState.DONE,  # subjob finished (PBS Pro)
}
"""PBS ``job_state`` letter -> :class:`JobState` (ended states refined by the exit status)."""

FLAVORS = ("torque", "pro")


def parse_qstat_full(text: str) -> dict[str, dict[str, str]]:
    """``qstat -f`` output -> {job id: {attribute: value}}. Continuation lines are joined."""
    jobs: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    last_key: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("Job Id:"):
            current = jobs.setdefault(line.partition(":")[2].strip(), {})
            last_key = None
        elif current is not None and " = " in line:
            key, _, value = line.strip().partition(" = ")
            current[key.strip()] = value.strip()
            last_key = key.strip()
        elif current is not None and last_key and line.startswith(("\t", " ")) and line.strip():
            current[last_key] += line.strip()  # a long value wrapped onto the next line
    return jobs


def status_from_attributes(attrs: Mapping[str, str]) -> JobStatus | None:
    """The status of one ``qstat -f`` job: its ``job_state`` and ``exit_status`` (None without a state)."""
    letter = attrs.get("job_state", "").strip()[:1].upper()
    if not letter:
        return None
    state = PBS_STATES.get(letter, JobState.UNKNOWN)
    comment = attrs.get("comment") or None
    if state is not JobState.DONE:
        return JobStatus(state, None, comment if state is not JobState.UNKNOWN else f"PBS state {letter}")
    raw = attrs.get("exit_status", attrs.get("Exit_status", "")).strip()
    if not re.fullmatch(r"-?\d+", raw):
        # The launcher looks further (the exit code the job script wrote) before settling on this.
        return JobStatus(JobState.FAILED, None, f"PBS state {letter} without an exit status, none recorded either")
    code = int(raw)
    if code > 256:  # 256 + signal (Torque and PBS Pro)
        return signal_exit(-(code - 256), comment or f"PBS exit status {code}")
    if code < 0:  # Torque's JOB_EXEC_* codes: the job did not run to its end
        return JobStatus(JobState.FAILED, code, comment or f"PBS exit status {code} (the job did not run to its end)")
    return signal_exit(code, comment or f"exit code {code}")


def parse_qsub_output(text: str) -> str:
    """The job id ``qsub`` prints (``123.server`` or ``123``); ``ValueError`` if none."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines or not Pbs.job_id_pattern.match(lines[-1].split()[-1]):
        raise ValueError(f"qsub printed {text.strip()[:200]!r}, not a job id")
    return lines[-1].split()[-1]


class Pbs(BatchSystem):
    """PBS / Torque through ``qsub``, ``qstat``, ``qdel``.

    Option ``pbs_flavor``: ``"torque"`` (default; ``-l nodes=N:ppn=C``, ``qstat -f``) or ``"pro"``
    (PBS Pro / OpenPBS; ``-l select=N:ncpus=C:mpiprocs=C``, ``qstat -x -f``).
    """

    name: ClassVar[str] = "PBS"
    prefix: ClassVar[str] = "#PBS"
    submit_command: ClassVar[str] = "qsub"
    status_command: ClassVar[str] = "qstat"
    cancel_command: ClassVar[str] = "qdel"
    options: ClassVar[frozenset[str]] = frozenset({"pbs_flavor"})
    job_id_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^\d+(\[\d*\])?(\.[A-Za-z0-9_.-]+)?$")
    gone: ClassVar[tuple[str, ...]] = ("Unknown Job Id", "Job has finished", "Request invalid for state of job")

    def __init__(
        self,
        runner: CommandRunner,
        url: str,
        client_env: Mapping[str, str] | None = None,
        *,
        pbs_flavor: str = "torque",
    ) -> None:
        super().__init__(runner, url, client_env)
        if pbs_flavor not in FLAVORS:
            raise LaunchError(f"{url}: option pbs_flavor must be one of {', '.join(FLAVORS)}, got {pbs_flavor!r}")
        self.flavor = pbs_flavor

    def directives(self, job: BatchJob) -> list[str]:
        """``-N``, the node request, ``-l walltime``, ``-q``, ``-A``, ``-o``, ``-e``."""
        spec = job.spec
        nodes, ppn = (job.nodes, job.cores_per_node) if job.nodes is not None else (1, job.processes)
        if self.flavor == "pro":
            lines = [f"-N {job.name}", f"-l select={nodes}:ncpus={ppn}:mpiprocs={ppn}"]
        else:
            lines = [f"-N {job.name}", f"-l nodes={nodes}:ppn={ppn}"]
        if job.walltime_hms is not None:
            lines.append(f"-l walltime={job.walltime_hms}")
        if spec.queue:
            lines.append(f"-q {directive_value('queue', spec.queue)}")
        if job.project:
            lines.append(f"-A {directive_value('project', job.project)}")
        lines += [f"-o {directive_value('stdout', job.stdout)}", f"-e {directive_value('stderr', job.stderr)}"]
        return lines

    def submit(self, job: BatchJob) -> str:
        """``qsub -o OUT -e ERR SCRIPT``; the id is the last word ``qsub`` prints."""
        result = self.run("qsub", "-o", job.stdout, "-e", job.stderr, job.script)
        if result.returncode != 0:
            raise LaunchError(f"{self.url}: qsub rejected pilot {job.spec.pilot_id}: {result.error_text()}")
        try:
            return parse_qsub_output(result.stdout)
        except ValueError as exc:
            raise LaunchError(f"{self.url}: {exc}") from exc

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """``qstat -f IDS`` (``-x`` for PBS Pro): the jobs it lists; unknown ids are left out."""
        argv = ["qstat", "-x", "-f", *job_ids] if self.flavor == "pro" else ["qstat", "-f", *job_ids]
        result = self.run(*argv)
        listed = parse_qstat_full(result.stdout)
        if result.returncode != 0 and not listed and not self.is_gone(result) and result.returncode != 153:
            raise self.fail("qstat", result)  # 153: Torque's "unknown job id" (the wrapper says nothing)
        out: dict[str, JobStatus] = {}
        short = {job_id.split(".")[0]: job_id for job_id in job_ids}
        for listed_id, attrs in listed.items():
            job_id = listed_id if listed_id in job_ids else short.get(listed_id.split(".")[0])
            status = status_from_attributes(attrs)
            if job_id is not None and status is not None:
                out[job_id] = status
        return out

    def cancel(self, job_id: str) -> RunResult:
        """``qdel ID``."""
        return self.run("qdel", job_id)
