"""pbs:// and pbs+ssh:// through the qsub/qstat/qdel wrappers of slurm-wlm-torque over a real SLURM.

These are the PBS commands' interface, not a PBS server (none is packaged): the #PBS directives
reach SLURM through ``sbatch``, ``qstat -f`` shows no exit status, and ``PBS_JOBID`` is unset in
the job. The qstat / qsub formats of Torque and PBS Pro themselves are tested on recorded output
in ``test_pbs_lsf_parsers.py``.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilotdata.launchers import JobState, JobStatus, Launcher, LaunchSpec, launcher_for
from pilotdata.launchers.batch import BatchLauncher, Pbs
from tests.launchers.jobs import wait_final
from tests.launchers.program import Program
from tests.servers import SshServer, wait_until
from tests.slurm_harness import SlurmCluster

SECRET_URL = "redis://:pbs-s3cret@127.0.0.1:6399/0"
WAIT = 45.0


def client_env(torque_bin: Path, conf: Path) -> dict[str, str]:
    return {"PATH": f"{torque_bin}:/usr/bin:/bin", "SLURM_CONF": str(conf)}


@pytest.fixture
def pbs(slurm_cluster: SlurmCluster, torque_bin: Path) -> Iterator[BatchLauncher]:
    launcher = launcher_for("pbs://localhost", env=client_env(torque_bin, slurm_cluster.conf))
    assert isinstance(launcher, BatchLauncher) and isinstance(launcher.system, Pbs)
    yield launcher
    launcher.close()


def final(launcher: Launcher, job: str, seen: list[JobState] | None = None) -> JobStatus:
    return wait_final(launcher, job, WAIT, "PBS", seen)


def test_pbs_directives_reach_the_scheduler(
    pbs: BatchLauncher, slurm_cluster: SlurmCluster, program: Program, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    job = pbs.submit(
        LaunchSpec(
            pilot_id="pilot-0b1",
            argv=program.argv("b1", hold=True, env="PDATA_URL"),
            working_directory=str(work),
            env={"PDATA_URL": SECRET_URL},
            number_of_processes=2,
            walltime_minutes=5,
            queue=slurm_cluster.partition,
        )
    )
    assert job.isdigit()
    seen = [pbs.status([job])[job].state]
    wait_until(lambda: program.started("b1"), WAIT, "the PBS job to start")
    assert program.started_text("b1") == SECRET_URL
    shown = slurm_cluster.run("scontrol", "show", "job", "-o", job).stdout
    # -N, -l nodes=1:ppn=2, -l walltime, -q and -o arrived in SLURM through the wrappers
    for expected in ("JobName=pilot-0b1", "NumNodes=1", "NumCPUs=2", "TimeLimit=00:05:00", "Partition=debug",
                     f"StdOut={work}/pilot-0b1.stdout"):
        assert expected in shown
    control = next((work / ".pdata-launch").iterdir())
    assert stat.S_IMODE((control / "env").stat().st_mode) == 0o600
    assert "s3cret" not in (control / "job.sh").read_text() and "s3cret" not in shown
    assert "#PBS -l nodes=1:ppn=2" in (control / "job.sh").read_text()
    wait_until(lambda: pbs.status([job])[job].state is JobState.RUNNING, 10, "qstat to say R")
    program.release("b1")
    status = final(pbs, job, seen)
    assert (status.state, status.exit_code) == (JobState.DONE, 0)  # from the exit code the script wrote
    assert "b1 finished" in (work / "pilot-0b1.stdout").read_text()
    assert seen[0] in (JobState.PENDING, JobState.RUNNING)


def test_failure_cancel_and_what_another_process_sees(
    pbs: BatchLauncher, slurm_cluster: SlurmCluster, torque_bin: Path, program: Program, tmp_path: Path
) -> None:
    work = str(tmp_path)
    failing = pbs.submit(LaunchSpec(pilot_id="b2", argv=program.argv("b2", exit_code=3), working_directory=work))
    held = pbs.submit(LaunchSpec(pilot_id="b3", argv=program.argv("b3", hold=True), working_directory=work))
    failed = final(pbs, failing)
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3)
    wait_until(lambda: program.started("b3"), WAIT, "the second job to start")
    pbs.cancel(held)  # qdel
    assert final(pbs, held).state is JobState.CANCELED
    pbs.cancel(held)  # qdel of an ended job fails (status 1, no message): still no error
    # Another process has no exit-code file to read, and the wrappers' qstat shows no exit status:
    # an ended job reads failed with that reason rather than done or running.
    other = launcher_for("pbs://localhost", env=client_env(torque_bin, slurm_cluster.conf))
    guess = other.status([failing])[failing]
    assert guess.state is JobState.FAILED and "without an exit status" in (guess.reason or "")


def test_status_of_many_jobs_is_one_qstat(pbs: BatchLauncher, program: Program, tmp_path: Path) -> None:
    jobs = [
        pbs.submit(LaunchSpec(pilot_id=f"q{i}", argv=program.argv(f"q{i}", hold=True), working_directory=str(tmp_path)))
        for i in range(3)
    ]
    calls: list[tuple[str, ...]] = []
    run = pbs.system.run

    def spy(*argv: str, **kw: Any) -> Any:
        calls.append(argv)
        return run(*argv, **kw)

    pbs.system.run = spy  # type: ignore[method-assign]
    answer = pbs.status([*jobs, "987654"])
    pbs.system.run = run  # type: ignore[method-assign]
    assert calls == [("qstat", "-f", *jobs, "987654")]
    assert {answer[j].state for j in jobs} <= {JobState.PENDING, JobState.RUNNING}
    assert answer["987654"].state is JobState.UNKNOWN
    alone = pbs.status(["987655"])["987655"]  # qstat knows none of the ids: exit status 153, no error
    assert alone.state is JobState.UNKNOWN and "no longer knows" in (alone.reason or "")
    for job in jobs:
        pbs.cancel(job)
    assert all(final(pbs, job).state is JobState.CANCELED for job in jobs)


def test_pbs_over_ssh(
    slurm_cluster: SlurmCluster, sshd_server: SshServer, torque_bin: Path, program: Program, tmp_path: Path
) -> None:
    launcher = launcher_for(
        f"pbs+ssh://{sshd_server.user}@127.0.0.1:{sshd_server.port}",
        env=client_env(torque_bin, slurm_cluster.conf),
        key_filename=str(sshd_server.key_file),
        known_hosts=str(sshd_server.known_hosts),
        project="TG-0",  # BigJob's allocation: -A (the wrappers pass it to sbatch --account)
    )
    try:
        work = tmp_path / "ssh-work"
        job = launcher.submit(
            LaunchSpec(pilot_id="b4", argv=program.argv("b4", env="PDATA_NAMESPACE"), working_directory=str(work),
                       env={"PDATA_NAMESPACE": "ns1"})
        )
        status = final(launcher, job)
        assert (status.state, status.exit_code) == (JobState.DONE, 0)
        assert program.started_text("b4") == "ns1"
        assert "#PBS -A TG-0" in next((work / ".pdata-launch").iterdir()).joinpath("job.sh").read_text()
    finally:
        launcher.close()
