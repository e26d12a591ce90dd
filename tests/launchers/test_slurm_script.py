"""The SLURM job script and the parsers of sbatch / squeue / scontrol / jobcomp output (no cluster)."""

from __future__ import annotations

import pytest

from pilotdata.errors import LaunchError
from pilotdata.launchers import JobState, JobStatus, LaunchSpec
from pilotdata.launchers._runner import LocalRunner
from pilotdata.launchers.batch import BatchJob, Slurm
from pilotdata.launchers.batch.slurm import (
    map_state,
    parse_jobcomp,
    parse_sbatch_output,
    parse_scontrol_job,
    parse_squeue,
)
from pilotdata.launchers.batch.system import env_file_text


def slurm(**options: object) -> Slurm:
    return Slurm(LocalRunner(), "slurm://localhost", {}, **options)  # type: ignore[arg-type]


def directives(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_script_maps_every_description_key() -> None:
    spec = LaunchSpec(
        pilot_id="pilot-7",
        argv=["python3", "-m", "agent", "--pilot", "pilot-7"],
        working_directory="/ignored",
        env={"PDATA_URL": "redis://:pw@h/0"},
        number_of_processes=8,
        processes_per_node=4,
        walltime_minutes=90.5,
        queue="normal",
        project="TG-123",
    )
    job = BatchJob.at(spec, "/scratch/u/run", control_dir="/scratch/u/run/.ctl", directives=("--exclusive",))
    script = slurm(sbatch_options=["--mem=2G"]).render(job)
    assert script.startswith("#!/bin/bash\n")
    assert directives(script) == [
        "--job-name=pilot-7",  # not pilot-pilot-7
        "--ntasks=8",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--no-kill",  # a failed node must not end the pilot's other nodes
        "--time=91",
        "--partition=normal",
        "--account=TG-123",
        "--chdir=/scratch/u/run",
        "--output=/scratch/u/run/pilot-7.stdout",
        "--error=/scratch/u/run/pilot-7.stderr",
        "--mem=2G",
        "--exclusive",
    ]
    body = script.splitlines()
    assert "cd /scratch/u/run || exit 1" in body
    assert ". /scratch/u/run/.ctl/env" in body
    assert "python3 -m agent --pilot pilot-7" in body
    assert "pw@" not in script  # secrets live in the env file only
    assert "/scratch/u/run/.ctl/exit_code" in script


def test_script_omits_unset_keys_and_quotes_spaces() -> None:
    spec = LaunchSpec(pilot_id="p", argv=["echo", "it's"], working_directory="/x", stdout="my out.txt")
    script = slurm().render(BatchJob.at(spec, "/data/my runs", control_dir="/data/my runs/.c"))
    assert directives(script) == [
        "--job-name=pilot-p",
        "--ntasks=1",
        '--chdir="/data/my runs"',
        '--output="/data/my runs/my out.txt"',
        '--error="/data/my runs/p.stderr"',
    ]
    assert "echo 'it'\"'\"'s'" in script
    assert "\n. " not in script  # no env file to source


@pytest.mark.parametrize("bad", [["mem=2G"], ["--a\n--b"]])
def test_bad_extra_directive(bad: list[str]) -> None:
    job = BatchJob.at(LaunchSpec(pilot_id="p", argv=["true"], working_directory="/x"), "/x")
    with pytest.raises(LaunchError, match="sbatch_options"):
        slurm(sbatch_options=bad).render(job)
    with pytest.raises(LaunchError, match="directives"):
        slurm().render(BatchJob.at(job.spec, "/x", directives=tuple(bad)))


def test_quote_in_directive_value_is_rejected() -> None:
    spec = LaunchSpec(pilot_id="p", argv=["true"], working_directory="/x", queue='a"b')
    with pytest.raises(LaunchError, match="queue"):
        slurm().render(BatchJob.at(spec, "/x"))


def test_walltime_rounds_up_to_whole_minutes() -> None:
    spec = LaunchSpec(pilot_id="p", argv=["true"], working_directory="/x", walltime_minutes=0.1)
    assert "--time=1" in directives(slurm().render(BatchJob.at(spec, "/x")))


def test_env_file_text_is_shell_quoted() -> None:
    assert env_file_text({"A": "x y", "B": "it's"}) == "export A='x y'\nexport B='it'\"'\"'s'\n"


def test_parse_sbatch_output() -> None:
    assert parse_sbatch_output("42\n") == "42"
    assert parse_sbatch_output("42;cluster-a\n") == "42"
    assert parse_sbatch_output("sbatch: warning: something\n43\n") == "43"
    for bad in ("", "Submitted batch job x"):
        with pytest.raises(ValueError):
            parse_sbatch_output(bad)


@pytest.mark.parametrize(
    ("slurm_state", "ours"),
    [
        ("PENDING", JobState.PENDING),
        ("CONFIGURING", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETING", JobState.RUNNING),
        ("COMPLETED", JobState.DONE),
        ("FAILED", JobState.FAILED),
        ("TIMEOUT", JobState.FAILED),
        ("NODE_FAIL", JobState.FAILED),
        ("OUT_OF_MEMORY", JobState.FAILED),
        ("BOOT_FAIL", JobState.FAILED),
        ("PREEMPTED", JobState.FAILED),
        ("CANCELLED", JobState.CANCELED),
        ("CANCELLED by 0", JobState.CANCELED),
        ("SOMETHING_NEW", JobState.UNKNOWN),
    ],
)
def test_state_mapping(slurm_state: str, ours: JobState) -> None:
    assert map_state(slurm_state) is ours


def test_parse_squeue_and_scontrol() -> None:
    assert parse_squeue("12 PENDING Resources\n13 RUNNING None\n") == {
        "12": ("PENDING", "Resources"),
        "13": ("RUNNING", "None"),
    }
    line = (
        "JobId=5 JobName=x UserId=root(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) "
        "ExitCode=0:15 RunTime=00:01:00"
    )
    assert parse_scontrol_job(line) == JobStatus(JobState.FAILED, -15, "SLURM state TIMEOUT (TimeLimit)")
    done = parse_scontrol_job("JobId=6 JobState=COMPLETED Reason=None ExitCode=0:0")
    assert done == JobStatus(JobState.DONE, 0, None)
    assert parse_scontrol_job("no state here") is None


def test_parse_jobcomp_takes_the_last_record() -> None:
    text = (
        "JobId=7 UserId=root(0) Name=a JobState=NODE_FAIL ExitCode=0:0\n"
        "JobId=70 UserId=root(0) Name=b JobState=COMPLETED ExitCode=0:0\n"
        "JobId=7 UserId=root(0) Name=a JobState=COMPLETED ExitCode=0:0\n"
    )
    assert parse_jobcomp(text, "7") == JobStatus(JobState.DONE, 0, None)
    assert parse_jobcomp(text, "8") is None
