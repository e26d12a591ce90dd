"""slurm:// and slurm+ssh:// against a real single-node SLURM cluster (munged, slurmctld, slurmd)."""

from __future__ import annotations

import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata.errors import LaunchError
from pilotdata.launchers import JobState, JobStatus, Launcher, LaunchSpec, launcher_for
from pilotdata.launchers.batch import BatchLauncher, Slurm
from tests.launchers.jobs import wait_final
from tests.launchers.program import Program
from tests.servers import SshServer, wait_until
from tests.slurm_harness import SlurmCluster

SECRET_URL = "redis://:slurm-s3cret@127.0.0.1:6399/0"
SLURM_WAIT = 45.0


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster) -> Iterator[BatchLauncher]:
    launcher = launcher_for("slurm://localhost", slurm_conf=str(slurm_cluster.conf), python=sys.executable)
    assert isinstance(launcher, BatchLauncher) and isinstance(launcher.system, Slurm)
    yield launcher
    launcher.close()


def final(launcher: Launcher, job: str, seen: list[JobState] | None = None) -> JobStatus:
    return wait_final(launcher, job, SLURM_WAIT, "SLURM", seen)


def test_cluster_is_up(slurm_cluster: SlurmCluster) -> None:
    assert slurm_cluster.node_state() in ("idle", "mixed", "allocated")
    assert slurm_cluster.startup_seconds < 15


