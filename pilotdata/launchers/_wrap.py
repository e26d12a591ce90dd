"""The exit-code wrapper: runs a command line, enforces an optional walltime, records the exit code.

Usage (what the fork and ssh launchers start, detached, as a process-group leader)::

    python -m pilotdata.launchers._wrap CONTROL_DIR [--walltime-seconds S] [--grace S] -- ARGV...

The command runs without a shell, in the wrapper's process group, so cancelling the group reaches
its children too. When it ends, ``CONTROL_DIR/exit_code`` receives its exit code (negative: killed by
that signal), written atomically, so whoever asks later (another process, another SSH session)
learns how it ended even though it is nobody's child any more. SIGTERM, SIGINT and SIGHUP sent to
the wrapper are forwarded to the command and the wrapper keeps waiting to record the result.
Past the walltime the group gets SIGTERM, then SIGKILL after the grace period; ``CONTROL_DIR/reason``
says so. Only the standard library is used here: this module runs on remote hosts.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

EXIT_FILE = "exit_code"
REASON_FILE = "reason"
CANCELED_FILE = "canceled"


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so that readers see the old content or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" not in argv:
        raise SystemExit("usage: python -m pilotdata.launchers._wrap CONTROL_DIR [options] -- ARGV...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m pilotdata.launchers._wrap")
    parser.add_argument("control_dir")
    parser.add_argument("--walltime-seconds", type=float, default=None)
    parser.add_argument("--grace", type=float, default=5.0)
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        parser.error("no command after --")
    return args, command


def main(argv: list[str] | None = None) -> int:
    """Run the command, record its exit code, return a shell-style status (128+N for signal N)."""
    args, command = _parse(sys.argv[1:] if argv is None else argv)
    control = Path(args.control_dir)
    control.mkdir(parents=True, exist_ok=True)
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        if child is not None and child.returncode is None:
            try:
                child.send_signal(signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        write_atomic(control / REASON_FILE, f"cannot start {command[0]!r}: {exc.strerror or exc}")
        write_atomic(control / EXIT_FILE, "127")
        return 127
    try:
        code = child.wait(timeout=args.walltime_seconds)
    except subprocess.TimeoutExpired:
        code = _end_walltime(child, control, args.walltime_seconds, args.grace)
    write_atomic(control / EXIT_FILE, str(code))
    return code if code >= 0 else 128 - code


def _end_walltime(child: subprocess.Popen[bytes], control: Path, walltime: float, grace: float) -> int:
    """Stop the command (and its group) at the walltime; return its exit code."""
    write_atomic(control / REASON_FILE, f"walltime of {walltime / 60:g} minutes exceeded")
    leader = os.getpgrp() == os.getpid()
    if leader:
        os.killpg(os.getpgrp(), signal.SIGTERM)  # our own handler forwards it to the child: harmless
    else:
        child.terminate()
    try:
        return child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        write_atomic(control / EXIT_FILE, str(-signal.SIGKILL))
        if leader:
            os.killpg(os.getpgrp(), signal.SIGKILL)  # ends the wrapper too; the exit code is written
        child.kill()
        return child.wait()


if __name__ == "__main__":
    sys.exit(main())
