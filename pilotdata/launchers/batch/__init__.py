"""The batch layer: one launcher (:class:`BatchLauncher`) for every batch system (:class:`BatchSystem`).

==================================  =======================  =====================================
schemes (each also ``+ssh``)        system                   commands
==================================  =======================  =====================================
``slurm``                           :class:`Slurm`           sbatch, squeue, scontrol, scancel
``pbs``, ``torque``, ``pbspro``     :class:`Pbs`             qsub, qstat -f, qdel
``sge``                             :class:`Sge`             qsub, qstat -xml, qacct, qdel
``lsf``                             :class:`Lsf`             bsub, bjobs, bkill
==================================  =======================  =====================================

Why our own layer and not PSI/J (``psij-python``, ExaWorks), the maintained successor of the SAGA
job API: its batch executors write ``job.spec.environment`` into the job script (``export
NAME=value``; ``#BSUB -env`` for LSF), so the coordination URL's password would sit in a file the
batch system copies into its spool and shows in ``bjobs -l``; every batch executor starts a
process-wide UDP listener bound to all addresses for status messages from the jobs; commands and
scripts live only on this host (no login node over SSH); status arrives from a background thread
polling every 30 s as callbacks, not as one answer for a batch of ids; a job the queue no longer
lists counts as completed; and it has no Grid Engine executor. What we needed from it, a table of
directives and one of states per system, is a few dozen lines per system here.
"""

from pilotdata.launchers.batch.launcher import COMMON_OPTIONS, SCHEMES, SYSTEMS, BatchLauncher
from pilotdata.launchers.batch.lsf import Lsf
from pilotdata.launchers.batch.pbs import Pbs
from pilotdata.launchers.batch.sge import Sge
from pilotdata.launchers.batch.slurm import Slurm
from pilotdata.launchers.batch.system import BatchJob, BatchSystem, job_name

__all__ = [
    "COMMON_OPTIONS",
    "SCHEMES",
    "SYSTEMS",
    "BatchJob",
    "BatchLauncher",
    "BatchSystem",
    "Lsf",
    "Pbs",
    "Sge",
    "Slurm",
    "job_name",
]
