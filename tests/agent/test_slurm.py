"""The agent inside a real SLURM allocation launches MPI CUs with ``srun --mpi=pmix``.

A single-node SLURM cluster (munged + slurmctld + slurmd on loopback, ``tests/slurm_harness.py``)
runs the agent as a batch job (``sbatch -n 2``), so ``SLURM_JOB_ID`` is set and srun offers pmix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata.coordination import connect
from pilotdata.states import Kind
from tests.agent.harness import REPO, cu_events, submit, wait_final
from tests.servers import require_binary, wait_until
from tests.slurm_harness import SlurmCluster, start_slurm


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A real single-node SLURM cluster for this module."""
    cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


def test_mpi_cu_inside_a_slurm_allocation_uses_srun_with_pmix(slurm: SlurmCluster, tmp_path: Path) -> None:
    mpicc = require_binary("mpicc", "libopenmpi-dev")
    source = tmp_path / "ranks.c"
    source.write_text(
        "#include <mpi.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
        "int main(int argc, char **argv) { int rank, size; MPI_Init(&argc, &argv);\n"
        "  MPI_Comm_rank(MPI_COMM_WORLD, &rank); MPI_Comm_size(MPI_COMM_WORLD, &size);\n"
        '  const char *step = getenv("SLURM_STEP_ID");\n'
        '  printf("rank %d of %d step %s\\n", rank, size, step ? step : "none");\n'
        "  MPI_Finalize(); return 0; }\n"
    )
    subprocess.run([mpicc, "-o", str(tmp_path / "ranks"), str(source)], check=True, timeout=120)

    url, ns, pilot = f"sqlite:///{tmp_path / 'coord.sqlite'}", "s" + uuid.uuid4().hex[:10], "slurm-pilot"
    with connect(url, ns) as coord:
        coord.create(Kind.PILOT, pilot, {})
        coord.transition(Kind.PILOT, pilot, "Pending")
        submit(
            coord,
            "mpi",
            {"executable": str(tmp_path / "ranks"), "number_of_processes": 2, "spmd_variation": "mpi"},
        )
        env = {
            **os.environ,
            **slurm.env(),
            "PDATA_URL": url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        agent_argv = [
            sys.executable, "-m", "agent", "--pilot", pilot, "--namespace", ns,
            "--workdir", str(tmp_path / "work"), "--slots", "2", "--heartbeat-ttl", "1.5",
        ]
        log = tmp_path / "agent.log"
        submitted = subprocess.run(
            ["sbatch", "--parsable", "-n", "2", "-o", str(log), "--chdir", str(REPO),
             "--wrap", "exec " + " ".join(agent_argv)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip().split(";")[0]
        try:
            state = wait_final(coord, "mpi", timeout=90)
            assert state == "Done", log.read_text() if log.exists() else "no agent log"
            out = (tmp_path / "work" / "mpi" / "stdout").read_text().splitlines()
            assert sorted(line.rsplit(" step", 1)[0] for line in out) == ["rank 0 of 2", "rank 1 of 2"]
            assert all("step none" not in line for line in out)  # ranks ran as a SLURM job step
            running = next(e for e in cu_events(coord, "mpi") if e.to_state == "Running")
            assert running.detail["launcher"] == "srun"
            coord.transition(Kind.PILOT, pilot, "Canceled", detail={"reason": "test over"})
            wait_until(
                lambda: job_id not in slurm.run("squeue", "-h", "-o", "%i").stdout.split(),
                60,
                f"batch job {job_id} to end",
            )
            assert "pilot slurm-pilot stopping: pilot moved to Canceled by a client" in log.read_text()
        finally:
            slurm.run("scancel", job_id)
