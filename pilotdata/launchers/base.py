"""The launcher interface: what to start (:class:`LaunchSpec`), how it is doing (:class:`JobStatus`),
and the three calls every launcher implements (:class:`Launcher`: ``submit``, ``status``, ``cancel``).

A launcher starts an *agent command line* on a resource and reports on it; it never imports the
agent. Secrets (a Redis URL with a password) travel in :attr:`LaunchSpec.env`, which launchers pass
through the process environment or a mode-600 file, never on a command line (``ps``, ``squeue``) and
never in a log or an error message.
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Any, ClassVar

from pilotdata.errors import DescriptionError, LaunchError, did_you_mean
from pilotdata.exits import signal_name
from pilotdata.redaction import redact_url

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

CONTROL_DIR = ".pdata-launch"
"""Directory (inside the working directory) holding one control directory per launch."""


class JobState(str, Enum):
    """Where a launched job is, as far as its resource knows."""

    PENDING = "pending"
    """Submitted, not started yet (queued in a batch system)."""
    RUNNING = "running"
    """The command runs (for a batch job: the allocation runs, or is completing)."""
    DONE = "done"
    """Ended with exit code 0 (final)."""
    FAILED = "failed"
    """Ended with a non-zero exit code or a signal, or the batch system failed it (final)."""
    CANCELED = "canceled"
    """Canceled, by :meth:`Launcher.cancel` or by the batch system / an administrator (final)."""
    UNKNOWN = "unknown"
    """The resource no longer knows the job and nothing recorded how it ended (or the id is not ours)."""

    def __str__(self) -> str:
        return self.value


FINAL_JOB_STATES: frozenset[JobState] = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELED})
"""States a job never leaves."""


@dataclass(frozen=True)
class JobStatus:
    """A job's state, its exit code when known (negative: killed by that signal) and why."""

    state: JobState
    exit_code: int | None = None
    reason: str | None = None

    @property
    def is_final(self) -> bool:
        """True for done, failed and canceled."""
        return self.state in FINAL_JOB_STATES

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``state`` as its string value)."""
        return {"state": self.state.value, "exit_code": self.exit_code, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobStatus:
        """The inverse of :meth:`to_dict`; an unrecognised state reads as unknown."""
        try:
            state = JobState(data.get("state"))
        except ValueError:
            state = JobState.UNKNOWN
        code = data.get("exit_code")
        reason = data.get("reason")
        return cls(state, code if isinstance(code, int) else None, reason if isinstance(reason, str) else None)

    @classmethod
    def from_exit_code(cls, exit_code: int, *, canceled: bool = False, reason: str | None = None) -> JobStatus:
        """Done for 0, failed otherwise (canceled when ``canceled``), with a reason naming a signal."""
        if reason is None and exit_code < 0:
            reason = f"killed by signal {signal_name(-exit_code)}"
        if canceled:
            return cls(JobState.CANCELED, exit_code, reason or "canceled")
        if exit_code == 0:
            return cls(JobState.DONE, 0, reason)
        return cls(JobState.FAILED, exit_code, reason or f"exit code {exit_code}")


@dataclass(frozen=True)
class LaunchSpec:
    """What to start, where, and with which resources.

    ``argv`` runs without a shell. ``env`` holds the variables the command needs (``PDATA_URL``,
    ``PDATA_NAMESPACE``...): launchers put them in the process environment (fork), or in a mode-600
    file in the control directory that the remote side reads (ssh, slurm), never on a command line.
    Relative ``stdout`` / ``stderr`` are relative to ``working_directory``; by default they are
    ``<pilot_id>.stdout`` / ``<pilot_id>.stderr`` there. ``walltime_minutes`` bounds the run (fork and
    ssh enforce it themselves; SLURM gets ``--time``, rounded up to whole minutes).
    """

    pilot_id: str
    argv: Sequence[str]
    working_directory: str
    env: Mapping[str, str] = field(default_factory=dict)
    number_of_processes: int = 1
    processes_per_node: int | None = None
    walltime_minutes: float | None = None
    queue: str | None = None
    project: str | None = None
    stdout: str | None = None
    stderr: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pilot_id, str) or not _SAFE_ID.match(self.pilot_id):
            raise DescriptionError(
                f"pilot_id: {self.pilot_id!r} must be 1-128 characters of letters, digits, '.', '_', '-'",
                field="pilot_id",
                value=self.pilot_id,
            )
        argv = self.argv
        if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
            raise DescriptionError("argv: must be a non-empty list of strings", field="argv", value=argv)
        if any("\0" in a for a in argv):
            raise DescriptionError("argv: contains a NUL character", field="argv")
        object.__setattr__(self, "argv", list(argv))
        if not isinstance(self.working_directory, str) or not self.working_directory.strip():
            raise DescriptionError("working_directory: must be a non-empty path", field="working_directory")
        env = dict(self.env)
        for key, value in env.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                raise DescriptionError(f"env: {key!r} is not a valid variable name", field="env")
            if not isinstance(value, str) or "\0" in value:  # never echo the value: it may be a secret
                raise DescriptionError(f"env: the value of {key} must be a string without NUL", field="env")
        object.__setattr__(self, "env", env)
        for name in ("number_of_processes", "processes_per_node"):
            value = getattr(self, name)
            if value is None and name == "processes_per_node":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DescriptionError(f"{name}: must be an integer >= 1, got {value!r}", field=name, value=value)
        if self.processes_per_node is not None and self.processes_per_node > self.number_of_processes:
            raise DescriptionError(
                f"processes_per_node: {self.processes_per_node} exceeds number_of_processes "
                f"({self.number_of_processes})",
                field="processes_per_node",
                value=self.processes_per_node,
            )
        wt = self.walltime_minutes
        if wt is not None and (isinstance(wt, bool) or not isinstance(wt, (int, float)) or not wt > 0):
            raise DescriptionError(f"walltime_minutes: must be > 0, got {wt!r}", field="walltime_minutes", value=wt)
        for name in ("queue", "project", "stdout", "stderr"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip() or "\n" in value):
                raise DescriptionError(f"{name}: must be a non-empty single-line string", field=name, value=value)

    @classmethod
    def from_description(
        cls,
        pilot_id: str,
        argv: Sequence[str],
        description: Mapping[str, Any] | Any,
        env: Mapping[str, str] | None = None,
        default_working_directory: str = ".",
    ) -> LaunchSpec:
        """Build a spec from a BigJob pilot description (a dict or an object with the same attributes).

        Keys used: ``number_of_processes``, ``processes_per_node``, ``walltime`` (minutes), ``queue``,
        ``project``, ``working_directory`` (default ``default_working_directory``), ``output``, ``error``.
        """

        def get(key: str) -> Any:
            if isinstance(description, Mapping):
                return description.get(key)
            return getattr(description, key, None)

        return cls(
            pilot_id=pilot_id,
            argv=list(argv),
            working_directory=get("working_directory") or default_working_directory,
            env=dict(env or {}),
            number_of_processes=get("number_of_processes") or 1,
            processes_per_node=get("processes_per_node"),
            walltime_minutes=get("walltime"),
            queue=get("queue"),
            project=get("project"),
            stdout=get("output"),
            stderr=get("error"),
        )

    def output_paths(self, working_directory: str) -> tuple[str, str]:
        """Absolute stdout and stderr paths, given the resolved absolute ``working_directory``."""

        def resolve(path: str | None, default: str) -> str:
            path = path or default
            return path if path.startswith("/") else f"{working_directory.rstrip('/')}/{path}"

        return (
            resolve(self.stdout, f"{self.pilot_id}.stdout"),
            resolve(self.stderr, f"{self.pilot_id}.stderr"),
        )

    def control_directory(self, working_directory: str) -> str:
        """A fresh control directory for one launch of this spec (exit code, markers, env file)."""
        return f"{working_directory.rstrip('/')}/{CONTROL_DIR}/{self.pilot_id}-{uuid.uuid4().hex[:8]}"


class Launcher(ABC):
    """Starts, queries and cancels jobs on one resource (one ``service_url``).

    Subclasses name the URL schemes they serve in :attr:`schemes` and the keyword options they accept
    in :attr:`options`; :func:`pilotdata.launchers.launcher_for` checks options against it. Job ids are
    opaque strings that the same kind of launcher, for the same URL, understands in another process.
    """

    schemes: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, url: str) -> None:
        self._url = url

    @property
    def url(self) -> str:
        """The service URL, with any password redacted."""
        return redact_url(self._url)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise :class:`LaunchError` naming the first option this launcher does not know."""
        for name in options:
            if name not in cls.options:
                known = ", ".join(sorted(cls.options)) or "none"
                raise LaunchError(
                    f"unknown option {name!r} for {cls.__name__}{did_you_mean(name, cls.options)}; "
                    f"known options: {known}"
                )

    @abstractmethod
    def submit(self, spec: LaunchSpec) -> str:
        """Start ``spec`` on the resource; return its job id. Raise :class:`LaunchError` on failure."""

    @abstractmethod
    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The status of each job id (batch). Ids this launcher cannot read get ``unknown``.

        Raises :class:`LaunchError` only when the resource cannot be queried at all.
        """

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Stop the job (no-op when it already ended). Raise :class:`LaunchError` on failure."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (SSH). The launcher may not be used afterwards."""

    def __enter__(self) -> Launcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
