"""Fixtures for the launcher tests: real SLURM (one and two nodes), Grid Engine, the PBS wrappers, the test program."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.launchers.program import Program
from tests.netns_harness import require_netns
from tests.pbs_harness import torque_wrappers
from tests.sge_harness import SgeCluster, start_sge
from tests.slurm2_harness import Slurm2Cluster, start_slurm2
from tests.slurm_harness import SlurmCluster, start_slurm


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """munged + slurmctld + slurmd on loopback for the session; ``SLURM_CONF`` set in ``os.environ``."""
    cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        cluster.stop()


@pytest.fixture(scope="session")
def sge_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SgeCluster]:
    """sge_qmaster + sge_execd in a network namespace for the session (skipped without root / netns)."""
    require_netns()
    cluster = start_sge(tmp_path_factory.mktemp("sge"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def program(tmp_path: Path) -> Program:
    """The controllable test command (writes a start file, waits for a release file, exits)."""
    return Program(tmp_path / "prog")


@pytest.fixture(scope="session")
def torque_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the qsub/qstat/qdel wrappers of slurm-wlm-torque (unpacked, not installed) and sbatch."""
    return torque_wrappers(tmp_path_factory.mktemp("torque"))


@pytest.fixture(scope="session")
def slurm2_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm2Cluster]:
    """A two-node SLURM (slurmctld on a bridge, a slurmd per network namespace) for the session."""
    require_netns()
    cluster = start_slurm2(tmp_path_factory.mktemp("slurm2"))
    try:
        yield cluster
    finally:
        cluster.stop()
