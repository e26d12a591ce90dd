"""A small, real workload driven through a coordination backend: it produces the events the history stores."""

from __future__ import annotations

from dataclasses import dataclass, field

from pilotdata.coordination import Coordination, Event, TransitionRequest

TRANSFERS = [
    # (du, bytes, seconds, source, destination, ok)
    ("du-db", 4_000_000, 2.0, "file:///scratch/pd1", "file:///scratch/pd2", True),
    ("du-db", 6_000_000, 2.0, "file:///scratch/pd1", "file:///scratch/pd2", True),
    ("du-q", 1_000, 0.5, "s3://bucket/pd3", "file:///scratch/pd2", True),
    ("du-q", 0, 3.0, "s3://bucket/pd3", "file:///scratch/pd2", False),
]


@dataclass
class Workload:
    """What :func:`run_workload` did."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    retried: str = ""
    transfers: int = 0


def all_events(coord: Coordination) -> list[Event]:
    """Every event currently in the coordination stream."""
    return coord.events_after(None, limit=1_000_000)


def run_workload(coord: Coordination, n_cus: int = 6, prefix: str = "cu") -> Workload:
    """One pilot runs ``n_cus`` CUs: most succeed, the first is retried once, the last fails.

    Also records the transfers of :data:`TRANSFERS` as ``transfer`` events.
    """
    assert n_cus >= 3
    work = Workload()
    pilot = f"{prefix}-pilot"
    coord.create("pilot", pilot, {"slots": 2})
    coord.transition("pilot", pilot, "Pending")
    coord.transition("pilot", pilot, "Running", pilot=pilot)
    ids = [f"{prefix}-{i}" for i in range(n_cus)]
    coord.create_many("cu", [(cu, {"description": {"executable": "/bin/true"}}) for cu in ids])
    for target in ("Pending", "StagingInput", "Running"):
        results = coord.transition_many("cu", [TransitionRequest(cu, target, pilot=pilot) for cu in ids])
        assert all(r.ok for r in results), results
    work.retried = ids[0]
    coord.transition("cu", ids[0], "Pending", pilot=pilot, detail={"reason": "node lost"})
    coord.transition("cu", ids[0], "Running", pilot=pilot)
    for cu in ids[:-1]:
        coord.transition("cu", cu, "StagingOutput", pilot=pilot)
        coord.transition("cu", cu, "Done", pilot=pilot, detail={"exit_code": 0})
        work.done.append(cu)
    coord.transition("cu", ids[-1], "Failed", pilot=pilot, detail={"exit_code": 3})
    work.failed.append(ids[-1])
    for du, nbytes, seconds, src, dst, ok in TRANSFERS:
        detail = {"du": du, "bytes": nbytes, "seconds": seconds, "source": src, "destination": dst, "ok": ok}
        coord.record_event("transfer", du, detail, pilot=pilot)
        work.transfers += 1
    return work
