"""Launching a CU: argv building (MPI included), environment, process groups.

* ``shell: false``: the CU runs from an argv list, without a shell. ``$VAR`` and ``${VAR}`` in the
  executable and the arguments are still expanded: from the CU's environment first, then the agent's.
  An unknown variable expands to the empty string, as in a shell; ``\\$`` is a literal ``$``.
* ``shell: true`` (BigJob's way, the Pilot-API's default for dict descriptions): the executable and the
  arguments joined by single spaces are one command line for ``/bin/sh -c``, exactly as BigJob's agent
  built it, so an empty argument vanishes and quotes, globs, ``$VAR``, ``>``, ``|`` and ``;`` mean what
  they mean in a terminal.
* The environment is built by :func:`agent.environment.cu_environment`: an allow-list of the agent's
  (no secret ever), plus ``PDATA_CU_ID``, ``PDATA_PILOT_ID`` and ``PDATA_SANDBOX``, plus the CU's own,
  whose values are expanded against the agent's environment (BigJob exported them with
  ``export K=V;``, so ``PATH=$PATH:/opt/bin`` extends the path).
* ``spmd_variation: mpi`` with N processes runs ``mpirun -np N`` (Open MPI: ``--allow-run-as-root``
  as root, ``--oversubscribe`` when N exceeds the cores, ``-x NAME`` for each CU variable), or, inside
  a SLURM allocation (``SLURM_JOB_ID`` set) when ``srun`` supports ``--mpi=pmix``, ``srun -n N``.
* Every CU is the leader of its own process group (a new session), so a timeout or a cancel kills
  the whole tree: SIGTERM to the group, SIGKILL after a grace period.
* The process is started by :func:`agent.child.start`: CPython's own ``fork_exec`` without Popen's
  Python around it, which was half of the agent's CPU per start.
"""

from __future__ import annotations

import functools
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.child import ChildProcess, StrPath, start
from agent.task import CUFailed, Task

_VAR = re.compile(r"\\\$|\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand(text: str, *scopes: Mapping[str, str]) -> str:
    """Replace ``$NAME`` / ``${NAME}`` with the first scope that defines NAME (else ``""``).

    ``\\$`` stands for a literal ``$`` (for scripts handed to a CU's own shell: ``\\$i``).
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name is None:
            return "$"
        for scope in scopes:
            if name in scope:
                return scope[name]
        return ""

    return _VAR.sub(repl, text)


SHELL = "/bin/sh"
"""The shell of ``shell: true`` CUs (BigJob's agent used ``/bin/bash`` or its configured shell)."""


_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./+,:@%=-]+")
"""An executable the shell takes as one word with nothing to interpret: checked before the start."""


def shell_command(executable: str, arguments: Sequence[str]) -> str:
    """BigJob's command line: the executable and the arguments joined by single spaces, unquoted."""
    return " ".join([executable, *arguments])


def resolve_executable(name: str, sandbox: StrPath, path_var: str | None) -> str:
    """Absolute path of the executable; :class:`CUFailed` ``executable not found: X`` otherwise.

    A name with a ``/`` is taken relative to the sandbox; a bare name is searched in ``PATH``.
    """
    if "/" in name:
        candidate = name if os.path.isabs(name) else os.path.join(sandbox, name)
        try:
            regular = stat.S_ISREG(os.stat(candidate).st_mode)
        except (OSError, ValueError):
            regular = False
        if not regular:
            raise CUFailed(f"executable not found: {name}")
        if not os.access(candidate, os.X_OK):
            raise CUFailed(f"executable not executable: {name}")
        return candidate
    found = shutil.which(name, path=path_var)
    if not found:
        raise CUFailed(f"executable not found: {name}")
    return found


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=8)
def is_open_mpi(mpirun: str) -> bool:
    """Whether ``mpirun`` is Open MPI's (which takes ``--allow-run-as-root`` / ``--oversubscribe``)."""
    try:
        out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return "open mpi" in (out.stdout + out.stderr).lower() or "open-mpi" in (out.stdout + out.stderr).lower()


