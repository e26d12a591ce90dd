"""``slurm://localhost`` and ``slurm+ssh://[user@]host[:port]``: the command runs as a SLURM batch job.

Both schemes share all logic; only the :class:`~pilotdata.launchers._runner.CommandRunner` differs
(local subprocess, or the paramiko connection of the ssh launcher). The batch script (see
:func:`batch_script`) maps the spec to ``#SBATCH`` lines, reads the environment from a mode-600 file
in the control directory (secrets never appear in the script or on a command line) and records the
command's exit code there.

Status: ``squeue`` for the batch, then ``scontrol show job -o`` for jobs squeue no longer lists
(``JobState``, ``ExitCode``). When the controller forgot the job too, the fallbacks are ``sacct``
(if accounting works), the ``jobcomp/filetxt`` log, the exit-code file, and only then ``unknown``:
a job that ended or was cancelled by the batch system is never reported as running forever.
Final statuses are cached.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pilotdata.errors import LaunchError
from pilotdata.launchers._runner import CommandRunner, LocalRunner, RunResult, check_python
from pilotdata.launchers._ssh import SSH_OPTIONS, SshRunner
from pilotdata.launchers._wrap import EXIT_FILE
from pilotdata.launchers.base import JobState, JobStatus, Launcher, LaunchSpec

log = logging.getLogger(__name__)

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

_JOB_ID = re.compile(r"^\d+$")
_GONE = ("Invalid job id", "invalid job id")


def map_state(slurm_state: str) -> JobState:
    """The :class:`JobState` of a SLURM state (``CANCELLED by 0`` -> canceled; unrecognised -> unknown)."""
    word = slurm_state.strip().split(" ")[0].rstrip("+").upper()
    return SLURM_STATES.get(word, JobState.UNKNOWN)


def _time_limit(minutes: float) -> str:
    """SLURM ``--time`` value: whole minutes, rounded up."""
    return str(max(1, math.ceil(minutes)))


def _directive_value(name: str, value: str) -> str:
    """``value`` for an ``#SBATCH`` line: double-quoted when it has spaces (sbatch strips the quotes)."""
    if '"' in value or "\n" in value or "\r" in value:
        raise LaunchError(f"{name}: {value!r} contains a quote or line break, which #SBATCH lines cannot carry")
    return f'"{value}"' if any(c.isspace() for c in value) else value


def batch_script(
    spec: LaunchSpec,
    *,
    working_directory: str,
    control_dir: str,
    env_file: str | None,
    extra_directives: Iterable[str] = (),
) -> str:
    """The ``sbatch`` script for ``spec`` (pure: no I/O).

    ``#SBATCH`` lines: ``--job-name=pilot-<id>``, ``--ntasks`` (number_of_processes),
    ``--ntasks-per-node`` (processes_per_node), ``--time`` (walltime, minutes rounded up),
    ``--partition`` (queue), ``--account`` (project), ``--chdir`` (working directory),
    ``--output`` / ``--error``, then ``extra_directives`` verbatim. The body sources ``env_file``,
    runs ``spec.argv`` (quoted, no secrets) and writes its exit code to ``control_dir/exit_code``.
    """
    stdout, stderr = spec.output_paths(working_directory)
    directives = [
        f"--job-name=pilot-{spec.pilot_id}",
        f"--ntasks={spec.number_of_processes}",
    ]
    if spec.processes_per_node is not None:
        directives.append(f"--ntasks-per-node={spec.processes_per_node}")
    if spec.walltime_minutes is not None:
        directives.append(f"--time={_time_limit(spec.walltime_minutes)}")
    if spec.queue:
        directives.append(f"--partition={_directive_value('queue', spec.queue)}")
    if spec.project:
        directives.append(f"--account={_directive_value('project', spec.project)}")
    directives += [
        f"--chdir={_directive_value('working_directory', working_directory)}",
        f"--output={_directive_value('stdout', stdout)}",
        f"--error={_directive_value('stderr', stderr)}",
    ]
    for extra in extra_directives:
        if "\n" in extra or not extra.startswith("-"):
            raise LaunchError(f"sbatch_options: {extra!r} must be one option starting with '-'")
        directives.append(extra)
    exit_file = shlex.quote(f"{control_dir}/{EXIT_FILE}")
    exit_tmp = shlex.quote(f"{control_dir}/{EXIT_FILE}.tmp")
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), ""]
    lines.append(f"# pilot {spec.pilot_id}, written by pilot-data")
    if env_file:
        lines.append(f". {shlex.quote(env_file)}")
    lines += [
        shlex.join(spec.argv),
        "rc=$?",
        f"printf '%s\\n' \"$rc\" > {exit_tmp} && mv -f {exit_tmp} {exit_file}",
        'exit "$rc"',
        "",
    ]
    return "\n".join(lines)


