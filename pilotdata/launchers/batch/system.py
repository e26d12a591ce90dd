"""The batch-system interface (:class:`BatchSystem`) and what every system shares.

A system renders the job script's directive lines, submits the script, reads the status of many
jobs with one command, looks up how a job it no longer lists ended, and cancels. Everything
else (the control directory, the mode-600 ``env`` file, the Python check, cached final states)
lives once in :class:`~pilotdata.launchers.batch.launcher.BatchLauncher`.

The job script (:meth:`BatchSystem.render`) changes to the working directory, sources the ``env``
file (secrets live only there), runs the argv (shell-quoted, no secrets) and records the exit code
in the control directory, so the launcher can tell how a job ended where the batch system keeps
no record of it.
"""

from __future__ import annotations

import math
import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pilotdata.errors import LaunchError
from pilotdata.launchers._runner import CommandRunner, RunResult
from pilotdata.launchers._wrap import EXIT_FILE
from pilotdata.launchers.base import JobState, JobStatus, LaunchSpec


@dataclass(frozen=True)
class BatchJob:
    """One launch as a batch system sees it: the spec plus its resolved paths on the submit host.

    ``project`` is the spec's project, else the launcher's ``project`` option. ``directives`` are
    extra scheduler options (the launcher's ``directives`` option), written after the generated
    ones.
    """

    spec: LaunchSpec
    working_directory: str
    control_dir: str
    stdout: str
    stderr: str
    env_file: str | None = None
    project: str | None = None
    directives: tuple[str, ...] = ()

    @classmethod
    def at(cls, spec: LaunchSpec, working_directory: str, control_dir: str | None = None, **kw: Any) -> BatchJob:
        """The job for ``spec`` in the absolute ``working_directory`` (control directory made fresh)."""
        control = control_dir or spec.control_directory(working_directory)
        stdout, stderr = spec.output_paths(working_directory)
        kw.setdefault("env_file", f"{control}/env" if spec.env else None)
        kw.setdefault("project", spec.project)
        return cls(spec, working_directory, control, stdout, stderr, **kw)

    @property
    def name(self) -> str:
        """The batch job's name (:func:`job_name`)."""
        return job_name(self.spec.pilot_id)

    @property
    def script(self) -> str:
        """Path of the job script in the control directory."""
        return f"{self.control_dir}/job.sh"

    @property
    def exit_file(self) -> str:
        """Where the script records the command's exit code."""
        return f"{self.control_dir}/{EXIT_FILE}"

    @property
    def processes(self) -> int:
        """Processes (slots, cores) the pilot asks for in all."""
        return self.spec.number_of_processes

    @property
    def cores_per_node(self) -> int | None:
        """Processes per node, when the spec fixes it."""
        return self.spec.processes_per_node

    @property
    def nodes(self) -> int | None:
        """Whole nodes: processes / cores per node rounded up; None when cores per node are not given."""
        ppn = self.spec.processes_per_node
        return math.ceil(self.spec.number_of_processes / ppn) if ppn else None

    @property
    def walltime_minutes(self) -> int | None:
        """The walltime in whole minutes, rounded up."""
        wt = self.spec.walltime_minutes
        return max(1, math.ceil(wt)) if wt is not None else None

    @property
    def walltime_hms(self) -> str | None:
        """The walltime as ``HH:MM:SS`` (whole minutes, rounded up; hours may exceed 24)."""
        minutes = self.walltime_minutes
        return None if minutes is None else f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def job_name(pilot_id: str) -> str:
    """The batch job's name: the pilot id, prefixed with ``pilot-`` unless it already starts so.

    Pilot ids made by the services already read ``pilot-<hex>``; prefixing them again gave
    ``pilot-pilot-<hex>`` in ``squeue``. The name starts with a letter, as PBS and SGE require.
    """
    return pilot_id if pilot_id.startswith("pilot-") else f"pilot-{pilot_id}"


def directive_value(name: str, value: str) -> str:
    """``value`` for a directive line: double-quoted when it has spaces; quotes and line breaks refused."""
    if '"' in value or "\n" in value or "\r" in value:
        raise LaunchError(f"{name}: {value!r} contains a quote or line break, which job script directives cannot carry")
    return f'"{value}"' if any(c.isspace() for c in value) else value


