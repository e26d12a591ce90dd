"""PBS-style ``qsub``/``qstat``/``qdel`` for the tests: the wrappers of Debian's ``slurm-wlm-torque`` over a real SLURM.

No PBS or Torque server is packaged for Debian. ``slurm-wlm-torque`` turns PBS commands into SLURM
ones (``qsub`` runs ``sbatch``, which reads the ``#PBS`` lines: ``-l nodes=N:ppn=C`` becomes
``-N N --ntasks-per-node C``), but it conflicts with gridengine-client, so it is not installed:
its ``.deb`` (downloaded by ``scripts/setup --test`` into :func:`deb_cache`) is unpacked with
``dpkg -x`` into a directory of the harness's own. Its Perl scripts need ``libslurm-perl``,
``libslurmdb-perl`` and ``libswitch-perl`` (installed by ``scripts/setup --test``) and find
``sbatch`` next to themselves, so :func:`torque_wrappers` makes a ``bin`` directory with both.

What differs from PBS itself (so a test never mistakes the wrappers for it): ``PBS_JOBID`` and
``PBS_NODEFILE`` are not set in the job; ``qstat -f`` prints no ``exit_status`` (the launcher reads
the exit code its job script wrote); ``qsub`` overrides the script's ``#PBS -o``/``-e`` unless they
are given on its command line; ``qdel`` of an ended job fails silently with status 1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

WRAPPERS = ("qsub", "qstat", "qdel")
SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "srun", "salloc", "scontrol")
PERL_MODULES = {"Slurm": "libslurm-perl", "Slurmdb": "libslurmdb-perl", "Switch": "libswitch-perl"}


def deb_cache() -> Path:
    """Where ``scripts/setup --test`` puts ``slurm-wlm-torque_*.deb`` (``$XDG_CACHE_HOME/pilot-data/debs``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pilot-data" / "debs"


def find_torque_deb() -> Path:
    """The downloaded ``slurm-wlm-torque`` package; ``RuntimeError`` naming the fix when it is missing."""
    for directory in (deb_cache(), Path("/var/cache/apt/archives")):
        found = sorted(directory.glob("slurm-wlm-torque_*.deb"))
        if found:
            return found[-1]
    raise RuntimeError(
        f"slurm-wlm-torque_*.deb not found in {deb_cache()}: run scripts/setup --test (it downloads it with "
        "apt-get download for dpkg -x; installing it would remove gridengine-client)"
    )


def torque_wrappers(directory: Path) -> Path:
    """Unpack the wrappers into ``directory`` and return a ``bin`` directory holding them and the SLURM commands.

    Put it first on ``PATH`` (with ``SLURM_CONF`` set) for the ``pbs://`` launcher.
    """
    inc = subprocess.run(["perl", "-e", 'print join("\\n", @INC)'], capture_output=True, text=True, timeout=30).stdout
    search = [*inc.split(), "/usr/lib/x86_64-linux-gnu/perl/5.36.0"]  # the wrappers' own "use lib"
    for module, package in PERL_MODULES.items():  # loading Slurm.pm would already need a slurm.conf
        if not any(Path(d, f"{module}.pm").exists() for d in search):
            raise RuntimeError(f"Perl module {module} missing: install the Debian package {package} (setup does)")
    unpacked = directory / "slurm-wlm-torque"
    subprocess.run(["dpkg", "-x", str(find_torque_deb()), str(unpacked)], check=True, capture_output=True, timeout=60)
    bindir = directory / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name in WRAPPERS:
        (bindir / name).symlink_to(unpacked / "usr" / "bin" / name)
    for name in SLURM_COMMANDS:  # the wrappers call ${FindBin::Bin}/sbatch
        real = shutil.which(name)
        if real is None:
            raise RuntimeError(f"{name} not found: install the Debian package slurm-client (scripts/setup does)")
        (bindir / name).symlink_to(real)
    return bindir