@functools.lru_cache(maxsize=8)
def srun_has_pmix(srun: str, slurm_conf: str | None = None) -> bool:
    """Whether ``srun --mpi=list`` offers pmix (asked under the CU's ``SLURM_CONF``, cached per pair)."""
    env = dict(os.environ)
    if slurm_conf is not None:
        env["SLURM_CONF"] = slurm_conf
    try:
        out = subprocess.run([srun, "--mpi=list"], capture_output=True, text=True, timeout=20, check=False,
                             env=env)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "pmix" in (out.stdout + out.stderr).lower()


def mpi_prefix(
    processes: int,
    launcher: str,
    env: Mapping[str, str],
    cu_variables: Sequence[str] = (),
    hosts: Sequence[tuple[str, int]] = (),
) -> list[str]:
    """The launcher part of an MPI argv (everything before the executable).

    ``launcher``: ``auto`` (srun with pmix inside a SLURM allocation, else mpirun), ``srun``, or an
    mpirun-compatible command. :class:`CUFailed` if the launcher cannot be found. ``hosts``: the
    ``(node, processes)`` the CU was placed on when it spans nodes (``srun -N -w``, ``mpirun -host``).
    """
    n = str(processes)
    where: list[str] = []
    if hosts:
        names = ",".join(h for h, _ in hosts)
        where = ["--overlap", "-N", str(len(hosts)), "-w", names]
    path_var = env.get("PATH")
    if launcher in ("auto", "srun"):
        srun = shutil.which("srun", path=path_var)
        in_slurm = bool(env.get("SLURM_JOB_ID"))
        if launcher == "srun" and not srun:
            raise CUFailed("MPI launcher not found: srun")
        if srun and (launcher == "srun" or in_slurm):
            if srun_has_pmix(srun, env.get("SLURM_CONF")):
                return [srun, "--mpi=pmix", *where, "-n", n]
            if launcher == "srun":
                return [srun, *where, "-n", n]
        launcher = "mpirun"  # auto: outside SLURM, or srun without pmix
    mpirun = shutil.which(launcher, path=path_var)
    if not mpirun:
        raise CUFailed(f"MPI launcher not found: {launcher}")
    argv = [mpirun]
    if is_open_mpi(mpirun):
        if os.geteuid() == 0:
            argv.append("--allow-run-as-root")
        if processes > cores():
            argv.append("--oversubscribe")
        for name in cu_variables:
            argv += ["-x", name]
    if hosts:
        argv += ["-host", ",".join(f"{h}:{c}" for h, c in hosts)]
    return [*argv, "-np", n]


def build_argv(task: Task, sandbox: StrPath, env: Mapping[str, str], mpi_launcher: str = "auto",
               hosts: Sequence[tuple[str, int]] = ()) -> list[str]:
    """The full argv of ``task``, behind the MPI launcher if any (with ``hosts``, the nodes an MPI CU
    spans): ``/bin/sh -c LINE`` in shell mode, else the expanded executable and arguments."""
    desc = task.description
    if desc.shell:
        exe = os.path.expanduser(expand(desc.executable, env))
        if "/" in exe and _PLAIN_WORD.fullmatch(exe):  # a plain path: say it is missing, not "exit code 127"
            resolve_executable(exe, sandbox, env.get("PATH"))  # (a bare name may be a shell builtin)
        command = [SHELL, "-c", shell_command(desc.executable, desc.arguments)]
        if task.is_mpi:
            return [*mpi_prefix(task.processes, mpi_launcher, env, sorted(desc.environment), hosts), *command]
        return command
    scopes = (desc.environment, env)
    exe = resolve_executable(expand(desc.executable, *scopes), sandbox, env.get("PATH"))
    args = [expand(a, *scopes) for a in desc.arguments]
    if task.is_mpi:
        return [*mpi_prefix(task.processes, mpi_launcher, env, sorted(desc.environment), hosts), exe, *args]
    return [exe, *args]


