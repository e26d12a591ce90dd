"""Starting a CU process (:func:`agent.launch.spawn`): what the CU sees from inside (its directory, its whole
environment, its three standard descriptors and no other, a session of its own, default SIGPIPE) and what
the agent sees (exit codes, signals, timeouts, start failures named, nothing left open).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.launch import spawn
from agent.task import CUFailed

PROBE = """
import json, os, sys
fd = int(sys.argv[1])
try:
    os.fstat(fd)
    leaked = True
except OSError:
    leaked = False
print(json.dumps({
    "cwd": os.getcwd(), "env": dict(os.environ), "leaked": leaked,
    "session_leader": os.getsid(0) == os.getpid(),
    "stdin": sys.stdin.read(),
}))
sys.stderr.write("to stderr\\n")
"""


def test_the_cu_sees_its_directory_environment_descriptors_and_session(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    inherited = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(inherited, True)  # not close-on-exec: only "close every other descriptor" keeps it out
    env = {"PATH": os.environ["PATH"], "ONLY_THIS": "value with spaces = and $signs"}
    try:
        launched = spawn([sys.executable, "-c", PROBE, str(inherited)], sandbox, env,
                         sandbox / "stdout.txt", sandbox / "stderr.txt")
    finally:
        os.close(inherited)
    assert launched.wait(30) == 0
    seen = json.loads((sandbox / "stdout.txt").read_text())
    assert (sandbox / "stderr.txt").read_text() == "to stderr\n"
    assert seen["cwd"] == str(sandbox)
    assert {k: v for k, v in seen["env"].items() if k != "LC_CTYPE"} == env  # Python may add LC_CTYPE
    assert seen["leaked"] is False
    assert seen["session_leader"] is True
    assert seen["stdin"] == ""  # /dev/null


def _signal_mask(status: str, field: str) -> int:
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field + ":")), 16)


def test_the_cu_starts_with_default_sigpipe(tmp_path: Path) -> None:
    """Python ignores SIGPIPE (and SIGXFSZ); the CU must not inherit that (``yes | head`` would not end)."""
    out = tmp_path / "status.txt"
    launched = spawn(["/bin/sh", "-c", "cat /proc/$$/status"], tmp_path, {}, out, out)
    assert launched.wait(30) == 0
    status = out.read_text()
    ignored = _signal_mask(status, "SigIgn")
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert not ignored & (1 << (signal.SIGXFSZ - 1))


def test_exit_codes_and_signals_come_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    launched = spawn(["/bin/sh", "-c", "exit 3"], tmp_path, {}, out, out)
    assert launched.wait(30) == 3
    launched = spawn(["/bin/sh", "-c", "kill -KILL $$"], tmp_path, {}, out, out)
    assert launched.wait(30) == -signal.SIGKILL


def test_a_running_cu_times_out_and_its_group_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    launched = spawn(["/bin/sh", "-c", "sleep 60 & wait"], tmp_path, {}, out, out)
    assert launched.wait(0.2) is None
    with pytest.raises(subprocess.TimeoutExpired):
        launched.process.wait(0.1)
    assert launched.kill_group(0.5) == -signal.SIGTERM
    assert launched.process.poll() == -signal.SIGTERM


def test_two_threads_waiting_both_get_the_code(tmp_path: Path) -> None:
    out = tmp_path / "out"
    launched = spawn(["/bin/sh", "-c", "sleep 0.3; exit 7"], tmp_path, {}, out, out)
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(launched.process.wait())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes == [7, 7, 7]


@pytest.mark.parametrize(("make", "reason"), [
    (lambda d: d / "missing", "executable not found"),
    (lambda d: _file(d / "plain", 0o644), "executable not executable"),
    (lambda d: d, "executable not executable"),  # a directory
    (lambda d: _file(d / "noshebang", 0o755, b"\x00\x01binary junk"), "cannot start"),
])
def test_a_cu_that_cannot_start_fails_with_its_reason(tmp_path: Path, make: object, reason: str) -> None:
    exe = make(tmp_path)  # type: ignore[operator]
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(CUFailed) as failed:
        spawn([str(exe)], tmp_path, {}, tmp_path / "out", tmp_path / "err")
    assert failed.value.reason.startswith(reason)
    assert str(exe) in failed.value.reason
    assert set(os.listdir("/proc/self/fd")) <= before  # the output files' descriptors are closed again


def test_bad_environment_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        spawn(["/bin/true"], tmp_path, {"A": "x\0y"}, tmp_path / "out", tmp_path / "err")


def _file(path: Path, mode: int, content: bytes = b"#!/bin/sh\n") -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path
