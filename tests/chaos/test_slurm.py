"""A real SLURM pilot reaches its 1-minute walltime with a CU running (one pilot per backend, side by
side on the single-node cluster): the agent hands the CU back before the limit, ends Done, and a
second pilot completes it; the batch job ends and leaves no process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.conftest import make_lab
from tests.chaos.scenarios import slurm_walltime
from tests.slurm_harness import SlurmCluster, start_slurm


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A real single-node SLURM cluster for this module."""
    cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


def test_a_slurm_pilot_reaching_its_walltime_hands_back_its_running_cu(slurm: SlurmCluster, tmp_path: Path) -> None:
    labs = [make_lab(backend, tmp_path / backend) for backend in ("redis", "sqlite")]
    try:
        outcomes = slurm_walltime(labs, slurm)
    finally:
        for lab in labs:
            lab.close()
            if lab.redis is not None:
                lab.redis.stop()
    for outcome in outcomes:
        assert outcome.problems() == [], outcome.row()
        assert outcome.reexecuted == 1  # the long CU: cut short at the walltime, run again elsewhere
        assert outcome.detection_s is not None and outcome.detection_s < 0  # handed back before the limit
