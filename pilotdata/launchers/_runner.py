"""Where launcher commands run: this host (:class:`LocalRunner`) or an SSH host (``_ssh.SshRunner``).

The SLURM launcher runs ``sbatch``/``squeue``/``scancel`` and writes its batch script through this
interface, so ``slurm://`` and ``slurm+ssh://`` share every line of their logic. Commands are argv
lists (no shell locally; quoted with :func:`shlex.quote` remotely); ``env`` carries non-secret
variables only (``SLURM_CONF``), secrets go into files written with mode 600.
"""

from __future__ import annotations

import os
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pilotdata.errors import LaunchError

COMMAND_TIMEOUT = 60.0
"""Default bound on one command (seconds)."""


@dataclass(frozen=True)
class RunResult:
    """Exit status and output of one command. 127 means the command was not found."""

    returncode: int
    stdout: str
    stderr: str

    def error_text(self, limit: int = 500) -> str:
        """The end of stderr (or stdout), one line, for an error message."""
        text = (self.stderr or self.stdout).strip().replace("\n", " | ")
        return text[-limit:] if text else f"exit status {self.returncode}"


class CommandRunner(ABC):
    """Runs commands and reads/writes small files on one host. ``where`` names it in messages."""

    where: str

    @abstractmethod
    def run(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> RunResult:
        """Run ``argv`` with extra ``env``; a missing command gives return code 127, never an exception.

        Raises :class:`LaunchError` when the host cannot be reached or the command times out.
        """

    @abstractmethod
    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Create or replace ``path`` atomically with permissions ``mode`` set before any byte is written."""

    @abstractmethod
    def read_file(self, path: str) -> str | None:
        """The text of ``path``, or None when it does not exist."""

    @abstractmethod
    def makedirs(self, path: str) -> None:
        """Create ``path`` and its parents (no error if it exists)."""

    @abstractmethod
    def absolute(self, path: str) -> str:
        """``path`` made absolute on that host (``~`` expanded; see each runner for relative paths)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection, if any."""


def python_failure(url: str, python: str, where: str, doing: str, result: RunResult) -> LaunchError:
    """A LaunchError for a failed ``python ...`` command that says whether Python or pilotdata is missing."""
    text = result.stderr + result.stdout
    if result.returncode in (126, 127):  # the shell's "not found" / "not executable"
        return LaunchError(
            f"{url}: Python interpreter {python!r} not found on {where} "
            "(install Python 3.10+ there or set the launcher option python=)"
        )
    if "ModuleNotFoundError" in text or "ImportError" in text:
        return LaunchError(
            f"{url}: the Python package pilotdata is not installed for {python!r} on {where} "
            "(pip install pilot-data there, or set the launcher option python= to an interpreter "
            "that has it)"
        )
    return LaunchError(f"{url}: {doing} failed on {where}: {result.error_text()}")


def check_python(runner: CommandRunner, python: str, url: str) -> None:
    """Raise :func:`python_failure`'s error unless ``python -c "import pilotdata"`` works on the runner's host."""
    result = runner.run([python, "-c", "import pilotdata"])
    if result.returncode != 0:
        raise python_failure(url, python, runner.where, "checking Python", result)


def _client_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without ``PDATA_*`` (they may hold secrets), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDATA_")}
    env.update(extra)
    return env


class LocalRunner(CommandRunner):
    """Runs commands on this host with :mod:`subprocess` (no shell)."""

    def __init__(self, where: str = "localhost") -> None:
        self.where = where

    def run(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> RunResult:
        """Run ``argv``; the environment is ours minus ``PDATA_*`` plus ``env``."""
        try:
            done = subprocess.run(
                list(argv),
                env=_client_environment(env or {}),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            return RunResult(127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired as exc:
            raise LaunchError(f"{self.where}: {argv[0]} did not answer within {timeout:g} s") from exc
        except OSError as exc:
            raise LaunchError(f"{self.where}: cannot run {argv[0]}: {exc.strerror or exc}") from exc
        return RunResult(done.returncode, done.stdout, done.stderr)

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write through a temporary file created with ``mode``, then rename."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.chmod(tmp, mode)  # os.open's mode is filtered by the umask
            os.replace(tmp, target)
        except OSError as exc:
            raise LaunchError(f"{self.where}: cannot write {path}: {exc.strerror or exc}") from exc

    def read_file(self, path: str) -> str | None:
        """The file's text, None if missing."""
        try:
            return Path(path).read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LaunchError(f"{self.where}: cannot read {path}: {exc.strerror or exc}") from exc

    def makedirs(self, path: str) -> None:
        """``mkdir -p``."""
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LaunchError(f"{self.where}: cannot create directory {path}: {exc.strerror or exc}") from exc

    def absolute(self, path: str) -> str:
        """Expand ``~`` and resolve relative to the current directory."""
        return str(Path(path).expanduser().resolve())
