"""Starting a CU's process through CPython's own ``fork_exec``, and the handle that waits for it.

:func:`agent.launch.spawn` starts every CU process. :class:`subprocess.Popen` wraps one call of
``_posixsubprocess.fork_exec``, the C function that does the work (``vfork``; in the child the session,
the descriptors, the directory, the default signals, ``exec``), in about 60 us of Python per process:
argument checks, the environment's encoding, its bookkeeping, audit hooks. Measured alone it doubles
the parent's CPU per spawn (115-124 us against 58); in the agent it is 20-45 us of the CPU per CU at a
thousand CUs a second. :func:`start` calls the function itself with the arguments Popen passes for this
use (every descriptor closed but the three given, a new session, default signals, ``vfork`` allowed),
reads the child's error report the way Popen does, and raises the same :class:`OSError`. :class:`Child`
is the handle: ``pid``, ``returncode``, ``poll()`` and ``wait(timeout)``, as Popen has them.

``fork_exec`` is CPython's private function. Its argument list is the same from CPython 3.11 to 3.13
(:data:`DIRECT` is true there); on any other Python :func:`start` uses Popen. If the call is refused for its
arguments (:class:`TypeError`) and Popen then starts the same process, the direct way is given up for
good, with a warning.
"""

from __future__ import annotations

import builtins
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeAlias

try:
    import _posixsubprocess
except ImportError:  # not CPython on a POSIX system
    _posixsubprocess = None  # type: ignore[assignment]

StrPath: TypeAlias = "str | os.PathLike[str]"
"""A path as a spawn takes it. The agent passes ``str``: a :class:`~pathlib.Path` made and converted on every
CU's way is a measurable share of a short CU's time."""

_fork_exec: Callable[..., int] | None = getattr(_posixsubprocess, "fork_exec", None)
"""CPython's ``_posixsubprocess.fork_exec`` (typed loosely: its argument list is this module's concern)."""

__all__ = ["DIRECT", "Child", "ChildProcess", "start"]

log = logging.getLogger(__name__)

DIRECT = _fork_exec is not None and (3, 11) <= sys.version_info[:2] <= (3, 13)
"""Whether :func:`start` calls ``fork_exec`` itself (a CPython whose argument list is known here)."""

_FS_ENCODING = sys.getfilesystemencoding()
"""How names and values are encoded for the kernel (``os.fsencode``'s encoding, with ``surrogateescape``)."""

_ERROR_REPORT_MAX = 50_000
"""Bytes of a child's error report read at most (Popen's limit)."""


class ChildProcess(Protocol):
    """What the agent uses of a started process: :class:`Child`, or :class:`subprocess.Popen`."""

    @property
    def pid(self) -> int:
        """The process id."""

    @property
    def returncode(self) -> int | None:
        """The exit code once reaped (a signal's number negated), else ``None``."""

    def poll(self) -> int | None:
        """The exit code if the process has ended (reaping it), else ``None``; never waits."""

    def wait(self, timeout: float | None = None) -> int:
        """The exit code, waiting for it; :class:`subprocess.TimeoutExpired` after ``timeout`` seconds."""


