"""Detached processes on *this* host: start, probe and stop them, in-process or as a small CLI.

The fork launcher calls these functions directly; the ssh launcher runs the same code on the remote
host through the CLI (``python -m pilotdata.launchers._detached spawn|status|cancel ...``, JSON on
stdout), so both launchers behave the same.

A job is a :mod:`~pilotdata.launchers._wrap` process started in a new session (it leads its own
process group) with stdin from ``/dev/null`` and output to files. Its job id is
``"<pid>:<start>:<control dir>"``: ``start`` is the process start time (``/proc/<pid>/stat`` field 22)
and guards against PID reuse; the control directory holds ``exit_code``, ``reason`` and the
``canceled`` marker. A zombie counts as ended (PID 1 does not always reap orphans). Only the
standard library and :mod:`pilotdata.launchers.base` are used here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pilotdata.launchers._wrap import CANCELED_FILE, EXIT_FILE, REASON_FILE, write_atomic
from pilotdata.launchers.base import JobState, JobStatus

DEFAULT_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL when cancelling."""

KILL_WAIT = 5.0
"""Bound on the wait for a SIGKILLed group to disappear."""


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    stdout: str,
    stderr: str,
    control_dir: str,
    walltime_seconds: float | None = None,
    grace: float = DEFAULT_GRACE,
    python: str | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``argv`` under the exit-code wrapper, detached; return the process and its job id.

    ``env`` is added to this process's environment. Creates ``cwd``, ``control_dir`` and the
    directories of the output files. Raises ``OSError`` when the wrapper cannot be started.
    """
    Path(cwd).mkdir(parents=True, exist_ok=True)
    Path(control_dir).mkdir(parents=True, exist_ok=True)
    command = [
        python or sys.executable,
        "-m",
        "pilotdata.launchers._wrap",
        control_dir,
        "--grace",
        str(grace),
    ]
    if walltime_seconds is not None:
        command += ["--walltime-seconds", str(walltime_seconds)]
    command += ["--", *argv]
    for path in (stdout, stderr):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(stdout, "ab") as out, open(stderr, "ab") as err:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            close_fds=True,
        )
    return proc, make_job_id(proc.pid, start_time(proc.pid) or "0", control_dir)


def make_job_id(pid: int, start: str, control_dir: str) -> str:
    """``"<pid>:<start>:<control dir>"``."""
    return f"{pid}:{start}:{control_dir}"


def parse_job_id(job_id: str) -> tuple[int, str, Path]:
    """The pid, start time and control directory of a job id; ``ValueError`` if it is not one."""
    pid, start, control = job_id.split(":", 2)
    if not pid.isdigit() or not start.isdigit() or not control.startswith("/"):
        raise ValueError(f"not a detached-process job id: {job_id!r}")
    return int(pid), start, Path(control)


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()
    except OSError:
        return None


def start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot, or None (gone, or no ``/proc``)."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def alive(pid: int, start: str) -> bool:
    """Whether the process ``pid`` that started at ``start`` still runs (zombies do not)."""
    if not os.path.isdir("/proc/self"):  # no procfs: the best we can do
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = _stat(pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    return start == "0" or fields[19] == start


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group ``pgid``."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                return True
    return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _recorded(control: Path) -> JobStatus | None:
    """The final status the control directory records, if the wrapper wrote its exit code."""
    text = _read(control / EXIT_FILE)
    if text is None:
        return None
    try:
        code = int(text)
    except ValueError:
        return JobStatus(JobState.FAILED, None, f"unreadable exit code {text!r}")
    canceled = (control / CANCELED_FILE).exists()
    return JobStatus.from_exit_code(code, canceled=canceled, reason=_read(control / REASON_FILE) or None)


def probe(job_id: str) -> JobStatus:
    """The status of one job: recorded exit code, else running if alive, else how it vanished."""
    try:
        pid, start, control = parse_job_id(job_id)
    except ValueError:
        return JobStatus(JobState.UNKNOWN, None, "not a job id of this launcher")
    recorded = _recorded(control)
    if recorded:
        return recorded
    if alive(pid, start):
        return JobStatus(JobState.RUNNING)
    recorded = _recorded(control)  # it may have ended between the two looks
    if recorded:
        return recorded
    if not control.is_dir():
        return JobStatus(JobState.UNKNOWN, None, f"control directory {control} is gone")
    if (control / CANCELED_FILE).exists():
        return JobStatus(JobState.CANCELED, None, "canceled")
    reason = _read(control / REASON_FILE)
    return JobStatus(
        JobState.FAILED,
        None,
        reason or "ended without recording an exit code (killed with SIGKILL or host restarted)",
    )


def terminate(job_id: str, grace: float = DEFAULT_GRACE, reap: Callable[[], object] | None = None) -> bool:
    """Cancel a job: mark it canceled, SIGTERM its process group, SIGKILL what is left after ``grace``.

    Returns False when there was nothing to stop (already ended). ``reap`` is called while waiting
    (the fork launcher reaps its own children there). ``ValueError`` for a malformed id.
    """
    pid, start, control = parse_job_id(job_id)
    if _recorded(control) is not None or not alive(pid, start):
        return False
    write_atomic(control / CANCELED_FILE, f"{time.time():.3f}\n")
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not _wait_group_gone(pid, grace, reap):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_group_gone(pid, KILL_WAIT, reap)  # SIGKILL is delivered asynchronously
    return True


def _wait_group_gone(pgid: int, timeout: float, reap: Callable[[], object] | None) -> bool:
    """Poll until process group ``pgid`` is gone (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if reap:
            reap()
        if not group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


# ----------------------------------------------------------------------------------------- CLI
def _spawn_from_file(spec_file: str) -> dict[str, Any]:
    """Spawn from a JSON spec file (mode 600, it may hold secrets in ``env``), then delete the file."""
    path = Path(spec_file)
    try:
        spec = json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)
    _proc, job_id = spawn(
        spec["argv"],
        env=spec.get("env", {}),
        cwd=spec["cwd"],
        stdout=spec["stdout"],
        stderr=spec["stderr"],
        control_dir=spec["control_dir"],
        walltime_seconds=spec.get("walltime_seconds"),
        grace=float(spec.get("grace", DEFAULT_GRACE)),
    )
    return {"job_id": job_id}


def main(argv: list[str] | None = None) -> int:
    """``spawn SPEC_FILE`` | ``status JOB_ID...`` | ``cancel [--grace S] JOB_ID``; JSON on stdout."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m pilotdata.launchers._detached spawn|status|cancel ...", file=sys.stderr)
        return 2
    command, rest = args[0], args[1:]
    try:
        if command == "spawn" and len(rest) == 1:
            result: Any = _spawn_from_file(rest[0])
        elif command == "status":
            result = {job_id: probe(job_id).to_dict() for job_id in rest}
        elif command == "cancel" and rest:
            grace = DEFAULT_GRACE
            if rest[0] == "--grace" and len(rest) == 3:
                grace, rest = float(rest[1]), rest[2:]
            if len(rest) != 1:
                raise ValueError("cancel takes one job id")
            result = {"stopped": terminate(rest[0], grace)}
        else:
            print(f"bad arguments for {command!r}", file=sys.stderr)
            return 2
    except (OSError, ValueError, KeyError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
