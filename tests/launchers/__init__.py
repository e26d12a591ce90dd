"""Tests of the pilot launchers (fork, ssh, slurm, slurm+ssh) against real processes, sshd and SLURM."""
