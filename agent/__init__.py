"""agent: the process a pilot runs on a resource (``python -m agent``).

Owns registration, heartbeats, pulling ComputeUnits with a reliable claim, slot allocation,
sandboxes, input/output staging through the per-pilot cache, launching without a shell (MPI through
``mpirun``/``srun``), and reporting exit codes through the single transition function.

May import: ``pilotdata`` (coordination, descriptions, states, stores) and ``transfer``.
"""
