"""The allocation an agent runs in: its nodes and the cores of each, learnt from the batch system.

:func:`discover` reads the job's environment, first match wins:

==========================================  ===========================================================
variables                                   batch system (and what they hold)
==========================================  ===========================================================
``SLURM_JOB_NODELIST`` +                    SLURM, also PBS/Torque wrappers over SLURM (which set only
``SLURM_JOB_CPUS_PER_NODE``                 ``SLURM_*``): ``node[1-3,7]`` and ``16(x3),8``
``PBS_NODEFILE``                            PBS / Torque / PBS Pro: a file naming each node once per core
``PE_HOSTFILE``                             Grid Engine: ``host slots queue processors`` lines
``LSB_MCPU_HOSTS`` (else ``LSB_HOSTS``)     LSF: ``hostA 4 hostB 2`` (``LSB_HOSTS``: a host per slot)
none of them                                one node: this host, with the agent's ``--slots`` or its cores
==========================================  ===========================================================

The agent's own node is the one whose name matches this host's (short) name; the batch script runs
there. Everything here is pure (text in, :class:`Allocation` out) except reading the node file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pilotdata.errors import PilotDataError


class AllocationError(PilotDataError):
    """The batch system's description of the allocation could not be read (names the variable)."""


@dataclass(frozen=True)
class Node:
    """One node of the allocation and the cores this pilot may use on it."""

    name: str
    cores: int


@dataclass(frozen=True)
class Allocation:
    """The nodes of a pilot's allocation, the first being where the batch script (the agent) runs."""

    nodes: tuple[Node, ...]
    source: str
    """Where it was learnt: ``slurm``, ``pbs``, ``sge``, ``lsf`` or ``local``."""

    @property
    def total_cores(self) -> int:
        """Cores over all nodes."""
        return sum(n.cores for n in self.nodes)

    @property
    def names(self) -> list[str]:
        """Node names, in allocation order."""
        return [n.name for n in self.nodes]

    def local_node(self, hostname: str) -> str | None:
        """The node this host is (matched on the short name), or None."""
        short = _short(hostname)
        for node in self.nodes:
            if node.name == hostname or _short(node.name) == short:
                return node.name
        return None

    def limited(self, slots: int | None, per_node: int | None) -> Allocation:
        """The allocation with at most ``per_node`` cores a node and ``slots`` cores in all (from the end)."""
        nodes = [Node(n.name, min(n.cores, per_node) if per_node else n.cores) for n in self.nodes]
        if slots is not None and slots > 0:
            left, kept = slots, []
            for node in nodes:
                if left <= 0:
                    break
                kept.append(Node(node.name, min(node.cores, left)))
                left -= kept[-1].cores
            nodes = kept
        return Allocation(tuple(nodes), self.source)


def _short(name: str) -> str:
    return name.split(".", 1)[0]


# ------------------------------------------------------------------------------------ SLURM
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets: ``a[1-2],b`` -> ``["a[1-2]", "b"]``."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if depth != 0:
        raise ValueError(f"unbalanced brackets in {text!r}")
    parts.append(current)
    return [p for p in (s.strip() for s in parts) if p]


def expand_hostlist(text: str) -> list[str]:
    """SLURM's compressed host list: ``node[1-3,07],gpu[01-02]x,login`` -> every host name, in order.

    Ranges keep their zero padding (``[01-03]`` -> ``01 02 03``); several bracket groups in one name
    multiply (``r[1-2]n[1-2]`` -> ``r1n1 r1n2 r2n1 r2n2``). ``ValueError`` on malformed text.
    """
    hosts: list[str] = []
    for item in _split_top(text):
        hosts.extend(_expand_one(item))
    return hosts


