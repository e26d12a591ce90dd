"""Times the phases of every agent slot's cycle, for ``benchmarks/throughput.py --phases``.

Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``; with this directory on it and
``PDATA_BENCH_PHASES`` naming a directory, a ``python -m agent`` process wraps four of its functions
and its shutdown (nothing else changes) and writes ``<pid>.json`` there when it starts to stop and again
when it exits: for each pair of consecutive marks on a worker thread, how many, the mean and the
median in microseconds. The marks of one CU:

* ``start``: its worker thread begins (the slot is taken);
* ``spawn``: sandbox, environment and argv are ready; the output files are opened next;
* ``vfork`` / ``exec``: around CPython's ``fork_exec`` (the thread waits until the child has exec'd),
  called by :mod:`agent.child` (or by ``Popen`` where that module uses it);
* ``spawned``: the process has started (the pidfd is open, the reaper told);
* ``exited``: the worker saw the process end;
* ``end``: Done queued, the slot released; ``end -> start`` is the hand-over to the next held CU.

Other processes (the client, the launcher's wrapper) are left alone.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import sys
import threading
import time
from collections import defaultdict
from typing import Any


def _install(target: str) -> None:
    import subprocess

    from agent import child, executors, worker
    from agent import main as agent_main

    marks: list[list[tuple[str, float]]] = []
    local = threading.local()

    def mark(name: str) -> None:
        seq = getattr(local, "seq", None)
        if seq is None:
            seq = local.seq = []
            marks.append(seq)
        seq.append((name, time.perf_counter()))

    def around(owner: Any, attr: str, before: str, after: str) -> None:
        real = getattr(owner, attr)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            mark(before)
            try:
                return real(*args, **kwargs)
            finally:
                mark(after)

        setattr(owner, attr, wrapped)

    around(worker.CUWorker, "run", "start", "end")
    around(executors.LocalExecutor, "spawn", "spawn", "spawned")
    around(subprocess, "_fork_exec", "vfork", "exec")  # the way other Pythons start a CU
    if child._fork_exec is not None:
        around(child, "_fork_exec", "vfork", "exec")  # the direct way (agent.child.DIRECT)
    real_wait = worker.CUWorker._wait

    def wait(self: Any, launched: Any) -> Any:
        try:
            return real_wait(self, launched)
        finally:
            mark("exited")

    worker.CUWorker._wait = wait  # type: ignore[method-assign]

    def dump() -> None:
        spans: dict[str, list[float]] = defaultdict(list)
        for seq in marks:
            for (a, ta), (b, tb) in itertools.pairwise(seq):
                spans[f"{a} -> {b}"].append((tb - ta) * 1e6)
        out = {k: {"n": len(v), "mean": sum(v) / len(v), "p50": sorted(v)[len(v) // 2]} for k, v in spans.items()}
        path = os.path.join(target, f"{os.getpid()}.json")
        with open(path + ".part", "w") as f:
            json.dump(out, f)
        os.replace(path + ".part", path)  # the benchmark reads it as soon as it exists: whole or not at all

    atexit.register(dump)
    # also when the agent starts to stop: a pilot canceled by its client gets SIGTERM, then SIGKILL after
    # the launcher's grace, and an agent killed during its shutdown never reaches atexit
    real_shutdown = agent_main.Agent._shutdown

    def shutdown(self: Any) -> None:
        try:
            dump()
        except Exception as exc:  # a measurement must never keep the agent from handing its work back
            print(f"phases: not written: {exc!r}", file=sys.stderr)
        real_shutdown(self)

    agent_main.Agent._shutdown = shutdown  # type: ignore[method-assign]


_target = os.environ.get("PDATA_BENCH_PHASES")
if _target and sys.orig_argv[1:3] == ["-m", "agent"]:
    _install(_target)