def test_job_runs_and_is_done(
    slurm: BatchLauncher, slurm_cluster: SlurmCluster, program: Program, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    job = slurm.submit(
        LaunchSpec(
            pilot_id="j1",
            argv=program.argv("j1", hold=True, env="PDATA_URL"),
            working_directory=str(work),
            env={"PDATA_URL": SECRET_URL},
            walltime_minutes=5,
            queue=slurm_cluster.partition,
        )
    )
    assert job.isdigit()
    seen = [slurm.status([job])[job].state]
    assert seen[0] in (JobState.PENDING, JobState.RUNNING)
    wait_until(lambda: program.started("j1"), SLURM_WAIT, "the batch job to start")
    assert program.started_text("j1") == SECRET_URL  # the env file reached the job
    wait_until(lambda: slurm.status([job])[job].state is JobState.RUNNING, 10, "squeue to say RUNNING")
    # the secret is in a mode-600 env file only: not in the script, not in what SLURM shows
    control = next((work / ".pdata-launch").iterdir())
    assert stat.S_IMODE((control / "env").stat().st_mode) == 0o600
    assert "s3cret" not in (control / "job.sh").read_text()
    assert "s3cret" not in slurm_cluster.run("scontrol", "show", "job", "-d", job).stdout
    assert "s3cret" not in slurm_cluster.run("squeue", "-h", "-j", job, "-o", "%all").stdout
    program.release("j1")
    status = final(slurm, job, seen)
    assert (status.state, status.exit_code) == (JobState.DONE, 0)
    assert "j1 finished" in (work / "j1.stdout").read_text()
    assert JobState.RUNNING in seen


def test_failing_job_is_failed(slurm: BatchLauncher, program: Program, tmp_path: Path) -> None:
    job = slurm.submit(
        LaunchSpec(pilot_id="j2", argv=program.argv("j2", exit_code=3), working_directory=str(tmp_path / "w"))
    )
    status = final(slurm, job)
    assert (status.state, status.exit_code) == (JobState.FAILED, 3)
    assert "FAILED" in (status.reason or "")


def test_job_cancelled_by_the_batch_system_is_canceled(
    slurm: BatchLauncher, slurm_cluster: SlurmCluster, program: Program, tmp_path: Path
) -> None:
    job = slurm.submit(
        LaunchSpec(pilot_id="j3", argv=program.argv("j3", hold=True), working_directory=str(tmp_path / "w"))
    )
    wait_until(lambda: program.started("j3"), SLURM_WAIT, "the batch job to start")
    assert slurm.status([job])[job].state is JobState.RUNNING
    done = slurm_cluster.run("scancel", job)  # from outside, as an administrator or the system would
    assert done.returncode == 0, done.stderr
    status = final(slurm, job)
    assert status.state is JobState.CANCELED
    assert "CANCELLED" in (status.reason or "")


def test_cancel_through_the_launcher(
    slurm: BatchLauncher, slurm_cluster: SlurmCluster, program: Program, tmp_path: Path
) -> None:
    job = slurm.submit(  # a pilot id as the services make them
        LaunchSpec(pilot_id="pilot-0a1b2c", argv=program.argv("j4", hold=True), working_directory=str(tmp_path / "w"))
    )
    assert slurm_cluster.run("squeue", "-h", "-j", job, "-o", "%j").stdout.strip() == "pilot-0a1b2c"  # not pilot-pilot-
    slurm.cancel(job)  # pending or running: either way it ends canceled
    assert final(slurm, job).state is JobState.CANCELED
    slurm.cancel(job)  # already ended: no error


def test_job_unknown_to_slurm_is_never_running(
    slurm: BatchLauncher, program: Program, tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    answer = slurm.status(["987654", "not-a-job"])
    assert answer["987654"].state is JobState.UNKNOWN
    assert answer["not-a-job"].state is JobState.UNKNOWN
    # A job the controller forgot is read from the jobcomp log: copy a real record under a new id.
    job = slurm.submit(
        LaunchSpec(pilot_id="j5", argv=program.argv("j5", exit_code=4), working_directory=str(tmp_path / "w"))
    )
    assert final(slurm, job).exit_code == 4
    record = wait_until(
        lambda: next(
            (
                line
                for line in slurm_cluster.jobcomp.read_text().splitlines()
                if line.startswith(f"JobId={job} ")
            ),
            None,
        ),
        10,
        "the jobcomp record",
    )
    log = tmp_path / "jobcomp.txt"
    log.write_text(record.replace(f"JobId={job} ", "JobId=987655 ", 1) + "\n")
    other = launcher_for("slurm://localhost", slurm_conf=str(slurm_cluster.conf), jobcomp=str(log))
    status = other.status(["987655"])["987655"]
    assert (status.state, status.exit_code) == (JobState.FAILED, 4)


def test_bad_partition_is_a_launch_error(slurm: BatchLauncher, tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=r"slurm://localhost: sbatch rejected pilot j6"):
        slurm.submit(
            LaunchSpec(
                pilot_id="j6", argv=["true"], working_directory=str(tmp_path / "w"), queue="no-such-partition"
            )
        )


def test_slurm_over_ssh(
    slurm_cluster: SlurmCluster, sshd_server: SshServer, program: Program, tmp_path: Path
) -> None:
    launcher = launcher_for(
        f"slurm+ssh://{sshd_server.user}@127.0.0.1:{sshd_server.port}",
        slurm_conf=str(slurm_cluster.conf),
        key_filename=str(sshd_server.key_file),
        known_hosts=str(sshd_server.known_hosts),
    )
    try:
        work = tmp_path / "ssh-work"
        job = launcher.submit(
            LaunchSpec(
                pilot_id="j7",
                argv=program.argv("j7", env="PDATA_NAMESPACE"),
                working_directory=str(work),
                env={"PDATA_NAMESPACE": "ns1"},
            )
        )
        status = final(launcher, job)
        assert (status.state, status.exit_code) == (JobState.DONE, 0)
        assert program.started_text("j7") == "ns1"
        control = next((work / ".pdata-launch").iterdir())
        assert stat.S_IMODE((control / "env").stat().st_mode) == 0o600
    finally:
        launcher.close()


def test_slurm_url_checks(slurm_cluster: SlurmCluster) -> None:
    with pytest.raises(LaunchError, match="slurm\\+ssh"):
        launcher_for("slurm://login.example.org")
    with pytest.raises(LaunchError, match="key_filename"):
        launcher_for("slurm://localhost", key_filename="/x")
    with pytest.raises(LaunchError, match="Python interpreter '/nonexistent/python3' not found on this host"):
        launcher_for("slurm://localhost", python="/nonexistent/python3").submit(
            LaunchSpec(pilot_id="j8", argv=["true"], working_directory="/nonexistent/never-created")
        )
    with pytest.raises(LaunchError, match="squeue not found on this host"):
        launcher_for("slurm://localhost", env={"PATH": "/nonexistent"}).status(["1"])
