"""fork://localhost: detached local processes, exit codes through the wrapper, group cancel."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata.errors import LaunchError
from pilotdata.launchers import JobState, LaunchSpec, launcher_for
from pilotdata.launchers.fork import ForkLauncher
from tests.launchers.program import Program, process_gone
from tests.servers import wait_until

SECRET_URL = "redis://:s3cret-pw@127.0.0.1:6399/0"


@pytest.fixture
def fork() -> Iterator[ForkLauncher]:
    launcher = launcher_for("fork://localhost", grace=1.0)
    assert isinstance(launcher, ForkLauncher)
    yield launcher
    launcher.close()


def spec(tmp_path: Path, name: str, argv: list[str], **kw: object) -> LaunchSpec:
    return LaunchSpec(pilot_id=name, argv=argv, working_directory=str(tmp_path / "work"), **kw)  # type: ignore[arg-type]


def state_of(launcher: ForkLauncher, job_id: str) -> JobState:
    return launcher.status([job_id])[job_id].state


def test_submit_runs_detached_then_done(fork: ForkLauncher, program: Program, tmp_path: Path) -> None:
    job = fork.submit(
        spec(tmp_path, "p1", program.argv("p1", hold=True, env="PDATA_URL"), env={"PDATA_URL": SECRET_URL})
    )
    wait_until(lambda: program.started("p1"), 10, "the program to start")
    assert program.started_text("p1") == SECRET_URL  # env reached the command
    assert state_of(fork, job) is JobState.RUNNING
    # detached: its own session, stdin from /dev/null, and the secret is on no command line
    pid = program.pid("p1")
    assert os.getsid(pid) != os.getsid(0)
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    wrapper_pid = int(job.split(":")[0])
    for p in (pid, wrapper_pid):
        assert "s3cret" not in Path(f"/proc/{p}/cmdline").read_text()
    program.release("p1")
    status = wait_until(lambda: (s := fork.status([job])[job]).is_final and s, 15, "the job to end")
    assert (status.state, status.exit_code) == (JobState.DONE, 0)
    assert "p1 finished" in (tmp_path / "work" / "p1.stdout").read_text()


def test_nonzero_exit_is_failed_with_code(fork: ForkLauncher, program: Program, tmp_path: Path) -> None:
    job = fork.submit(spec(tmp_path, "p3", program.argv("p3", exit_code=3)))
    status = wait_until(lambda: (s := fork.status([job])[job]).is_final and s, 15, "the job to end")
    assert (status.state, status.exit_code) == (JobState.FAILED, 3)
    assert "3" in (status.reason or "")


def test_status_is_readable_from_another_launcher(
    fork: ForkLauncher, program: Program, tmp_path: Path
) -> None:
    job = fork.submit(spec(tmp_path, "p4", program.argv("p4", exit_code=0)))
    other = ForkLauncher("fork://localhost")  # e.g. another process: it never was the parent
    status = wait_until(lambda: (s := other.status([job])[job]).is_final and s, 15, "the job to end")
    assert status.state is JobState.DONE
    assert fork.status([job])[job].state is JobState.DONE


def test_cancel_kills_the_process_group(fork: ForkLauncher, program: Program, tmp_path: Path) -> None:
    job = fork.submit(spec(tmp_path, "p5", program.argv("p5", hold=True, grandchild=True)))
    wait_until(lambda: program.started("p5"), 10, "the program to start")
    child, grandchild = program.pid("p5"), program.grandchild("p5")
    fork.cancel(job)
    wait_until(lambda: process_gone(child) and process_gone(grandchild), 10, "child and grandchild to end")
    status = fork.status([job])[job]
    assert status.state is JobState.CANCELED
    fork.cancel(job)  # cancelling an ended job is a no-op
    assert fork.status([job])[job].state is JobState.CANCELED


def test_cancel_escalates_to_sigkill(fork: ForkLauncher, program: Program, tmp_path: Path) -> None:
    job = fork.submit(spec(tmp_path, "p6", program.argv("p6", hold=True, ignore_term=True)))
    wait_until(lambda: program.started("p6"), 10, "the program to start")
    fork.cancel(job)  # grace is 1 s, then SIGKILL for the whole group
    assert process_gone(program.pid("p6"))
    assert fork.status([job])[job].state is JobState.CANCELED


def test_walltime_is_enforced(fork: ForkLauncher, program: Program, tmp_path: Path) -> None:
    job = fork.submit(spec(tmp_path, "p7", program.argv("p7", hold=True), walltime_minutes=0.01))
    status = wait_until(lambda: (s := fork.status([job])[job]).is_final and s, 15, "the walltime to end it")
    assert status.state is JobState.FAILED
    assert "walltime" in (status.reason or "")


def test_missing_executable_fails_with_127(fork: ForkLauncher, tmp_path: Path) -> None:
    job = fork.submit(spec(tmp_path, "p8", [str(tmp_path / "no-such-program")]))
    status = wait_until(lambda: (s := fork.status([job])[job]).is_final and s, 15, "the job to end")
    assert (status.state, status.exit_code) == (JobState.FAILED, 127)
    assert "no-such-program" in (status.reason or "")


def test_finished_job_after_cancel_stays_done(fork: ForkLauncher, program: Program, tmp_path: Path) -> None:
    job = fork.submit(spec(tmp_path, "p9", program.argv("p9")))
    wait_until(lambda: fork.status([job])[job].is_final, 15, "the job to end")
    fork.cancel(job)
    assert fork.status([job])[job].state is JobState.DONE


def test_pid_reuse_and_bad_ids(fork: ForkLauncher, tmp_path: Path) -> None:
    control = tmp_path / "ctl"
    control.mkdir()
    # a live pid (ours) with another start time is not our job any more
    reused = f"{os.getpid()}:1:{control}"
    assert fork.status([reused])[reused].state is JobState.FAILED
    answer = fork.status(["garbage", "1:2:relative/path"])
    assert {s.state for s in answer.values()} == {JobState.UNKNOWN}
    with pytest.raises(LaunchError, match="fork://localhost"):
        fork.cancel("garbage")


def test_bad_working_directory_is_a_launch_error(fork: ForkLauncher, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(LaunchError, match="p10"):
        fork.submit(LaunchSpec(pilot_id="p10", argv=["true"], working_directory=str(blocker / "sub")))


def test_fork_is_local_only() -> None:
    with pytest.raises(LaunchError, match="fork://localhost"):
        launcher_for("fork://otherhost")
