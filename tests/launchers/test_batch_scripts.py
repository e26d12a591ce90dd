"""The job scripts of PBS, SGE and LSF, and what every system's script shares (pure: no scheduler).

SLURM's script is in ``test_slurm_script.py``; the scripts met real schedulers in ``test_slurm.py``,
``test_slurm2.py``, ``test_sge.py`` and ``test_pbs.py`` (LSF cannot run here).
"""

from __future__ import annotations

import pytest

from pilotdata.errors import LaunchError
from pilotdata.launchers import LaunchSpec, launcher_for
from pilotdata.launchers._runner import LocalRunner
from pilotdata.launchers.batch import SYSTEMS, BatchJob, BatchLauncher, BatchSystem, Lsf, Pbs, Sge, job_name

WORK = "/scratch/u/run"


def full_spec(**kw: object) -> LaunchSpec:
    base: dict[str, object] = {
        "pilot_id": "pilot-7",
        "argv": ["python3", "-m", "agent", "--pilot", "pilot-7"],
        "working_directory": "/ignored",
        "env": {"PDATA_URL": "redis://:pw@h/0"},
        "number_of_processes": 8,
        "processes_per_node": 4,
        "walltime_minutes": 90.5,
        "queue": "normal",
        "project": "TG-123",
    }
    base.update(kw)
    return LaunchSpec(**base)  # type: ignore[arg-type]


def job(spec: LaunchSpec | None = None, **kw: object) -> BatchJob:
    return BatchJob.at(spec or full_spec(), WORK, control_dir=f"{WORK}/.ctl", **kw)


def lines(script: str, prefix: str) -> list[str]:
    return [line.removeprefix(prefix + " ") for line in script.splitlines() if line.startswith(prefix + " ")]


def system(cls: type[BatchSystem], **options: object) -> BatchSystem:
    return cls(LocalRunner(), f"{cls.name.lower()}://localhost", {}, **options)


def test_job_name_is_never_pilot_pilot() -> None:
    assert job_name("pilot-0a1b") == "pilot-0a1b"
    assert job_name("j1") == "pilot-j1"
    assert job_name("42") == "pilot-42"  # PBS and SGE names must start with a letter


def test_torque_script() -> None:
    script = system(Pbs).render(job())
    assert lines(script, "#PBS") == [
        "-N pilot-7",
        "-l nodes=2:ppn=4",
        "-l walltime=01:31:00",
        "-q normal",
        "-A TG-123",
        f"-o {WORK}/pilot-7.stdout",
        f"-e {WORK}/pilot-7.stderr",
    ]


def test_pbs_pro_script_and_single_node_default() -> None:
    pro = system(Pbs, pbs_flavor="pro").render(job())
    assert "-l select=2:ncpus=4:mpiprocs=4" in lines(pro, "#PBS")
    one_node = system(Pbs).render(job(full_spec(processes_per_node=None, number_of_processes=3)))
    assert "-l nodes=1:ppn=3" in lines(one_node, "#PBS")
    with pytest.raises(LaunchError, match="pbs_flavor"):
        system(Pbs, pbs_flavor="openlava")


def test_sge_script() -> None:
    script = system(Sge, parallel_environment="mpi").render(job())
    assert lines(script, "#$") == [
        "-N pilot-7",
        "-S /bin/bash",
        f"-wd {WORK}",
        f"-o {WORK}/pilot-7.stdout",
        f"-e {WORK}/pilot-7.stderr",
        "-pe mpi 8",
        "-q normal",
        "-P TG-123",
        "-l h_rt=01:31:00",
    ]
    single = system(Sge).render(job(full_spec(number_of_processes=1, processes_per_node=None)))
    assert not any(line.startswith("-pe") for line in lines(single, "#$"))  # one slot needs no PE
    with pytest.raises(LaunchError, match=r"8 slots.*parallel_environment="):
        system(Sge).render(job())
    with pytest.raises(LaunchError, match="not a PE name"):
        system(Sge, parallel_environment="smp 4")


def test_lsf_script() -> None:
    script = system(Lsf).render(job())
    assert lines(script, "#BSUB") == [
        "-J pilot-7",
        f"-cwd {WORK}",
        f"-o {WORK}/pilot-7.stdout",
        f"-e {WORK}/pilot-7.stderr",
        "-n 8",
        '-R "span[ptile=4]"',
        "-W 1:31",
        "-q normal",
        "-P TG-123",
    ]


@pytest.mark.parametrize("name", sorted(set(SYSTEMS)))
def test_every_script_keeps_secrets_out_and_records_the_exit_code(name: str) -> None:
    cls = SYSTEMS[name]
    options = {"parallel_environment": "smp"} if cls is Sge else {}
    script = system(cls, **options).render(job(directives=("-x",)))
    assert script.startswith("#!/bin/bash\n")
    body = script.splitlines()
    assert f"cd {WORK} || exit 1" in body
    assert f". {WORK}/.ctl/env" in body  # the env file (mode 600) holds PDATA_URL
    assert "python3 -m agent --pilot pilot-7" in body
    assert "pw@" not in script
    assert f"mv -f {WORK}/.ctl/exit_code.tmp {WORK}/.ctl/exit_code" in script
    assert body[-1] == 'exit "$rc"'
    assert f"{cls.prefix} -x" in body  # the launcher's extra directives come last among the directives


def test_values_that_would_break_a_directive_are_refused() -> None:
    for cls in (Pbs, Lsf):
        with pytest.raises(LaunchError, match="queue"):
            system(cls).render(job(full_spec(queue='a"b')))
    with pytest.raises(LaunchError, match="directives"):
        system(Pbs).render(job(directives=("-l mem=1G\n-q other",)))
    quoted = system(Lsf).render(job(full_spec(), project="my project"))
    assert '-P "my project"' in lines(quoted, "#BSUB")


def test_launcher_options_are_checked_per_system() -> None:
    with pytest.raises(LaunchError, match=r"option 'slurm_conf' is not for pbs://; pbs takes: .*pbs_flavor"):
        launcher_for("pbs://localhost", slurm_conf="/etc/slurm/slurm.conf")
    with pytest.raises(LaunchError, match="option 'parallel_environment' is not for lsf://"):
        launcher_for("lsf://localhost", parallel_environment="smp")
    with pytest.raises(LaunchError, match=r"known_hosts' needs sge\+ssh://host"):
        launcher_for("sge://localhost", known_hosts="/x")
    with pytest.raises(LaunchError, match=r"lsf:// uses this host's LSF client; use lsf\+ssh://login1"):
        launcher_for("lsf://login1")
    with pytest.raises(LaunchError, match="project and allocation"):
        launcher_for("pbs://localhost", project="a", allocation="b")
    with pytest.raises(LaunchError, match="list of options"):
        launcher_for("pbs://localhost", directives="-l mem=1G")


def test_allocation_is_the_project_when_the_description_names_none() -> None:
    launcher = launcher_for("pbs://localhost", allocation="TG-ALLOC")  # BigJob's key for the account
    assert isinstance(launcher, BatchLauncher)
    spec = full_spec(project=None)
    assert "-A TG-ALLOC" in lines(launcher.system.render(launcher.job_for(spec)), "#PBS")
    own = full_spec(project="TG-OWN")  # the description's project wins
    assert "-A TG-OWN" in lines(launcher.system.render(launcher.job_for(own)), "#PBS")