@dataclass
class Launched:
    """A running CU process (leader of its own process group).

    Waiting uses a pidfd (Linux >= 5.3) so the exit is seen the moment it happens; the process's own wait
    with a timeout (:meth:`agent.child.Child.wait`, as Popen's) polls with growing sleeps and would add
    milliseconds to every short CU.
    """

    process: ChildProcess
    pidfd: int | None = None

    def __post_init__(self) -> None:
        if self.pidfd is None and hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(self.process.pid)
            except OSError:  # old kernel, or the process is already reaped
                self.pidfd = None

    @property
    def pgid(self) -> int:
        """The process group id (the leader's pid)."""
        return self.process.pid

    def wait(self, timeout: float) -> int | None:
        """The exit code, or ``None`` if the process still runs after ``timeout`` seconds."""
        if self.pidfd is not None and self.process.returncode is None:
            poller = select.poll()  # poll, not select: no limit on the descriptor number
            poller.register(self.pidfd, select.POLLIN)
            if not poller.poll(max(0.0, timeout) * 1000):
                return None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.close()
        return code

    def close(self) -> None:
        """Release the pidfd."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def kill_group(self, grace: float) -> int:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; return the leader's exit code.

        With ``grace`` 0 the group gets SIGKILL at once.
        """
        if grace > 0 and self.process.poll() is None:
            _signal_group(self.pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if self.wait(min(0.05, max(0.0, deadline - time.monotonic()))) is not None:
                    break
        _signal_group(self.pgid, signal.SIGKILL)  # also the group's other members
        code = self.process.wait()
        self.close()
        return code


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


_OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_devnull: int | None = None
_devnull_lock = threading.Lock()


def _stdin() -> int:
    """One read-only ``/dev/null`` descriptor shared by every CU's stdin (close-on-exec in the agent)."""
    global _devnull
    with _devnull_lock:
        if _devnull is None:
            _devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return _devnull


def spawn(argv: Sequence[str], sandbox: StrPath, env: Mapping[str, str], stdout: StrPath, stderr: StrPath) -> Launched:
    """Start ``argv`` in ``sandbox`` with stdout/stderr to the given files, in a new session."""
    stdout, stderr = os.fspath(stdout), os.fspath(stderr)
    try:
        out = os.open(stdout, _OUTPUT_FLAGS, 0o666)
    except OSError as exc:
        raise CUFailed(f"cannot open output file {str(stdout)!r}: {exc.strerror or exc}") from exc
    try:
        err = out if stderr == stdout else os.open(stderr, _OUTPUT_FLAGS, 0o666)
    except OSError as exc:
        os.close(out)
        raise CUFailed(f"cannot open error file {str(stderr)!r}: {exc.strerror or exc}") from exc
    try:
        proc = start(argv, sandbox, env, _stdin(), out, err)
    except OSError as exc:
        raise _start_failure(exc, argv[0], sandbox) from exc
    finally:
        os.close(out)
        if err != out:
            os.close(err)
    return Launched(proc)


def _start_failure(exc: OSError, executable: str, sandbox: StrPath) -> CUFailed:
    """Why a CU process did not start, naming the sandbox when entering it failed, else the executable."""
    where = os.fsdecode(exc.filename) if exc.filename is not None else None
    if where == os.fspath(sandbox) and where != executable:  # (equal: exec of the sandbox itself failed)
        return CUFailed(f"cannot enter the sandbox {os.fspath(sandbox)!r}: {exc.strerror or exc}")
    if isinstance(exc, FileNotFoundError):
        return CUFailed(f"executable not found: {executable}")
    if isinstance(exc, PermissionError):
        return CUFailed(f"executable not executable: {executable}")
    return CUFailed(f"cannot start {executable}: {exc.strerror or exc}")
