"""Starting a CU process (:func:`agent.launch.spawn`): what the CU sees from inside (its directory, its whole
environment, its three standard descriptors and no other, a session of its own, default SIGPIPE) and what
the agent sees (exit codes, signals, timeouts, start failures named, nothing left open or unreaped).

Every test runs both ways a process can start (:mod:`agent.child`): CPython's ``fork_exec`` called
directly, and :class:`subprocess.Popen`, which other Pythons use.
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

from agent import child
from agent.child import Child
from agent.launch import spawn
from agent.task import CUFailed
from tests.servers import children


@pytest.fixture(autouse=True, params=["fork_exec", "popen"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Start processes the direct way, then through Popen (the direct way is skipped where it is off)."""
    if request.param == "popen":
        monkeypatch.setattr(child, "DIRECT", False)
    elif not child.DIRECT:
        pytest.skip("this Python starts processes through Popen only")
    else:
        monkeypatch.setattr(child, "DIRECT", True)  # restored after a test that gives it up
    return str(request.param)

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


def test_the_way_a_cu_starts_is_the_one_chosen(tmp_path: Path, way: str) -> None:
    launched = spawn(["/bin/true"], tmp_path, {}, tmp_path / "out", tmp_path / "err")
    assert launched.wait(30) == 0
    assert isinstance(launched.process, Child) is (way == "fork_exec")
    assert launched.process.returncode == 0


def test_a_sandbox_that_cannot_be_entered_is_named(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    with pytest.raises(CUFailed) as failed:
        spawn(["/bin/true"], gone, {}, tmp_path / "out", tmp_path / "err")
    assert failed.value.reason.startswith(f"cannot enter the sandbox {str(gone)!r}: ")


def test_a_bare_command_is_found_on_the_cus_own_path(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _file(bindir / "hello", 0o755, b"#!/bin/sh\necho hello from $0\n")
    out = tmp_path / "out"
    launched = spawn(["hello"], tmp_path, {"PATH": f"/nonexistent:{bindir}"}, out, out)
    assert launched.wait(30) == 0
    assert out.read_text() == f"hello from {bindir / 'hello'}\n"
    with pytest.raises(CUFailed) as failed:  # the agent's PATH is not searched: only the CU's
        spawn(["hello"], tmp_path, {"PATH": "/nonexistent"}, out, out)
    assert failed.value.reason == "executable not found: hello"


def test_a_failed_start_leaves_no_child_behind(tmp_path: Path) -> None:
    """The child that reported its failed exec is reaped: no zombie of it stays."""
    exe = _file(tmp_path / "noshebang", 0o755, b"\x00\x01binary junk")
    for _ in range(3):
        with pytest.raises(CUFailed):
            spawn([str(exe)], tmp_path, {}, tmp_path / "out", tmp_path / "err")
    assert _zombies() == []


@pytest.mark.parametrize("way", ["fork_exec"], indirect=True)  # only the direct way can be refused
def test_a_refused_fork_exec_falls_back_to_popen_for_good(tmp_path: Path, way: str,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A Python whose ``fork_exec`` takes other arguments: the CU starts through Popen, and so does every
    later one (one warning); an input at fault is not taken for that."""
    calls: list[int] = []

    def changed(*args: object) -> int:
        calls.append(len(args))
        raise TypeError(f"fork_exec() takes 22 positional arguments but {len(args)} were given")

    with pytest.raises(TypeError):  # an argument no way can start: the direct way stays
        spawn(["/bin/true", 3], tmp_path, {}, tmp_path / "out", tmp_path / "err")  # type: ignore[list-item]
    assert child.DIRECT is True
    monkeypatch.setattr(child, "_fork_exec", changed)
    for _ in range(2):
        launched = spawn(["/bin/sh", "-c", "exit 4"], tmp_path, {}, tmp_path / "out", tmp_path / "err")
        assert isinstance(launched.process, subprocess.Popen)
        assert launched.wait(30) == 4
    assert calls == [23]
    assert child.DIRECT is False
    assert [r.getMessage() for r in caplog.records if "fork_exec refused" in r.getMessage()] == [
        "starting CU processes through subprocess.Popen from now on: this Python's _posixsubprocess.fork_exec "
        "refused the call (fork_exec() takes 22 positional arguments but 23 were given)"]


LOW_FDS = """
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from agent import child
child.DIRECT = sys.argv[2] == "fork_exec"
work = Path(sys.argv[3])
for fd in (0, 1, 2):
    os.close(fd)
out = os.open(work / "out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # takes 0, the report pipe 1 and 2
started = child.start(["/bin/sh", "-c", "echo ran; exit 7"], work, {}, out, out, out)
lines = [f"code {started.wait()}"]
try:
    child.start([str(work / "missing")], work, {}, out, out, out)
except OSError as exc:
    lines.append(f"failed {type(exc).__name__}")
(work / "result").write_text("\\n".join(lines))
"""


def test_an_agent_without_standard_descriptors_still_hears_a_failed_start(tmp_path: Path, way: str) -> None:
    """With the agent's 0-2 closed, the error report pipe is moved above them (the child's dup2 would take
    it over) and a missing executable is still reported."""
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", LOW_FDS, str(repo), way, str(tmp_path)], check=True, timeout=60)
    assert (tmp_path / "result").read_text().split("\n") == ["code 7", "failed FileNotFoundError"]
    assert (tmp_path / "out").read_text() == "ran\n"


def test_waiting_with_a_timeout_polls_until_the_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    launched = spawn(["/bin/sh", "-c", "sleep 0.3; exit 5"], tmp_path, {}, out, out)
    with pytest.raises(subprocess.TimeoutExpired):
        launched.process.wait(0.05)
    assert launched.process.poll() is None
    assert launched.process.wait(30) == 5
    assert launched.process.poll() == 5
    launched.close()


def _zombies() -> list[int]:
    """This process's children that have ended and are not reaped."""
    return [pid for pid, state in children(os.getpid()) if state == "Z"]


def _file(path: Path, mode: int, content: bytes = b"#!/bin/sh\n") -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path
