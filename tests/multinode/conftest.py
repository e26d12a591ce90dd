"""Fixtures of the multi-node tests: the two-node SLURM of the launcher tests (one per session here too)."""

from tests.launchers.conftest import slurm2_cluster

__all__ = ["slurm2_cluster"]
