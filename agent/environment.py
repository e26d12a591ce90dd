"""The environment a CU runs with: an allow-list of the agent's, the agent's CU variables, the CU's own.

The agent's environment holds secrets: the coordination URL with its password (``PDATA_URL``), S3 keys
(``AWS_*``), SSH passphrases (``PDATA_SSH_PASSPHRASE``), batch-system tokens (``SLURM_JWT``). None of
them reaches a CU unless its description asks for it by name. A CU gets:

1. the agent's variables that a program needs to run on the resource (:func:`passed`): ``PATH``,
   ``HOME``, ``USER``, ``LOGNAME``, ``SHELL``, ``LANG``, ``LANGUAGE``, ``LC_*``, ``TZ``, ``TERM``,
   ``TMPDIR``/``TMP``/``TEMP``, ``HOSTNAME``, the library and module paths (``LD_LIBRARY_PATH``,
   ``PYTHONPATH``, ``MODULEPATH``, ...), a virtual or conda environment, the batch system's job
   variables (``SLURM_*``, ``PBS_*``, ``SGE_*`` and SGE's ``JOB_ID``/``NSLOTS``/``PE_HOSTFILE``...,
   ``LSB_*``/``LSF_*``), which MPI launchers read to find the allocation, and the MPI, OpenMP and math
   library settings (``OMPI_*``, ``PMIX_*``, ``PMI_*``, ``I_MPI_*``, ``OMP_*``, ``KMP_*``, ``MKL_*``,
   ``OPENBLAS_*``), and the GPU selection (``CUDA_VISIBLE_DEVICES``...). A name with ``PASSWORD``,
   ``PASSPHRASE``, ``SECRET``, ``TOKEN``, ``CREDENTIAL`` or ``JWT`` in it is never passed, whatever
   its prefix; nothing starting ``PDATA_`` or ``AWS_`` is;
2. ``PDATA_CU_ID``, ``PDATA_PILOT_ID``, ``PDATA_SANDBOX`` (set by the agent);
3. the CU's ``environment``, in order, each value with ``$NAME`` / ``${NAME}`` expanded from the CU's
   variables so far, then from the agent's *whole* environment (as BigJob's generated shell script
   did). This is how a CU asks for a secret: ``"environment": {"AWS_ACCESS_KEY_ID": "$AWS_ACCESS_KEY_ID",
   "AWS_SECRET_ACCESS_KEY": "$AWS_SECRET_ACCESS_KEY"}`` stores only the *names* in coordination and
   history; the values come from the agent's environment at launch and exist only in that CU's process.

The executable and arguments are expanded from the CU's environment built this way, so ``$PDATA_URL``
or ``$AWS_SECRET_ACCESS_KEY`` on a command line expands to nothing unless the CU asked for it.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.launch import expand
from agent.task import Task

PASSED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR", "TMP", "TEMP",
    "HOSTNAME", "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "MANPATH", "PKG_CONFIG_PATH", "PYTHONPATH",
    "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "MODULEPATH", "MODULESHOME", "LOADEDMODULES", "_LMFILES_",
    # Grid Engine's job variables (no common prefix)
    "JOB_ID", "JOB_NAME", "JOB_SCRIPT", "NSLOTS", "NHOSTS", "NQUEUES", "PE", "PE_HOSTFILE", "QUEUE", "ARC",
    "REQUEST", "RESTARTED", "TASK_ID",
    "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
})
"""Agent variables every CU gets (when the agent has them)."""

PASSED_PREFIXES = (
    "LC_", "SLURM_", "PBS_", "SGE_", "LSB_", "LSF_", "OMP_", "KMP_", "GOMP_", "OMPI_", "PRTE_", "PMIX_", "PMI_",
    "I_MPI_", "MPICH_", "HYDRA_", "MKL_", "OPENBLAS_",
)
"""Prefixes of agent variables every CU gets: locale, batch systems, MPI, OpenMP, math libraries."""

SECRET_WORDS = ("PASSWORD", "PASSPHRASE", "SECRET", "TOKEN", "CREDENTIAL", "JWT")
"""A variable whose name holds one of these is never passed from the agent (``SLURM_JWT``...)."""

NEVER_PREFIXES = ("PDATA_", "AWS_")
"""Agent variables with these prefixes never pass (coordination URL, store and SSH credentials)."""


def passed(name: str) -> bool:
    """Whether the agent's variable ``name`` is passed to every CU (see the module docstring)."""
    upper = name.upper()
    if upper.startswith(NEVER_PREFIXES) or any(word in upper for word in SECRET_WORDS):
        return False
    return name in PASSED_NAMES or name.startswith(PASSED_PREFIXES)


def allowed(agent_env: Mapping[str, str]) -> dict[str, str]:
    """The agent's variables that every CU gets (:func:`passed`)."""
    return {k: v for k, v in agent_env.items() if passed(k)}


def cu_environment(
    task: Task, agent_env: Mapping[str, str], extra: Mapping[str, str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of ``task``'s process: allowed agent variables, ``extra``, then the CU's own.

    ``base`` is ``allowed(agent_env)`` when the caller keeps it (the agent filters its environment once,
    not per CU: an HPC job's hundred-odd variables cost about a microsecond each to check).
    """
    env = dict(base) if base is not None else allowed(agent_env)
    env.update(extra)
    for name, value in task.description.environment.items():
        env[name] = expand(value, env, agent_env)
    return env
