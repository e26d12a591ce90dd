"""Core accounting per node: which node (or, for MPI, which hosts) a CU runs on.

:class:`NodeSlots` keeps the free cores of every node of the allocation. A CU that is not MPI runs on
one node with ``number_of_processes`` free cores (it never spans nodes, and a CU needing more cores
than the largest node has can never run here); the node is chosen among those holding the CU's input
DataUnits in their cache first, then the one with the most free cores (which spreads work, and so
the caches, over the allocation). An MPI CU runs on one node when one has room, else on the nodes
with the most free cores until it has its processes: it gets a host list (:class:`Placement`).

A node that is lost (:meth:`NodeSlots.remove`) leaves the pool with its cores; placements on it that
end later give nothing back. Thread-safe; :meth:`NodeSlots.wait_for_release` lets the main loop
sleep until some CU ends.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from agent.nodes import Node


@dataclass(frozen=True)
class Placement:
    """Where one CU runs: ``(node, cores)`` per host, the first host first."""

    hosts: tuple[tuple[str, int], ...]

    @property
    def node(self) -> str:
        """The (first) node."""
        return self.hosts[0][0]

    @property
    def nodes(self) -> list[str]:
        """Every node of the placement."""
        return [h for h, _ in self.hosts]

    @property
    def cores(self) -> int:
        """Cores over all hosts."""
        return sum(c for _, c in self.hosts)

    @property
    def spans(self) -> bool:
        """Whether the CU runs on more than one node."""
        return len(self.hosts) > 1


class NodeSlots:
    """Free cores per node (see the module docstring)."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        if not nodes or any(n.cores < 1 for n in nodes):
            raise ValueError("a pilot needs at least one node with at least one core")
        self._cores = {n.name: n.cores for n in nodes}
        self._free = dict(self._cores)
        self._order = [n.name for n in nodes]
        self._cond = threading.Condition()

    # ------------------------------------------------------------------ queries
    @property
    def total(self) -> int:
        """Cores of the nodes still in the pool."""
        with self._cond:
            return sum(self._cores.values())

    @property
    def free(self) -> int:
        """Free cores over all nodes."""
        with self._cond:
            return sum(self._free.values())

    @property
    def used(self) -> int:
        """Allocated cores."""
        with self._cond:
            return sum(self._cores.values()) - sum(self._free.values())

    @property
    def nodes(self) -> list[str]:
        """Nodes still in the pool, in allocation order."""
        with self._cond:
            return [n for n in self._order if n in self._cores]

    def cores_on(self, node: str) -> int:
        """Cores of ``node`` (0 for a lost or unknown node)."""
        with self._cond:
            return self._cores.get(node, 0)

    def free_on(self, node: str) -> int:
        """Free cores of ``node`` (0 for a lost or unknown node)."""
        with self._cond:
            return self._free.get(node, 0)

    def unfit(self, processes: int, mpi: bool, pilot: str = "the pilot") -> str | None:
        """Why a CU of ``processes`` can never run on these nodes, or None if it can."""
        with self._cond:
            total = sum(self._cores.values())
            largest = max(self._cores.values(), default=0)
            if 1 <= processes <= (total if mpi else largest):
                return None
            if mpi or len(self._cores) <= 1:
                return f"needs {processes} slots (number_of_processes) but pilot {pilot} has {total}"
            return (
                f"needs {processes} cores on one node (number_of_processes; only MPI CUs span nodes) but the "
                f"largest node of pilot {pilot} has {largest}"
            )

    # --------------------------------------------------------------- allocation
    def place(self, processes: int, mpi: bool = False, prefer: Collection[str] = ()) -> Placement | None:
        """Take cores for a CU and say where; None (nothing taken) when they are not free now."""
        with self._cond:
            nodes = [n for n in self._order if n in self._cores]
            fitting = [n for n in nodes if self._free[n] >= processes]
            if fitting:
                # inputs already cached there first, then the most free cores, then allocation order
                best = min(fitting, key=lambda n: (n not in prefer, -self._free[n], nodes.index(n)))
                self._free[best] -= processes
                return Placement(((best, processes),))
            if not mpi or sum(self._free.values()) < processes:
                return None
            hosts: list[tuple[str, int]] = []
            left = processes
            for node in sorted(nodes, key=lambda n: (-self._free[n], nodes.index(n))):
                take = min(self._free[node], left)
                if take:
                    hosts.append((node, take))
                    left -= take
                if not left:
                    break
            for node, take in hosts:
                self._free[node] -= take
            return Placement(tuple(hosts))

    def release(self, placement: Placement) -> None:
        """Give a placement's cores back (a lost node's stay gone) and wake waiters."""
        with self._cond:
            for node, take in placement.hosts:
                if node in self._free:
                    self._free[node] = min(self._cores[node], self._free[node] + take)
            self._cond.notify_all()

    def remove(self, node: str) -> bool:
        """Take a lost node out of the pool; False if it was not in it."""
        with self._cond:
            if node not in self._cores:
                return False
            del self._cores[node]
            del self._free[node]
            self._cond.notify_all()
            return True

    def _room(self, processes: int, mpi: bool) -> bool:
        if max(self._free.values(), default=0) >= processes:
            return True
        return mpi and sum(self._free.values()) >= processes

    def wait_for_room(self, processes: int, mpi: bool, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until a CU of ``processes`` could be placed; return whether it could.

        Also returns (False) early when a node is removed, so the caller can look again.
        """
        with self._cond:
            if self._room(processes, mpi):
                return True
            self._cond.wait(timeout)
            return self._room(processes, mpi)

    def wait_for_free(self, n: int, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until ``n`` cores are free on one node; return whether they are."""
        with self._cond:
            return self._cond.wait_for(lambda: max(self._free.values(), default=0) >= n, timeout)
