"""sge:// against a real Grid Engine (gridengine 8.1.9: qmaster and execd in a network namespace)."""

from __future__ import annotations

import logging
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilotdata import ComputeDataService, PilotComputeService, State
from pilotdata.errors import LaunchError
from pilotdata.launchers import JobState, JobStatus, Launcher, LaunchSpec, launcher_for
from pilotdata.launchers.batch import BatchLauncher, Sge
from pilotdata.services import FailurePolicy
from pilotdata.session import Session
from tests.launchers.jobs import wait_final
from tests.launchers.program import Program
from tests.servers import start_redis, wait_until
from tests.sge_harness import SgeCluster

SECRET_URL = "redis://:sge-s3cret@127.0.0.1:6399/0"
SGE_WAIT = 45.0


def sge_launcher(cluster: SgeCluster, **options: Any) -> BatchLauncher:
    launcher = launcher_for("sge://localhost", env=cluster.env(), **options)
    assert isinstance(launcher, BatchLauncher) and isinstance(launcher.system, Sge)
    return launcher


@pytest.fixture
def sge(sge_cluster: SgeCluster) -> Iterator[BatchLauncher]:
    launcher = sge_launcher(sge_cluster, python=sys.executable, parallel_environment="smp")
    yield launcher
    launcher.close()


def final(launcher: Launcher, job: str, seen: list[JobState] | None = None) -> JobStatus:
    return wait_final(launcher, job, SGE_WAIT, "SGE", seen)


def test_cluster_is_up(sge_cluster: SgeCluster) -> None:
    assert sge_cluster.queue_ready()
    assert sge_cluster.startup_seconds < 20