def env_file_text(env: Mapping[str, str]) -> str:
    """``export NAME=value`` lines (values shell-quoted) for the job script to source."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def signal_exit(code: int, reason: str) -> JobStatus:
    """Done for exit code 0, failed otherwise (negative: killed by that signal), with ``reason`` when failed."""
    if code == 0:
        return JobStatus(JobState.DONE, 0, None)
    return JobStatus.from_exit_code(code, reason=reason)


class BatchSystem(ABC):
    """One batch system: its directives, and its submit, status and cancel commands.

    Subclasses set :attr:`name` (for messages), :attr:`prefix` (``#SBATCH``), the command names,
    :attr:`options` (their own launcher options), :attr:`job_id_pattern` and :attr:`gone`, and
    implement :meth:`directives`, :meth:`submit`, :meth:`poll` and :meth:`cancel`. Commands run
    through :meth:`run`: on this host without a shell, or on a login host over SSH.
    """

    name: ClassVar[str] = "batch"
    prefix: ClassVar[str] = "#"
    submit_command: ClassVar[str] = ""
    status_command: ClassVar[str] = ""
    cancel_command: ClassVar[str] = ""
    options: ClassVar[frozenset[str]] = frozenset()
    job_id_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^\d+$")
    gone: ClassVar[tuple[str, ...]] = ()
    """Texts in a failed command's output that mean "no such job (any more)"."""

    def __init__(self, runner: CommandRunner, url: str, client_env: Mapping[str, str] | None = None) -> None:
        self.runner = runner
        self.url = url
        self.client_env = dict(client_env or {})

    # ---------------------------------------------------------------------------- commands
    def run(self, *argv: str, command: str | None = None) -> RunResult:
        """Run a client command; :class:`LaunchError` when it (``command``, default ``argv[0]``) is not there."""
        result = self.runner.run(argv, env=self.client_env)
        if result.returncode == 127:
            raise LaunchError(
                f"{self.url}: {command or argv[0]} not found on {self.runner.where} (is the {self.name} client "
                "installed and on PATH? the launcher option env={'PATH': ...} sets the PATH)"
            )
        return result

    def is_gone(self, result: RunResult) -> bool:
        """Whether a failed command said the job does not exist (any more)."""
        text = result.stderr + result.stdout
        return any(g in text for g in self.gone)

    def valid_id(self, job_id: str) -> bool:
        """Whether ``job_id`` looks like one of this system's job ids."""
        return bool(self.job_id_pattern.match(job_id))

    def fail(self, doing: str, result: RunResult) -> LaunchError:
        """A :class:`LaunchError` for a failed command, with the end of its error output."""
        return LaunchError(f"{self.url}: {doing} failed: {result.error_text()}")

    # ------------------------------------------------------------------------------ script
    @abstractmethod
    def directives(self, job: BatchJob) -> list[str]:
        """The options of the script's directive lines (without :attr:`prefix`), in order."""

    def render(self, job: BatchJob) -> str:
        """The job script (pure, no I/O): directives, then cd, env file, argv and the exit-code record."""
        lines = ["#!/bin/bash", *(f"{self.prefix} {d}" for d in self.directives(job))]
        for extra in job.directives:
            if not isinstance(extra, str) or "\n" in extra or "\r" in extra or not extra.startswith("-"):
                raise LaunchError(f"directives: {extra!r} must be one option starting with '-'")
            lines.append(f"{self.prefix} {extra}")
        exit_tmp = shlex.quote(f"{job.exit_file}.tmp")
        lines += [
            "",
            f"# pilot {job.spec.pilot_id}, written by pilot-data",
            f"cd {shlex.quote(job.working_directory)} || exit 1",
        ]
        if job.env_file:
            lines.append(f". {shlex.quote(job.env_file)}")
        lines += [
            shlex.join(job.spec.argv),
            "rc=$?",
            f"printf '%s\\n' \"$rc\" > {exit_tmp} && mv -f {exit_tmp} {shlex.quote(job.exit_file)}",
            'exit "$rc"',
            "",
        ]
        return "\n".join(lines)

    # --------------------------------------------------------------------------- lifecycle
    @abstractmethod
    def submit(self, job: BatchJob) -> str:
        """Submit the script already written at ``job.script``; return the job id."""

    @abstractmethod
    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One status command for all ``job_ids``: the statuses of the jobs it lists (others left out).

        A final status without an exit code makes the launcher look further (:meth:`ended`, then the
        exit-code file) before it settles on it.
        """

    def ended(self, job_id: str) -> JobStatus | None:
        """How a job the queue no longer lists ended, from the system's records (accounting)."""
        return None

    @abstractmethod
    def cancel(self, job_id: str) -> RunResult:
        """Run the cancel command for ``job_id``; the launcher judges a failure (the job may have ended)."""
