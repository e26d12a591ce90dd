"""``ssh://[user@]host[:port]``: run the command detached on a remote host, over paramiko.

Before the first launch the remote ``python`` (option, default ``python3``) must import
``pilotdata``; otherwise :class:`~pilotdata.errors.LaunchError` names the interpreter tried (as
given, and the executable and version it resolved to on the host), says whether it is missing, too
old or lacks the package, and how to name another one (``launcher_options={"python": ...}``,
``create_pilot(..., python=...)``, ``pdata pilot start ... --launcher-option python=...``). Commands
over SSH run in a non-login shell, so a ``python3`` that a login shell finds through ``~/.profile``,
``module load`` or an activated environment is often not the one found here.

The launch itself is the fork launcher's logic run remotely
(``python -m pilotdata.launchers._detached spawn SPEC``): the spec, environment included, travels as a
mode-600 JSON file written over SFTP into the control directory, read and deleted by the remote
spawner, so no secret appears on a command line. Status and cancel run the same module's CLI, one
SSH command for a whole batch of job ids.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from pilotdata.errors import LaunchError
from pilotdata.launchers._detached import DEFAULT_GRACE
from pilotdata.launchers._runner import RunResult, python_failure
from pilotdata.launchers._ssh import SSH_OPTIONS, SshRunner
from pilotdata.launchers.base import JobState, JobStatus, Launcher, LaunchSpec

log = logging.getLogger(__name__)

_DETACHED = "pilotdata.launchers._detached"
_MIN_PYTHON = (3, 10)
# Prints the interpreter's path and version before importing the package, so even a failed import
# (or a Python 2, for which this line is still valid) tells which interpreter it was.
_PROBE = ("import sys; print(sys.executable); print('%d.%d.%d' % tuple(sys.version_info[:3])); "
          "import pilotdata")


def _how_to_set(url: str) -> str:
    example = "/path/to/venv/bin/python"
    return (f"name the interpreter that has pilot-data with the launcher option python: "
            f"launcher_options={{'python': '{example}'}} (PilotComputeService), create_pilot(..., python='{example}'), "
            f"or pdata pilot start {url} --launcher-option python={example}")


def python_check_error(url: str, python: str, where: str, result: RunResult) -> LaunchError | None:
    """The :class:`LaunchError` for a failed interpreter probe (:data:`_PROBE`), or None if it worked."""
    if result.returncode == 0:
        return None
    non_login = ("SSH runs commands in a non-login shell: PATH from ~/.profile or ~/.bash_profile, module loads "
                 "and conda or venv activation do not apply")
    if result.returncode in (126, 127):  # the shell's "not found" / "not executable"
        return LaunchError(f"{url}: the remote interpreter {python!r} was not found on {where} ({non_login}); "
                           f"{_how_to_set(url)}")
    lines = result.stdout.splitlines()
    resolved = lines[0].strip() if lines else ""
    version = lines[1].strip() if len(lines) > 1 else ""
    try:
        too_old = tuple(int(x) for x in version.split(".")[:2]) < _MIN_PYTHON
    except ValueError:
        too_old = False
    tried = f"{python!r} on {where}" + (f" is {resolved} (Python {version})" if resolved and version else "")
    text = result.stderr + result.stdout
    if too_old:
        return LaunchError(f"{url}: {tried}, but pilot-data needs Python {'.'.join(map(str, _MIN_PYTHON))} or "
                           f"newer; {_how_to_set(url)}")
    if "ModuleNotFoundError" in text or "ImportError" in text:
        return LaunchError(f"{url}: {tried} and cannot import pilotdata: install it for that interpreter "
                           f"(pip install pilot-data) or {_how_to_set(url)}")
    return LaunchError(f"{url}: {tried} and fails to import pilotdata: {result.error_text()}; {_how_to_set(url)}")


class SshLauncher(Launcher):
    """Starts jobs as detached processes on an SSH host.

    Options: ``known_hosts`` (default ``~/.ssh/known_hosts``; the host key must be there),
    ``key_filename``, ``username``, ``port`` (the URL's user and port win), ``connect_timeout``,
    ``python`` (remote interpreter with pilot-data installed; default ``python3``), ``grace``
    (seconds between SIGTERM and SIGKILL on cancel).
    """

    schemes: ClassVar[tuple[str, ...]] = ("ssh",)
    options: ClassVar[frozenset[str]] = SSH_OPTIONS | {"python", "grace"}

    def __init__(self, url: str, *, python: str = "python3", grace: float = DEFAULT_GRACE, **ssh: Any) -> None:
        super().__init__(url)
        self.check_options(ssh)
        self._runner = SshRunner(url, **{k: v for k, v in ssh.items() if v is not None})
        self._python = python
        self._grace = float(grace)
        self._checked = False

    def _fail(self, doing: str, result: RunResult) -> LaunchError:
        return python_failure(self.url, self._python, self._runner.where, doing, result)

    def check_remote(self) -> None:
        """Check (once) that the remote ``python`` imports ``pilotdata``; :class:`LaunchError` if not,
        naming the interpreter tried and how to choose another (:func:`python_check_error`)."""
        if not self._checked:
            result = self._runner.run([self._python, "-c", _PROBE])
            error = python_check_error(self.url, self._python, self._runner.where, result)
            if error is not None:
                raise error
            found = result.stdout.strip().replace("\n", ", ")
            log.debug("ssh: %s on %s is %s", self._python, self._runner.where, found)
            self._checked = True

    def submit(self, spec: LaunchSpec) -> str:
        """Create the working directory, write the spec (mode 600) and spawn it remotely."""
        self.check_remote()
        runner = self._runner
        workdir = runner.absolute(spec.working_directory)
        control = spec.control_directory(workdir)
        runner.makedirs(control)
        stdout, stderr = spec.output_paths(workdir)
        spec_file = f"{control}/spawn.json"
        runner.write_file(
            spec_file,
            json.dumps(
                {
                    "argv": list(spec.argv),
                    "env": dict(spec.env),
                    "cwd": workdir,
                    "stdout": stdout,
                    "stderr": stderr,
                    "control_dir": control,
                    "grace": self._grace,
                    "walltime_seconds": spec.walltime_minutes * 60 if spec.walltime_minutes else None,
                }
            ),
            mode=0o600,
        )
        result = runner.run([self._python, "-m", _DETACHED, "spawn", spec_file])
        if result.returncode != 0:
            raise self._fail(f"starting pilot {spec.pilot_id}", result)
        try:
            job_id = str(json.loads(result.stdout)["job_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LaunchError(
                f"{self.url}: unexpected answer from the remote spawner: {result.stdout[:200]!r}"
            ) from exc
        log.info("ssh: started pilot %s on %s in %s", spec.pilot_id, runner.where, workdir)
        return job_id

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One SSH command probes every job (exit-code file, else process liveness)."""
        if not job_ids:
            return {}
        result = self._runner.run([self._python, "-m", _DETACHED, "status", *job_ids])
        if result.returncode != 0:
            raise self._fail("querying job status", result)
        try:
            answer = json.loads(result.stdout)
        except ValueError as exc:
            raise LaunchError(f"{self.url}: unexpected status answer: {result.stdout[:200]!r}") from exc
        return {
            job_id: JobStatus.from_dict(answer[job_id])
            if isinstance(answer.get(job_id), dict)
            else JobStatus(JobState.UNKNOWN, None, "no answer for this job id")
            for job_id in job_ids
        }

    def cancel(self, job_id: str) -> None:
        """SIGTERM the remote process group, SIGKILL after the grace period; no-op if it ended."""
        result = self._runner.run(
            [self._python, "-m", _DETACHED, "cancel", "--grace", str(self._grace), job_id],
            timeout=self._grace + 60,
        )
        if result.returncode != 0:
            raise self._fail(f"canceling job {job_id}", result)
        log.info("ssh: canceled job %s on %s", job_id, self._runner.where)

    def close(self) -> None:
        """Close the SSH connection (remote jobs keep running)."""
        self._runner.close()
