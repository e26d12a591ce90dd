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
docs/benchmarks.md). The thread keeps those CPUs after the exit until it has other work to do: before
staging, and before starting a CU that is not bound, it gets every CPU back, so the transfer threads it
starts and an MPI launcher are never confined. MPI CUs are not bound here: their launcher binds its ranks
itself. CUs on the allocation's other nodes are started by those nodes' processes and are not bound
either.

Binding is an optimisation and a resource promise, never a reason to fail a CU: a mask the kernel
refuses (a CPU taken away from the job) is logged once and the CU runs unbound.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection
from dataclasses import dataclass

from pilotdata.descriptions import PilotComputeDescription

log = logging.getLogger(__name__)

MODES = PilotComputeDescription.CPU_BINDINGS
"""The values of a pilot description's ``cpu_binding``."""


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else :class:`ValueError` naming the field and the value."""
    if mode not in MODES:
        raise ValueError(f"cpu_binding must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


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
        check_mode(mode)
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

    def bind(self, bound: Bound | None) -> None:
        """Set the calling thread's CPUs to ``bound``'s, for the process it starts next to inherit; with
        ``None`` (an unbound CU) nothing changes. :meth:`unbind` undoes it. A thread that has these
        CPUs already (its last CU's slots) is left as it is: no system call."""
        if bound is None:
            return
        self._thread.slots = bound.slots
        if getattr(self._thread, "cpus", _UNKNOWN) == bound.cpus:
            return
        try:
            os.sched_setaffinity(0, bound.cpus)
        except OSError as exc:
            if not self._refused:
                self._refused = True
                log.warning("cpu binding: the kernel refused CPUs %s (%s); CUs may run unbound",
                            _ranges(bound.cpus), exc.strerror or exc)
            self._thread.slots = ()
            self.unbind()  # not left on an earlier CU's CPUs
            return
        self._thread.cpus = bound.cpus

    def unbind(self) -> None:
        """Give the calling thread all of the agent's CPUs again, unless it is known to have them.

        A slot thread keeps its CU's CPUs after the process ends (its next CU usually gets the same slots,
        and a thread that stays put starts the next child where it runs), until it has other work: the
        worker calls this before staging and before starting a CU that is not bound, so a transfer's
        threads (which inherit the mask of the thread that starts them) and an MPI launcher get every
        CPU. A thread started by a bound thread inherits its mask unknown to this object, so a thread
        not seen here before is reset too.
        """
        if not self.active or getattr(self._thread, "cpus", _UNKNOWN) is None:
            return
        self._thread.cpus = None
        try:
            os.sched_setaffinity(0, self.cpus)
        except OSError as exc:
            log.warning("cpu binding: could not give a thread CPUs %s back (%s)", _ranges(self.cpus),
                        exc.strerror or exc)


_UNKNOWN = frozenset({-1})
"""A thread's CPUs before this module has set them (no real mask equals it)."""


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
