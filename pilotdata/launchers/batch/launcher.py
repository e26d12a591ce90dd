""":class:`BatchLauncher`: one launcher for every batch system, parameterized by a :class:`BatchSystem`.

It owns what the systems share: the command runner (this host, or a login host over SSH for the
``+ssh`` schemes), the control directory with the mode-600 ``env`` file and the job script, the
Python check, batch status with the accounting and exit-code fallbacks, cached final states, and
cancel. The scheme picks the system (:data:`SYSTEMS`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pilotdata.errors import LaunchError
from pilotdata.launchers._runner import CommandRunner, LocalRunner, check_python
from pilotdata.launchers._ssh import SSH_OPTIONS, SshRunner
from pilotdata.launchers._wrap import EXIT_FILE
from pilotdata.launchers.base import JobState, JobStatus, Launcher, LaunchSpec
from pilotdata.launchers.batch.lsf import Lsf
from pilotdata.launchers.batch.pbs import Pbs
from pilotdata.launchers.batch.sge import Sge
from pilotdata.launchers.batch.slurm import Slurm
from pilotdata.launchers.batch.system import BatchJob, BatchSystem, env_file_text

log = logging.getLogger(__name__)

SYSTEMS: Mapping[str, type[BatchSystem]] = {
    "slurm": Slurm,
    "pbs": Pbs,
    "torque": Pbs,
    "pbspro": Pbs,
    "sge": Sge,
    "lsf": Lsf,
}
"""URL scheme (without ``+ssh``) -> batch system."""

SCHEME_OPTIONS: Mapping[str, Mapping[str, Any]] = {
    "torque": {"pbs_flavor": "torque"},
    "pbspro": {"pbs_flavor": "pro"},
}
"""Options a scheme implies (BigJob and SAGA users wrote ``pbspro://`` and ``torque+ssh://``)."""

SCHEMES: tuple[str, ...] = tuple(s for base in SYSTEMS for s in (base, f"{base}+ssh"))
"""Every scheme :class:`BatchLauncher` serves."""

COMMON_OPTIONS: frozenset[str] = frozenset({"env", "python", "directives", "project", "allocation"})
"""Options every batch system takes (plus the SSH options for ``+ssh``)."""

_LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


class BatchLauncher(Launcher):
    """Submits the command as a batch job to the system its URL names.

    ``slurm://localhost`` (likewise ``pbs``, ``torque``, ``pbspro``, ``sge``, ``lsf``) runs the
    client commands on this host; ``slurm+ssh://[user@]host[:port]`` runs them on a login host over
    SSH (options ``known_hosts``, ``key_filename``, ``username``, ``port``, ``connect_timeout``).

    Options of every system: ``env`` (non-secret variables for the client commands, e.g. ``PATH``),
    ``python`` (checked once before the first submission to import ``pilotdata`` on the submit
    host), ``directives`` (extra scheduler options, one per item, written as directive lines),
    ``project`` (the account to charge when the description names none; ``allocation`` is
    BigJob's name for it). Each system adds its own: SLURM ``slurm_conf``, ``sbatch_options``,
    ``jobcomp``; PBS ``pbs_flavor``; SGE ``parallel_environment``, ``sge_root``, ``sge_cell``.
    """

    schemes: ClassVar[tuple[str, ...]] = SCHEMES
    options: ClassVar[frozenset[str]] = (
        SSH_OPTIONS | COMMON_OPTIONS | frozenset().union(*(system.options for system in SYSTEMS.values()))
    )

    def __init__(
        self,
        url: str,
        *,
        env: Mapping[str, str] | None = None,
        python: str | None = None,
        directives: Sequence[str] = (),
        project: str | None = None,
        allocation: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url)
        self.check_options(options)
        try:
            parts = urlsplit(url)
            scheme, host = parts.scheme.lower(), parts.hostname or ""
        except ValueError as exc:
            raise LaunchError(f"{self.url}: bad host or port in URL") from exc
        base = scheme.removesuffix("+ssh")
        system_cls = SYSTEMS.get(base)
        if system_cls is None:
            raise LaunchError(f"{self.url}: BatchLauncher serves {', '.join(SCHEMES)}")
        ssh = {k: v for k, v in options.items() if k in SSH_OPTIONS}
        own = {**SCHEME_OPTIONS.get(base, {}), **{k: v for k, v in options.items() if k not in SSH_OPTIONS}}
        for name in own:
            if name not in system_cls.options:
                takes = ", ".join(sorted(COMMON_OPTIONS | system_cls.options))
                raise LaunchError(f"{self.url}: option {name!r} is not for {base}://; {base} takes: {takes}")
        if scheme.endswith("+ssh"):
            self._runner: CommandRunner = SshRunner(url, **{k: v for k, v in ssh.items() if v is not None})
        else:
            if ssh:
                raise LaunchError(f"{self.url}: option {sorted(ssh)[0]!r} needs {base}+ssh://host")
            if host not in _LOCAL_HOSTS:
                raise LaunchError(
                    f"{self.url}: {base}:// uses this host's {system_cls.name} client; use {base}+ssh://{host}"
                )
            self._runner = LocalRunner("this host")
        if project and allocation and project != allocation:
            raise LaunchError(f"{self.url}: options project and allocation (BigJob's name for project) disagree")
        if isinstance(directives, str):
            raise LaunchError(f"{self.url}: option directives must be a list of options, not one string")
        self._project = project or allocation
        self._directives = tuple(directives)
        self._python = python
        self._python_checked = False
        self.system: BatchSystem = system_cls(self._runner, self.url, dict(env or {}), **own)
        self._final: dict[str, JobStatus] = {}
        self._control: dict[str, str] = {}
        self._canceled: set[str] = set()

    # ------------------------------------------------------------------------------- submit
    def job_for(self, spec: LaunchSpec) -> BatchJob:
        """The :class:`BatchJob` of ``spec``: its working directory made absolute on the submit host."""
        return BatchJob.at(
            spec,
            self._runner.absolute(spec.working_directory),
            project=spec.project or self._project,
            directives=self._directives,
        )

    def submit(self, spec: LaunchSpec) -> str:
        """Write the env file (mode 600) and the job script into the control directory, then submit."""
        runner = self._runner
        if self._python and not self._python_checked:
            check_python(runner, self._python, self.url)
            self._python_checked = True
        job = self.job_for(spec)
        script = self.system.render(job)  # bad values fail here, before anything is written
        runner.makedirs(job.control_dir)
        for path in (job.stdout, job.stderr):
            runner.makedirs(path.rsplit("/", 1)[0] or "/")
        if job.env_file:
            runner.write_file(job.env_file, env_file_text(spec.env), mode=0o600)
        runner.write_file(job.script, script, mode=0o700)
        job_id = self.system.submit(job)
        self._control[job_id] = job.control_dir
        log.info("%s: pilot %s is job %s on %s", self.system.name, spec.pilot_id, job_id, runner.where)
        return job_id

    # ------------------------------------------------------------------------------- status
    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One status command for the whole batch; the system's records and the exit-code file for ended jobs.

        A job the system lists as pending or running is reported so. For one it no longer lists, or
        lists as ended without an exit code: the system's records (:meth:`BatchSystem.ended`), then
        the exit code the job script wrote, and only then ``unknown`` (never ``running``). Final
        statuses are cached; a job this launcher canceled that ended failed, or left no record (removed
        while pending), reads ``canceled``.
        """
        out: dict[str, JobStatus] = {}
        ask: list[str] = []
        for job_id in job_ids:
            if job_id in self._final:
                out[job_id] = self._final[job_id]
            elif not self.system.valid_id(job_id):
                out[job_id] = JobStatus(JobState.UNKNOWN, None, f"not a {self.system.name} job id")
            else:
                ask.append(job_id)
        listed = self.system.poll(ask) if ask else {}
        for job_id in ask:
            found = listed.get(job_id)
            if found is None or (found.is_final and found.exit_code is None):
                found = self._ended(job_id, found)
            if job_id in self._canceled and found.state in (JobState.FAILED, JobState.UNKNOWN):
                # killed by our cancel, or removed before it ran (Grid Engine keeps no record of those)
                found = JobStatus(JobState.CANCELED, found.exit_code, f"canceled ({found.reason})")
            if found.is_final:
                self._final[job_id] = found
            out[job_id] = found
        return out

    def _ended(self, job_id: str, listed: JobStatus | None) -> JobStatus:
        recorded = self.system.ended(job_id)
        if recorded is not None and (recorded.exit_code is not None or not recorded.is_final):
            return recorded
        from_script = self._from_exit_file(job_id)
        if from_script is not None:
            return from_script
        return recorded or listed or JobStatus(
            JobState.UNKNOWN, None, f"{self.system.name} no longer knows job {job_id} and nothing recorded its end"
        )

    def _from_exit_file(self, job_id: str) -> JobStatus | None:
        control = self._control.get(job_id)
        text = self._runner.read_file(f"{control}/{EXIT_FILE}") if control else None
        if text is None or not text.strip().lstrip("-").isdigit():
            return None
        return JobStatus.from_exit_code(int(text), reason="recorded by the job script")

    # ------------------------------------------------------------------------------- cancel
    def cancel(self, job_id: str) -> None:
        """Cancel the job; one that already ended (or that the system forgot) is left alone."""
        if not self.system.valid_id(job_id):
            raise LaunchError(f"{self.url}: {job_id!r} is not a {self.system.name} job id")
        self._canceled.add(job_id)
        result = self.system.cancel(job_id)
        if result.returncode != 0 and not self.system.is_gone(result):
            now = self.status([job_id])[job_id]
            if not (now.is_final or now.state is JobState.UNKNOWN):
                self._canceled.discard(job_id)
                raise self.system.fail(f"{self.system.cancel_command} {job_id}", result)
        log.info("%s: canceled job %s", self.system.name, job_id)

    def close(self) -> None:
        """Close the SSH connection of the ``+ssh`` launchers (jobs keep running)."""
        self._runner.close()

    def __repr__(self) -> str:
        return f"BatchLauncher({self.url!r}, system={self.system.name})"
