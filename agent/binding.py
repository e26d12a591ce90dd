"""Binding the CUs of the agent's node to CPUs: each slot has a CPU, a CU runs on its slots' CPUs.

A pilot's description says how (``cpu_binding``):

* ``auto`` (the default): bind when the pilot's slots on this node cover every CPU the agent may use
  (its affinity mask: in a batch job, the CPUs the batch system gave it), that is when the pilot owns
  those CPUs. A pilot with fewer slots than CPUs (two slots on a shared 64-core host) is not bound: a
  fixed choice of CPUs would put its CUs on cores that other work may crowd while the rest stay idle.
* ``cores``: always bind; slot ``i`` gets the ``i``-th allowed CPU (round robin when there are more
  slots than CPUs).
* ``none``: never bind; the kernel places every CU process.

A bound CU with ``number_of_processes`` k runs with an affinity mask of k CPUs, its slots' CPUs, the way
a batch system's core binding (``srun --cpu-bind=cores``) gives a task its cores: ``nproc``, OpenMP's
default thread count and ``os.sched_getaffinity`` all see k. The agent's thread that starts the CU sets
that mask on itself right before the spawn and the process inherits it (no code runs in the child and
the agent's ``vfork`` spawn is kept). So the child starts on the thread's CPU instead of being placed on
another one and woken there, which on a short CU is a good share of its start-up (measured in
docs/benchmarks.md). MPI CUs are not bound here: their launcher binds its ranks itself. CUs on the
allocation's other nodes are started by those nodes' processes and are not bound either.

Binding is an optimisation and a resource promise, never a reason to fail a CU: a mask the kernel
refuses (a CPU taken away from the job) is logged once and the CU runs unbound.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection
from dataclasses import dataclass

log = logging.getLogger(__name__)

MODES = ("auto", "cores", "none")
"""The values of a pilot description's ``cpu_binding``."""


@dataclass(frozen=True)
class Bound:
    """The slots (by index on the node) a CU holds and the CPUs they stand for."""

    slots: tuple[int, ...]
    cpus: frozenset[int]


def allowed_cpus() -> tuple[int, ...]:
    """The CPUs this process may run on, in order (all online CPUs where affinity is not supported)."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))


class CoreBinding:
    """Which CPUs the CUs of the agent's node run on (see the module docstring). Thread-safe."""

    def __init__(self, slots: int, mode: str = "auto", cpus: Collection[int] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"cpu_binding must be one of {', '.join(MODES)}, got {mode!r}")
        if slots < 1:
            raise ValueError(f"a node needs at least one slot, got {slots}")
        self.mode = mode
        self.cpus: tuple[int, ...] = tuple(sorted(cpus)) if cpus is not None else allowed_cpus()
        self.slots = slots
        self.active = bool(self.cpus) and (mode == "cores" or (mode == "auto" and slots >= len(self.cpus)))
        """Whether CUs are bound at all."""
        self._free = list(range(slots))
        self._lock = threading.Lock()
        self._thread = threading.local()
        self._refused = False

    def describe(self) -> str:
        """One line for the agent's log: what is bound to what, or why nothing is."""
        cpus = _ranges(self.cpus)
        if self.active:
            return f"CUs bound to CPUs (cpu_binding {self.mode}): {self.slots} slots on CPUs {cpus}"
        if self.mode == "none":
            return "CUs not bound to CPUs (cpu_binding none)"
        return (f"CUs not bound to CPUs (cpu_binding auto): {self.slots} slots for {len(self.cpus)} CPUs "
                f"({cpus}); the pilot does not own them all")

    def take(self, processes: int) -> Bound | None:
        """Slots and CPUs for a CU of ``processes``: the slots of the calling thread's last CU when they are
        free (its thread then stays where it is), else the lowest free ones; ``None`` when CUs are not
        bound (or, which the agent's core accounting rules out, when fewer slots are free)."""
        if not self.active:
            return None
        last: tuple[int, ...] = getattr(self._thread, "slots", ())
        with self._lock:
            if processes > len(self._free):
                log.warning("cpu binding: %d slots wanted, %d free; the CU runs unbound",
                            processes, len(self._free))
                return None
            if len(last) == processes and all(i in self._free for i in last):
                slots = last  # the calling thread's last CU's: no move for the thread, warm caches
            else:
                slots = tuple(self._free[:processes])
            for i in slots:
                self._free.remove(i)
        return Bound(slots, frozenset(self.cpus[i % len(self.cpus)] for i in slots))

    def release(self, bound: Bound | None) -> None:
        """Give a CU's slots back."""
        if bound is None:
            return
        with self._lock:
            self._free.extend(bound.slots)
            self._free.sort()

    def apply(self, bound: Bound | None) -> None:
        """Set the calling thread's CPUs to ``bound``'s (the process it starts next inherits them), or back
        to all of the agent's when ``bound`` is ``None`` and an earlier CU had bound this thread."""
        want = bound.cpus if bound is not None else None
        have: frozenset[int] | None = getattr(self._thread, "cpus", None)
        self._thread.slots = bound.slots if bound is not None else ()
        if want == have:
            return
        try:
            os.sched_setaffinity(0, want if want is not None else self.cpus)
        except OSError as exc:
            if not self._refused:
                self._refused = True
                log.warning("cpu binding: the kernel refused CPUs %s (%s); CUs may run unbound",
                            _ranges(sorted(want or self.cpus)), exc.strerror or exc)
            if want is not None and have is not None:  # not left on an earlier CU's CPUs
                try:
                    os.sched_setaffinity(0, self.cpus)
                except OSError:
                    pass
            want = None
            self._thread.slots = ()
        self._thread.cpus = want


def _ranges(cpus: Collection[int]) -> str:
    """``0-3,8`` for CPUs 0, 1, 2, 3 and 8 (as ``taskset`` and ``/proc/*/status`` print them)."""
    out: list[str] = []
    ordered = sorted(cpus)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)
