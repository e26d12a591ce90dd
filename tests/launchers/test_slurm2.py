"""Multi-node batch jobs through the launchers on a real two-node SLURM (a slurmd per network namespace).

The pilot asks for nodes x cores per node (``number_of_processes=4, processes_per_node=2``); the job
script says ``--nodes=2 --ntasks-per-node=2`` (SLURM) or ``-l nodes=2:ppn=2`` (PBS, through the
slurm-wlm-torque wrappers), and the batch system gives the job both nodes. What the agent does with
them is the node-aware agent's business, not the launcher's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotdata.launchers import JobState, LaunchSpec, launcher_for
from tests.launchers.program import Program
from tests.servers import wait_until
from tests.slurm2_harness import Slurm2Cluster

WAIT = 45.0


def two_node_spec(name: str, program: Program, work: Path, env: str) -> LaunchSpec:
    return LaunchSpec(
        pilot_id=name, argv=program.argv(name, env=env), working_directory=str(work),
        number_of_processes=4, processes_per_node=2, walltime_minutes=5,
    )


def test_two_node_cluster_is_up(slurm2_cluster: Slurm2Cluster) -> None:
    assert slurm2_cluster.node_states() == {"node1": "idle", "node2": "idle"}


@pytest.mark.parametrize("scheme", ["slurm", "pbs"])
def test_pilot_gets_two_nodes(
    scheme: str, slurm2_cluster: Slurm2Cluster, torque_bin: Path, program: Program, tmp_path: Path
) -> None:
    env = {"SLURM_CONF": str(slurm2_cluster.conf)}
    if scheme == "pbs":
        env["PATH"] = f"{torque_bin}:/usr/bin:/bin"
    launcher = launcher_for(f"{scheme}://localhost", env=env)
    name = f"n{scheme}"
    job = launcher.submit(two_node_spec(name, program, tmp_path / "work", env="SLURM_JOB_NODELIST"))
    status = wait_until(lambda: (s := launcher.status([job])[job]).is_final and s, WAIT, "the two-node job to end")
    assert (status.state, status.exit_code) == (JobState.DONE, 0)
    assert program.started_text(name) == "node[1-2]"  # the batch script ran with both nodes allocated
    script = next((tmp_path / "work" / ".pdata-launch").iterdir()).joinpath("job.sh").read_text()
    expected = ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=2") if scheme == "slurm" else ("#PBS -l nodes=2:ppn=2",)
    assert all(line in script.splitlines() for line in expected)
    shown = slurm2_cluster.run("scontrol", "show", "job", "-o", job).stdout
    assert "NumNodes=2" in shown and "NumCPUs=4" in shown


def test_pbs_variables_are_not_set_by_the_wrappers(
    slurm2_cluster: Slurm2Cluster, torque_bin: Path, program: Program, tmp_path: Path
) -> None:
    launcher = launcher_for(
        "pbs://localhost", env={"SLURM_CONF": str(slurm2_cluster.conf), "PATH": f"{torque_bin}:/usr/bin:/bin"}
    )
    job = launcher.submit(two_node_spec("nfile", program, tmp_path / "work", env="PBS_NODEFILE"))
    wait_until(lambda: launcher.status([job])[job].is_final, WAIT, "the job to end")
    assert program.started_text("nfile") == "<unset>"  # the agent must read SLURM_* under these wrappers