def env_file_text(env: Mapping[str, str]) -> str:
    """``export NAME=value`` lines (values shell-quoted) for the batch script to source."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def parse_sbatch_output(text: str) -> str:
    """The job id from ``sbatch --parsable`` output (``"42"`` or ``"42;cluster"``); ``ValueError`` if none."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise ValueError("sbatch printed no job id")
    job_id = lines[-1].split(";")[0].strip()
    if not _JOB_ID.match(job_id):
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


class SlurmLauncher(Launcher):
    """Submits jobs with ``sbatch``, polls ``squeue``/``scontrol``, cancels with ``scancel``.

    Options: ``slurm_conf`` (exported as ``SLURM_CONF`` to the client commands), ``env`` (more
    non-secret variables for them), ``sbatch_options`` (extra ``#SBATCH`` options, e.g.
    ``["--mem=2G"]``), ``jobcomp`` (path of a ``jobcomp/filetxt`` log; found with
    ``scontrol show config`` when not given), ``python`` (when given, checked once before the first
    submission to import ``pilotdata`` on the submit host, so a missing package fails early rather
    than in the batch job); for ``slurm+ssh`` also ``known_hosts``,
    ``key_filename``, ``username``, ``port``, ``connect_timeout``.
    """

    schemes: ClassVar[tuple[str, ...]] = ("slurm", "slurm+ssh")
    options: ClassVar[frozenset[str]] = SSH_OPTIONS | {"slurm_conf", "env", "sbatch_options", "jobcomp", "python"}

    def __init__(
        self,
        url: str,
        *,
        slurm_conf: str | None = None,
        env: Mapping[str, str] | None = None,
        sbatch_options: Sequence[str] = (),
        jobcomp: str | None = None,
        python: str | None = None,
        **ssh: Any,
    ) -> None:
        super().__init__(url)
        self.check_options(ssh)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "slurm":
            if ssh:
                raise LaunchError(f"{self.url}: option {sorted(ssh)[0]!r} needs slurm+ssh://host")
            if (parts.hostname or "localhost") not in ("localhost", "127.0.0.1", "::1"):
                raise LaunchError(f"{self.url}: slurm:// uses this host's SLURM client; use slurm+ssh://host")
            self._runner: CommandRunner = LocalRunner("this host")
        elif scheme == "slurm+ssh":
            self._runner = SshRunner(url, **{k: v for k, v in ssh.items() if v is not None})
        else:
            raise LaunchError(f"{self.url}: SlurmLauncher serves slurm:// and slurm+ssh://")
        self._client_env = dict(env or {})
        if slurm_conf:
            self._client_env["SLURM_CONF"] = slurm_conf
        self._sbatch_options = list(sbatch_options)
        self._jobcomp = jobcomp
        self._python = python
        self._python_checked = False
        self._jobcomp_looked_up = jobcomp is not None
        self._sacct_works = True
        self._final: dict[str, JobStatus] = {}
        self._control: dict[str, str] = {}

    def _run(self, *argv: str) -> RunResult:
        result = self._runner.run(argv, env=self._client_env)
        if result.returncode == 127:
            raise LaunchError(
                f"{self.url}: {argv[0]} not found on {self._runner.where} (is the SLURM client installed?)"
            )
        return result

    # ------------------------------------------------------------------------------- submit
    def submit(self, spec: LaunchSpec) -> str:
        """Write the env file (mode 600) and batch script into the control directory, then ``sbatch``."""
        runner = self._runner
        if self._python and not self._python_checked:
            check_python(runner, self._python, self.url)
            self._python_checked = True
        workdir = runner.absolute(spec.working_directory)
        control = spec.control_directory(workdir)
        script = batch_script(
            spec,
            working_directory=workdir,
            control_dir=control,
            env_file=f"{control}/env" if spec.env else None,
            extra_directives=self._sbatch_options,
        )
        runner.makedirs(control)
        for path in spec.output_paths(workdir):
            runner.makedirs(path.rsplit("/", 1)[0] or "/")
        if spec.env:
            runner.write_file(f"{control}/env", env_file_text(spec.env), mode=0o600)
        runner.write_file(f"{control}/job.sh", script, mode=0o700)
        result = self._run("sbatch", "--parsable", f"{control}/job.sh")
        if result.returncode != 0:
            raise LaunchError(f"{self.url}: sbatch rejected pilot {spec.pilot_id}: {result.error_text()}")
        try:
            job_id = parse_sbatch_output(result.stdout)
        except ValueError as exc:
            raise LaunchError(f"{self.url}: {exc}") from exc
        self._control[job_id] = control
        log.info("slurm: pilot %s is job %s on %s", spec.pilot_id, job_id, self._runner.where)
        return job_id

    # ------------------------------------------------------------------------------- status
    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """squeue for the batch; scontrol, then the fallbacks, for those it no longer lists."""
        out: dict[str, JobStatus] = {}
        ask: list[str] = []
        for job_id in job_ids:
            if job_id in self._final:
                out[job_id] = self._final[job_id]
            elif not _JOB_ID.match(job_id):
                out[job_id] = JobStatus(JobState.UNKNOWN, None, "not a SLURM job id")
            else:
                ask.append(job_id)
        if ask:
            listed = self._squeue(ask)
            for job_id in ask:
                if job_id in listed and map_state(listed[job_id][0]) in (JobState.PENDING, JobState.RUNNING):
                    slurm_state, reason = listed[job_id]
                    out[job_id] = status_from_record(slurm_state, None, reason)
                else:
                    out[job_id] = self._ended(job_id)
                    if out[job_id].is_final:
                        self._final[job_id] = out[job_id]
        return out

    def _squeue(self, job_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        result = self._run("squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T %r")
        if result.returncode != 0:
            if any(g in result.stderr for g in _GONE):
                return {}
            raise LaunchError(f"{self.url}: squeue failed: {result.error_text()}")
        return parse_squeue(result.stdout)

    def _ended(self, job_id: str) -> JobStatus:
        """The status of a job squeue no longer lists as active."""
        result = self._run("scontrol", "show", "job", "-o", job_id)
        if result.returncode == 0:
            found = parse_scontrol_job(result.stdout)
            if found:
                return found
        elif not any(g in result.stderr for g in _GONE):
            raise LaunchError(f"{self.url}: scontrol show job {job_id} failed: {result.error_text()}")
        for source in (self._from_sacct, self._from_jobcomp, self._from_exit_file):
            found = source(job_id)
            if found:
                return found
        return JobStatus(JobState.UNKNOWN, None, f"SLURM no longer knows job {job_id} and nothing recorded its end")

    def _from_sacct(self, job_id: str) -> JobStatus | None:
        if not self._sacct_works:
            return None
        result = self._runner.run(
            ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode"], env=self._client_env
        )
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
            result = self._run("scontrol", "show", "config")
            if result.returncode == 0:
                config = dict(
                    (k.strip(), v.strip()) for k, _, v in (line.partition("=") for line in result.stdout.splitlines())
                )
                if config.get("JobCompType") == "jobcomp/filetxt" and config.get("JobCompLoc"):
                    self._jobcomp = config["JobCompLoc"]
        if not self._jobcomp:
            return None
        result = self._runner.run(["grep", "-E", f"^JobId={job_id} ", self._jobcomp])
        return parse_jobcomp(result.stdout, job_id) if result.returncode == 0 else None

    def _from_exit_file(self, job_id: str) -> JobStatus | None:
        control = self._control.get(job_id)
        text = self._runner.read_file(f"{control}/{EXIT_FILE}") if control else None
        if text is None or not text.strip().lstrip("-").isdigit():
            return None
        return JobStatus.from_exit_code(int(text), reason="recorded by the batch script")

    # ------------------------------------------------------------------------------- cancel
    def cancel(self, job_id: str) -> None:
        """``scancel``; a job that already ended is left alone."""
        if not _JOB_ID.match(job_id):
            raise LaunchError(f"{self.url}: {job_id!r} is not a SLURM job id")
        result = self._run("scancel", job_id)
        if result.returncode != 0 and not any(
            text in result.stderr for text in (*_GONE, "already completing or completed", "Job has already finished")
        ):
            raise LaunchError(f"{self.url}: scancel {job_id} failed: {result.error_text()}")
        log.info("slurm: canceled job %s", job_id)

    def close(self) -> None:
        """Close the SSH connection of slurm+ssh."""
        self._runner.close()
