"""The plain, frozen inputs of placement: sites, data references, demands, candidates, weights.

Owns the vocabulary every other placement module speaks and validates it once, on construction, so
the scoring code can trust its inputs. Nothing here does I/O; the service builds these objects from
coordination snapshots (pilot and DU entities) and history.

A :data:`Site` is an affinity path, root first: ``("dc-eu", "node17")`` means machine ``node17`` in
datacenter ``dc-eu`` (BigJob's ``affinity_datacenter_label`` > ``affinity_machine_label``). Deeper trees
(region, datacenter, rack, machine) work the same way. The empty path ``()`` means "location unknown"
and is costed as the farthest distance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Site = tuple[str, ...]
"""An affinity path, root first, e.g. ``("datacenter", "machine")``; ``()`` = unknown location."""

PilotState = Literal["running", "queued"]
"""``running``: the agent is up and pulling work. ``queued``: the pilot still waits in a batch queue."""


def format_site(site: Site) -> str:
    """``("dc1", "m2")`` -> ``"dc1/m2"``; the unknown site -> ``"?"``."""
    return "/".join(site) if site else "?"


def check_site(site: object, name: str) -> None:
    """Raise ValueError unless ``site`` is a tuple of non-empty strings; ``name`` names the field."""
    if not isinstance(site, tuple) or not all(isinstance(label, str) and label for label in site):
        raise ValueError(f"{name} must be a tuple of non-empty label strings (root first), got {site!r}")


@dataclass(frozen=True)
class DataRef:
    """One input DataUnit as placement sees it: its id, its size and where complete replicas are.

    ``replica_sites[i]`` is the site of the i-th complete replica. ``replica_pds`` optionally names the
    PilotData store holding each replica (same length as ``replica_sites``), so a score can say which
    replica a pilot should pull from and a replication plan never copies onto a store that already
    has it. A DU without any complete replica yet is costed as a wide-area pull of its full size.
    """

    du_id: str
    size_bytes: int
    replica_sites: tuple[Site, ...] = ()
    replica_pds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.du_id:
            raise ValueError("DataRef.du_id must be a non-empty string")
        if self.size_bytes < 0:
            raise ValueError(f"DataRef.size_bytes of {self.du_id!r} must be >= 0, got {self.size_bytes}")
        for site in self.replica_sites:
            check_site(site, f"DataRef.replica_sites of {self.du_id!r}")
        if self.replica_pds and len(self.replica_pds) != len(self.replica_sites):
            raise ValueError(
                f"DataRef.replica_pds of {self.du_id!r} must name one PD per replica site "
                f"({len(self.replica_sites)}), got {len(self.replica_pds)}"
            )

    def replica_pd(self, index: int) -> str | None:
        """The PD id of replica ``index``, or None when PDs were not given."""
        return self.replica_pds[index] if self.replica_pds else None


@dataclass(frozen=True)
class Demand:
    """What one ComputeUnit asks for: slots, input DataUnits and an affinity path.

    ``affinity`` is a site prefix (``("dc1",)`` = anywhere in dc1, ``("dc1", "m2")`` = machine m2). With
    ``affinity_required`` a pilot outside that subtree is excluded; otherwise each level of mismatch
    costs :attr:`Weights.soft_affinity_s` seconds of penalty.
    """

    cu_id: str
    slots: int = 1
    inputs: tuple[DataRef, ...] = ()
    affinity: Site = ()
    affinity_required: bool = False

    def __post_init__(self) -> None:
        if not self.cu_id:
            raise ValueError("Demand.cu_id must be a non-empty string")
        if self.slots < 1:
            raise ValueError(f"Demand.slots of {self.cu_id!r} must be >= 1, got {self.slots}")
        check_site(self.affinity, f"Demand.affinity of {self.cu_id!r}")
        seen: set[str] = set()
        for ref in self.inputs:
            if ref.du_id in seen:
                raise ValueError(f"Demand.inputs of {self.cu_id!r} lists DataUnit {ref.du_id!r} twice")
            seen.add(ref.du_id)


@dataclass(frozen=True)
class Candidate:
    """A snapshot of one pilot that could run work.

    ``free_slots`` are idle slots now; ``queued_slots`` is the slot demand of work already bound to the
    pilot but not yet started (it consumes free slots first). A pilot still waiting in a batch queue
    (``state="queued"``) starts after ``expected_start_s`` with all ``total_slots`` free (its
    ``free_slots`` is ignored). ``mean_task_seconds`` estimates one task's runtime, for queue waits.

    ``fetching`` lists input DUs already on their way into the pilot's cache, as
    ``(du_id, seconds until ready)`` pairs, stored sorted by DU id: a CU needing one moves no more
    bytes, but cannot start before it has arrived.
    """

    pilot_id: str
    site: Site
    total_slots: int
    free_slots: int
    queued_slots: int = 0
    cached_dus: frozenset[str] = field(default_factory=frozenset)
    state: PilotState = "running"
    expected_start_s: float = 0.0
    mean_task_seconds: float = 60.0
    fetching: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        pid = self.pilot_id
        if not pid:
            raise ValueError("Candidate.pilot_id must be a non-empty string")
        check_site(self.site, f"Candidate.site of {pid!r}")
        if self.state not in ("running", "queued"):
            raise ValueError(f"Candidate.state of {pid!r} must be 'running' or 'queued', got {self.state!r}")
        if self.total_slots < 0:
            raise ValueError(f"Candidate.total_slots of {pid!r} must be >= 0, got {self.total_slots}")
        if not 0 <= self.free_slots <= self.total_slots:
            raise ValueError(
                f"Candidate.free_slots of {pid!r} must be within 0..total_slots ({self.total_slots}), "
                f"got {self.free_slots}"
            )
        if self.queued_slots < 0:
            raise ValueError(f"Candidate.queued_slots of {pid!r} must be >= 0, got {self.queued_slots}")
        if not (math.isfinite(self.expected_start_s) and self.expected_start_s >= 0):
            raise ValueError(
                f"Candidate.expected_start_s of {pid!r} must be finite and >= 0, got {self.expected_start_s}"
            )
        if not (math.isfinite(self.mean_task_seconds) and self.mean_task_seconds > 0):
            raise ValueError(
                f"Candidate.mean_task_seconds of {pid!r} must be finite and > 0, got {self.mean_task_seconds}"
            )
        if not isinstance(self.cached_dus, frozenset):
            object.__setattr__(self, "cached_dus", frozenset(self.cached_dus))
        pairs = self.fetching.items() if isinstance(self.fetching, Mapping) else self.fetching
        fetching = tuple(sorted((str(du_id), float(ready)) for du_id, ready in pairs))
        for index, (du_id, ready) in enumerate(fetching):
            if not (math.isfinite(ready) and ready >= 0):
                raise ValueError(
                    f"Candidate.fetching of {pid!r}: {du_id!r} ready in {ready}, must be finite and >= 0"
                )
            if index and fetching[index - 1][0] == du_id:
                raise ValueError(f"Candidate.fetching of {pid!r} lists {du_id!r} twice")
        object.__setattr__(self, "fetching", fetching)

    @property
    def available_slots(self) -> int:
        """Slots that a new CU could use right away (after work already queued to the pilot)."""
        free = self.total_slots if self.state == "queued" else self.free_slots
        return max(0, free - self.queued_slots)


@dataclass(frozen=True)
class Weights:
    """How the terms of the estimate combine: ``est = wait * wait_s + transfer * transfer_s + penalty_s``.

    ``soft_affinity_s`` is the penalty, in seconds, per level of soft-affinity mismatch (a CU asking for
    ``("dc1", "m2")`` on a pilot at ``("dc1", "m5")`` mismatches by one level, at ``("dc2", "m2")`` by two).
    """

    wait: float = 1.0
    transfer: float = 1.0
    soft_affinity_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("wait", "transfer", "soft_affinity_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Weights.{name} must be finite and >= 0, got {value}")


DEFAULT_WEIGHTS = Weights()
"""The weights used when a caller gives none."""