def test_job_runs_with_its_slots_and_is_done(
    sge: BatchLauncher, sge_cluster: SgeCluster, program: Program, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    spec = LaunchSpec(
        pilot_id="pilot-0e1",
        argv=program.argv("e1", hold=True, env="PDATA_URL"),
        working_directory=str(work),
        env={"PDATA_URL": SECRET_URL},
        number_of_processes=2,
        walltime_minutes=5,
        queue=sge_cluster.queue,
    )
    job = sge.submit(spec)
    assert job.isdigit()
    seen = [sge.status([job])[job].state]
    wait_until(lambda: program.started("e1"), SGE_WAIT, "the SGE job to start")
    assert program.started_text("e1") == SECRET_URL  # the env file reached the job
    assert sge.status([job])[job].state is JobState.RUNNING
    listing = sge_cluster.run("qstat", "-xml").stdout
    assert "<JB_name>pilot-0e1</JB_name>" in listing  # not pilot-pilot-0e1
    assert "<slots>2</slots>" in listing  # -pe smp 2
    details = sge_cluster.run("qstat", "-j", job).stdout
    assert "h_rt=300" in details and "smp" in details
    # the secret is in a mode-600 env file only: not in the script, not in what the scheduler shows
    control = next((work / ".pdata-launch").iterdir())
    assert stat.S_IMODE((control / "env").stat().st_mode) == 0o600
    assert "s3cret" not in (control / "job.sh").read_text()
    assert "s3cret" not in details
    program.release("e1")
    status = final(sge, job, seen)
    assert (status.state, status.exit_code) == (JobState.DONE, 0)
    assert "e1 finished" in (work / "pilot-0e1.stdout").read_text()
    assert seen[0] in (JobState.PENDING, JobState.RUNNING)


def test_exit_code_comes_from_accounting(sge_cluster: SgeCluster, program: Program, tmp_path: Path) -> None:
    sge = sge_launcher(sge_cluster)
    job = sge.submit(LaunchSpec(pilot_id="e2", argv=program.argv("e2", exit_code=3), working_directory=str(tmp_path)))
    wait_until(lambda: not sge.system.poll([job]), SGE_WAIT, "the job to leave the queue")
    other = sge_launcher(sge_cluster)  # another process: no control directory to read, only qacct
    status = wait_until(lambda: (s := other.status([job])[job]).is_final and s, 15, "the accounting record")
    assert (status.state, status.exit_code) == (JobState.FAILED, 3)


def test_cancel_running_and_pending_jobs(sge: BatchLauncher, program: Program, tmp_path: Path) -> None:
    running = sge.submit(LaunchSpec(pilot_id="e3", argv=program.argv("e3", hold=True), working_directory=str(tmp_path)))
    held = launcher_for("sge://localhost", env=sge.system.client_env, directives=["-h"])  # stays queued (held)
    pending = held.submit(LaunchSpec(pilot_id="e4", argv=program.argv("e4"), working_directory=str(tmp_path)))
    wait_until(lambda: program.started("e3"), SGE_WAIT, "the SGE job to start")
    waiting = held.status([pending])[pending]
    assert waiting.state is JobState.PENDING and "held" in (waiting.reason or "")
    sge.cancel(running)
    held.cancel(pending)
    assert final(sge, running).state is JobState.CANCELED
    assert final(held, pending).state is JobState.CANCELED  # removed before it ran: no accounting record
    assert not program.started("e4")
    sge.cancel(running)  # already ended: no error


def test_qdel_from_outside_and_walltime_fail_the_job(
    sge_cluster: SgeCluster, program: Program, tmp_path: Path
) -> None:
    sge = sge_launcher(sge_cluster)
    killed = sge.submit(LaunchSpec(pilot_id="e5", argv=program.argv("e5", hold=True), working_directory=str(tmp_path)))
    short = sge_launcher(sge_cluster, directives=["-l h_rt=0:0:2"])  # a walltime shorter than a minute
    timed = short.submit(LaunchSpec(pilot_id="e6", argv=program.argv("e6", hold=True), working_directory=str(tmp_path)))
    wait_until(lambda: program.started("e5") and program.started("e6"), SGE_WAIT, "both jobs to start")
    assert sge_cluster.run("qdel", killed).returncode == 0  # as an administrator would
    by_admin, by_limit = final(sge, killed), final(short, timed)
    assert (by_admin.state, by_admin.exit_code) == (JobState.FAILED, -9)
    assert "assumedly after job" in (by_admin.reason or "")
    assert (by_limit.state, by_limit.exit_code) == (JobState.FAILED, -9)
    assert "h_rt" in (by_limit.reason or "")


def test_status_of_many_jobs_is_one_qstat(sge: BatchLauncher, program: Program, tmp_path: Path) -> None:
    jobs = [
        sge.submit(LaunchSpec(pilot_id=f"m{i}", argv=program.argv(f"m{i}", hold=True), working_directory=str(tmp_path)))
        for i in range(3)
    ]
    calls: list[str] = []
    run = sge.system.run

    def spy(*argv: str, **kw: Any) -> Any:
        calls.append(argv[0])
        return run(*argv, **kw)

    sge.system.run = spy  # type: ignore[method-assign]
    answer = sge.status(jobs)
    assert {s.state for s in answer.values()} <= {JobState.PENDING, JobState.RUNNING}
    assert calls == ["qstat"]
    sge.system.run = run  # type: ignore[method-assign]
    for job in jobs:
        sge.cancel(job)
    assert all(final(sge, job).state is JobState.CANCELED for job in jobs)


def test_slots_need_a_parallel_environment_that_fits(
    sge_cluster: SgeCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = LaunchSpec(pilot_id="e7", argv=["true"], working_directory=str(tmp_path / "w"), number_of_processes=2)
    with pytest.raises(LaunchError, match="parallel_environment"):
        sge_launcher(sge_cluster).submit(spec)
    two_nodes = LaunchSpec(
        pilot_id="e8", argv=["true"], working_directory=str(tmp_path / "w"), number_of_processes=2,
        processes_per_node=1,
    )
    with pytest.raises(LaunchError, match=r"'smp' puts all slots on one host \(\$pe_slots\)"):
        sge_launcher(sge_cluster, parallel_environment="smp").submit(two_nodes)
    with pytest.raises(LaunchError, match=r"qsub rejected pilot e7: .*nosuch"):
        sge_launcher(sge_cluster, parallel_environment="nosuch").submit(spec)
    assert sge_cluster.run("qstat").stdout.strip() == ""  # nothing was submitted
    fill_up = sge_launcher(sge_cluster, parallel_environment="mpi")
    with caplog.at_level(logging.WARNING, logger="pilotdata.launchers.batch.sge"):
        job = fill_up.submit(two_nodes)
    assert "1 per node is not enforced" in caplog.text
    assert final(fill_up, job).state is JobState.DONE


def test_unreachable_qmaster_is_a_clear_error(sge_cluster: SgeCluster, tmp_path: Path) -> None:
    down = launcher_for("sge://localhost", env={**sge_cluster.env(), "SGE_QMASTER_PORT": "1"})  # nobody there
    with pytest.raises(LaunchError, match=r"^sge://localhost: qstat failed: .*unable to send message to qmaster"):
        down.status(["1"])
    work = tmp_path / "w"
    with pytest.raises(LaunchError, match=r"^sge://localhost: qsub rejected pilot e9: .*qmaster"):
        down.submit(LaunchSpec(pilot_id="e9", argv=["true"], working_directory=str(work)))
    assert "e9" not in sge_cluster.run("qstat", "-xml").stdout


def test_sge_client_missing_is_a_clear_error(tmp_path: Path) -> None:
    launcher = launcher_for("sge://localhost", env={"PATH": "/nonexistent"})
    with pytest.raises(LaunchError, match="qstat not found on this host"):
        launcher.status(["1"])


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_pilot_on_sge_runs_compute_units(
    backend: str, sge_cluster: SgeCluster, tmp_path: Path, namespace: str
) -> None:
    """A BigJob-style pilot with ``sge://``: the agent runs as an SGE job inside the cluster's namespace
    and reaches the coordination store (the shared SQLite file, or Redis on the bridge's root address)."""
    redis = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'coord.sqlite'}"
    else:
        bind = ["--bind", "127.0.0.1", sge_cluster.gateway]  # jobs in the namespace reach the bridge address
        redis = start_redis(tmp_path / "redis", password="pilot-s3cret", extra=bind)
        url = f"redis://:pilot-s3cret@{sge_cluster.gateway}:{redis.port}/0"
    session = Session(url, namespace=namespace, history_url=f"sqlite:///{tmp_path / 'history.sqlite'}")
    pcs = PilotComputeService(session=session, policy=FailurePolicy(heartbeat_ttl=5))
    try:
        pilot = pcs.create_pilot(
            {"service_url": "sge://localhost", "number_of_processes": 2, "walltime": 10,
             "working_directory": str(tmp_path / "pilot")},
            python=sys.executable, env=sge_cluster.env(), parallel_environment="smp",
        )
        assert pilot.wait(state=State.Running, timeout=60) == State.Running, pilot.get_details()
        job_id = pilot.get_details()["launcher"]["job_id"]
        cds = ComputeDataService(session=session)
        cds.add_pilot_compute_service(pcs)
        cus = [cds.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", f"echo {i} $(hostname) $JOB_ID"],
                                        "shell": False})
               for i in range(4)]
        cds.wait(timeout=60)
        for i, cu in enumerate(cus):
            details = cu.get_details()
            assert (cu.get_state(), details["pilot"]) == (State.Done, pilot.id)
            # ran inside the SGE job, on the execution host in the cluster's namespace
            assert (Path(details["sandbox"]) / "stdout").read_text() == f"{i} {sge_cluster.host} {job_id}\n"
        control = next((tmp_path / "pilot" / ".pdata-launch").iterdir())
        for shown in ((control / "job.sh").read_text(), sge_cluster.run("qstat", "-j", job_id).stdout):
            assert "s3cret" not in shown  # the password travels in the mode-600 env file only
        pcs.cancel_pilot(pilot.id)
        assert pilot.get_state() == State.Canceled
        wait_until(lambda: job_id not in sge_cluster.run("qstat").stdout, 30, "the pilot's SGE job to go")
    finally:
        pcs.cancel()
        session.close()
        if redis is not None:
            redis.stop()