class Child:
    """A process started by :func:`start`. Thread-safe: one thread reaps it, every caller gets the code."""

    def __init__(self, pid: int, argv: Sequence[str]) -> None:
        self.pid = pid
        self.args = list(argv)
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Child pid={self.pid} returncode={self.returncode} args={self.args!r}>"

    def poll(self) -> int | None:
        """The exit code if the process has ended, else ``None`` (also while another thread reaps it)."""
        if self.returncode is None and self._lock.acquire(blocking=False):
            try:
                self._reap(os.WNOHANG)
            finally:
                self._lock.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; :class:`subprocess.TimeoutExpired` if it still runs after ``timeout`` seconds.

        Without a timeout it blocks in ``waitpid``; with one it checks with growing pauses (0.5 ms up to
        50 ms, as Popen does). The agent waits on a pidfd first, so its calls find the process ended.
        """
        if timeout is None:
            with self._lock:
                self._reap(0)
            return self._code()
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while True:
            if self.poll() is not None:
                return self._code()
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)

    def _code(self) -> int:
        if self.returncode is None:  # pragma: no cover - _reap(0) always sets it
            raise RuntimeError(f"process {self.pid} was not reaped")
        return self.returncode

    def _reap(self, flags: int) -> None:
        """``waitpid`` once (called with the lock held); sets :attr:`returncode` when it has ended."""
        if self.returncode is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): the code is lost, as Popen says 0
            self.returncode = 0
            return
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)


def start(argv: Sequence[str], cwd: StrPath, env: Mapping[str, str], stdin: int, stdout: int,
          stderr: int) -> ChildProcess:
    """Start ``argv`` in ``cwd`` with exactly ``env``, the three descriptors as its standard ones and no
    other, in a new session, with default signal handling.

    Raises what Popen raises: :class:`OSError` (``FileNotFoundError``, ``PermissionError`` ...) when the
    process cannot start, with ``filename`` the executable, or ``cwd`` when the directory was the
    problem; :class:`ValueError` for an environment variable with ``=`` in its name or a NUL byte.
    """
    global DIRECT
    if DIRECT:
        try:
            return _start_direct(argv, cwd, env, stdin, stdout, stderr)
        except TypeError as refused:
            popen = _popen(argv, cwd, env, stdin, stdout, stderr)  # raises as well if the input is at fault
            DIRECT = False
            log.warning("starting CU processes through subprocess.Popen from now on: this Python's "
                        "_posixsubprocess.fork_exec refused the call (%s)", refused)
            return popen
    return _popen(argv, cwd, env, stdin, stdout, stderr)


def _popen(argv: Sequence[str], cwd: StrPath, env: Mapping[str, str], stdin: int, stdout: int,
           stderr: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=stdin, stdout=stdout, stderr=stderr,
                            start_new_session=True, close_fds=True)


def _start_direct(argv: Sequence[str], cwd: StrPath, env: Mapping[str, str], stdin: int, stdout: int,
                  stderr: int) -> Child:
    if _fork_exec is None:  # pragma: no cover - DIRECT is false then
        raise TypeError("no _posixsubprocess.fork_exec")
    encode = os.fsencode
    env_list = []
    for name, value in env.items():
        if "=" in name:
            raise ValueError(f"illegal environment variable name: {name!r}")
        env_list.append(f"{name}={value}".encode(_FS_ENCODING, "surrogateescape"))  # os.fsencode, 2.5x faster
    executable = encode(argv[0])
    if os.path.dirname(executable):
        executables: Sequence[bytes] = (executable,)
    else:  # a bare name: searched in the child's PATH, as Popen and execvpe do
        executables = tuple(os.path.join(encode(d), executable) for d in os.get_exec_path(dict(env)))
    directory = os.fspath(cwd)
    report_read, report_write = os.pipe()  # close-on-exec: it closes in the child when exec succeeds
    low: list[int] = []
    while report_write < 3:  # the agent's own 0-2 were closed: the child's dup2 would overwrite it
        low.append(report_write)
        report_write = os.dup(report_write)
    for fd in low:
        os.close(fd)
    try:
        try:
            pid = _fork_exec(
                argv, executables,
                True, (report_write,),  # close every descriptor but the report pipe (closed by exec)
                directory, env_list,
                stdin, -1, -1, stdout, -1, stderr,  # the child's 0, 1, 2 (no pipes to the agent)
                report_read, report_write,
                True, True, -1,  # default signals, a new session, no other process group
                None, None, None, -1,  # gid, groups, uid, umask: unchanged
                None, True,  # no preexec_fn; vfork allowed
            )
        finally:
            os.close(report_write)
        report = bytearray()
        while len(report) <= _ERROR_REPORT_MAX:
            part = os.read(report_read, _ERROR_REPORT_MAX)
            if not part:
                break
            report += part
    finally:
        os.close(report_read)
    if report:
        try:
            os.waitpid(pid, 0)  # it exits at once after the report: not left a zombie
        except ChildProcessError:
            pass
        raise _child_error(bytes(report), argv[0], directory)
    return Child(pid, argv)


def _child_error(report: bytes, executable: str, cwd: str) -> Exception:
    """The exception a child's error report (``Name:hex-errno:what``) stands for, as Popen builds it."""
    try:
        name, hex_errno, what = report.split(b":", 2)
        kind = getattr(builtins, name.decode("ascii"), None)
        errno_num = int(hex_errno, 16)
        text = what.decode(errors="replace")
    except ValueError:
        return subprocess.SubprocessError(f"bad error report from the child: {report[:200]!r}")
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        kind = subprocess.SubprocessError
    if issubclass(kind, OSError) and errno_num:
        if text == "noexec:chdir" or (text == "noexec" and sys.version_info < (3, 12)):
            filename: str | None = cwd  # the directory could not be entered (3.11 says only "noexec")
        else:
            filename = None if text.startswith("noexec") else executable  # before exec, or exec itself
        return OSError(errno_num, os.strerror(errno_num), filename)  # OSError picks the subclass
    return kind(text)
