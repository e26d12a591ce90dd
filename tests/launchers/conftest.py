"""Fixtures for the launcher tests: a real single-node SLURM cluster and the test program."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.launchers.program import Program
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


@pytest.fixture
def program(tmp_path: Path) -> Program:
    """The controllable test command (writes a start file, waits for a release file, exits)."""
    return Program(tmp_path / "prog")