def _expand_one(item: str) -> list[str]:
    start = item.find("[")
    if start < 0:
        return [item]
    end = item.index("]", start)
    prefix, body, rest = item[:start], item[start + 1 : end], item[end + 1 :]
    values: list[str] = []
    for part in body.split(","):
        match = _RANGE.match(part.strip())
        if not match:
            raise ValueError(f"bad range {part!r} in {item!r}")
        lo, hi = match.group(1), match.group(2)
        if hi is None:
            values.append(lo)
            continue
        width = len(lo) if lo.startswith("0") else 0
        if int(hi) < int(lo):
            raise ValueError(f"descending range {part!r} in {item!r}")
        values.extend(str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
    return [f"{prefix}{v}{tail}" for v in values for tail in _expand_one(rest)]


def expand_counts(text: str) -> list[int]:
    """SLURM's per-node counts: ``16(x2),8`` -> ``[16, 16, 8]``. ``ValueError`` on malformed text."""
    counts: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not match:
            raise ValueError(f"bad count {part!r} in {text!r}")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def from_slurm(nodelist: str, cpus_per_node: str) -> Allocation:
    """``SLURM_JOB_NODELIST`` and ``SLURM_JOB_CPUS_PER_NODE`` -> the allocation."""
    try:
        names = expand_hostlist(nodelist)
        counts = expand_counts(cpus_per_node)
    except ValueError as exc:
        raise AllocationError(f"SLURM_JOB_NODELIST / SLURM_JOB_CPUS_PER_NODE: {exc}") from None
    if not names or len(counts) != len(names):
        raise AllocationError(
            f"SLURM_JOB_NODELIST names {len(names)} node(s) but SLURM_JOB_CPUS_PER_NODE gives {len(counts)} count(s)"
        )
    return Allocation(tuple(Node(n, c) for n, c in zip(names, counts, strict=True)), "slurm")


# ------------------------------------------------------------------------------ PBS, SGE, LSF
def _counted(names: Sequence[str], counts: Sequence[int], source: str) -> Allocation:
    order: dict[str, int] = {}
    for name, count in zip(names, counts, strict=True):
        order[name] = order.get(name, 0) + count
    if not order:
        raise AllocationError(f"{source}: no node listed")
    return Allocation(tuple(Node(n, c) for n, c in order.items()), source)


def from_nodefile(text: str) -> Allocation:
    """A ``PBS_NODEFILE``: one line per core (``node1`` twice: 2 cores on node1), in order."""
    names = [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return _counted(names, [1] * len(names), "pbs")


def from_pe_hostfile(text: str) -> Allocation:
    """A Grid Engine ``PE_HOSTFILE``: ``host slots queue processor-range`` per line."""
    names, counts = [], []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[1].isdigit():
            raise AllocationError(f"PE_HOSTFILE: line {line!r} is not 'host slots queue processors'")
        names.append(parts[0])
        counts.append(int(parts[1]))
    return _counted(names, counts, "sge")


def from_lsf(mcpu_hosts: str | None, hosts: str | None) -> Allocation:
    """``LSB_MCPU_HOSTS`` (``hostA 4 hostB 2``) or else ``LSB_HOSTS`` (one host name per slot)."""
    if mcpu_hosts and mcpu_hosts.strip():
        words = mcpu_hosts.split()
        if len(words) % 2 or not all(w.isdigit() for w in words[1::2]):
            raise AllocationError(f"LSB_MCPU_HOSTS: {mcpu_hosts!r} is not 'host count host count ...'")
        return _counted(words[0::2], [int(w) for w in words[1::2]], "lsf")
    words = (hosts or "").split()
    return _counted(words, [1] * len(words), "lsf")


def _read(path: str, variable: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise AllocationError(f"{variable}={path}: cannot read it: {exc.strerror or exc}") from None


def discover(env: Mapping[str, str], hostname: str, local_cores: int) -> Allocation:
    """The allocation this process runs in (see the module docstring); one local node outside a batch job."""
    if env.get("SLURM_JOB_NODELIST") and env.get("SLURM_JOB_CPUS_PER_NODE"):
        return from_slurm(env["SLURM_JOB_NODELIST"], env["SLURM_JOB_CPUS_PER_NODE"])
    if env.get("PBS_NODEFILE"):
        return from_nodefile(_read(env["PBS_NODEFILE"], "PBS_NODEFILE"))
    if env.get("PE_HOSTFILE"):
        return from_pe_hostfile(_read(env["PE_HOSTFILE"], "PE_HOSTFILE"))
    if env.get("LSB_MCPU_HOSTS") or env.get("LSB_HOSTS"):
        return from_lsf(env.get("LSB_MCPU_HOSTS"), env.get("LSB_HOSTS"))
    return Allocation((Node(_short(hostname), max(1, local_cores)),), "local")
