"""What each panel of the dashboard shows, as JSON-able values built from the query layer.

One function per panel (and per API endpoint of :mod:`.app`). Each reads :class:`~pilotdata.inspect.Inspector`
queries that aggregate or page on the server (index counters, ``GROUP BY`` queries, one page of rows, one
ComputeUnit by id), so its cost does not grow with the number of ComputeUnits; none walks them. Byte
figures are :class:`~pilotdata.records.ByteCategory` sums and nothing else (the one byte accounting).

The values are plain dicts and lists of str, int, float, bool and ``None``; :func:`encode` makes the
response body.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pilotdata.inspect import SHARED, UNBOUND, ByteTotals, CUDetails, CUFilter, CUSummary, Inspector, PilotSummary
from pilotdata.records import ByteCategory
from pilotdata.states import Kind, is_final, states_of

JSON = dict[str, Any]

CU_STATES: tuple[str, ...] = tuple(states_of(Kind.CU))
"""ComputeUnit states in their life order (the columns of the counts panel)."""
MAX_BUCKETS = 120
"""The throughput chart has at most this many bars: buckets grow in whole minutes to fit the run."""
ENDED_PILOTS_SHOWN = 50
"""Ended pilots listed after the live ones (the rest are counted, not listed)."""
TAIL_BYTES = 4096
"""How much of the end of a ComputeUnit's stderr and stdout the details show."""
CATEGORY_LABELS = {ByteCategory.UPLOADED.value: "uploaded", ByteCategory.REPLICATED.value: "replicated",
                   ByteCategory.STAGED.value: "staged", ByteCategory.OUTPUT.value: "output",
                   ByteCategory.LINKED.value: "linked", ByteCategory.CACHE_HIT.value: "cache hit"}
"""How the byte categories are named on the page."""
NOT_VISIBLE = (
    "A pilot copying a ComputeUnit's input into its cache, or its outputs into a DataUnit, records the copy "
    "when it ends: until then it shows as the unit's StagingInput or StagingOutput state (counted per pilot "
    "here), not as a transfer.",
    "A copy in flight has no progress record: its bytes so far and its rate are not known, only the "
    "DataUnit's size (once its manifest is written) and when the copy started.",
    "Exports (pdata get) are not recorded anywhere.",
)
"""What the transfers panel cannot show, said on the page."""


def encode(value: Any) -> bytes:
    """The JSON body of a response (UTF-8, no NaN)."""
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------ pilots
def _pilot_json(p: PilotSummary) -> JSON:
    slots = p.slots
    live = not is_final(p.state)
    return {"id": p.id, "state": p.state, "site": p.site, "resource": p.resource, "slots": slots,
            "busy": p.busy_slots if live else 0,
            "idle": max(0, slots - p.busy_slots) if live and slots is not None else None,
            "claimed": p.claimed, "queued": p.queued, "walltime_left": p.walltime_left, "lifetime": p.lifetime,
            "created": p.created, "started": p.started, "ended": p.ended, "reason": p.reason, "live": live}


def pilots(ins: Inspector, run: str | None) -> JSON:
    """The pilots of ``run`` (or all) with the live ones first: state, site, slots busy and idle, what each
    has claimed and queued, walltime left and lifetime; the newest :data:`ENDED_PILOTS_SHOWN` ended ones."""
    now = time.time()
    every = ins.pilots(include_ended=True, run=run)
    live = [p for p in every if not is_final(p.state)]
    ended = sorted((p for p in every if is_final(p.state)), key=lambda p: (-(p.ended or p.created), p.id))
    shown = live + ended[:ENDED_PILOTS_SHOWN]
    return {
        "pilots": [_pilot_json(p) for p in shown],
        "live": len(live), "ended": len(ended), "ended_hidden": max(0, len(ended) - ENDED_PILOTS_SHOWN),
        "slots": sum(p.slots or 0 for p in live), "busy": sum(p.busy_slots for p in live),
        "queued": sum(p.queued for p in live), "time": now,
    }


# ------------------------------------------------------------------------------ counts
def place_label(place: str) -> str:
    """A place as the page names it: the pilot id, ``shared queue`` or ``unbound``."""
    return {SHARED: "shared queue", UNBOUND: "unbound"}.get(place, place)


def counts(ins: Inspector, run: str | None) -> JSON:
    """ComputeUnits by state for each place (pilots, the shared queue, unbound) and in total; the same
    numbers as ``pdata status`` (index counters with the live in-progress lists laid over them)."""
    c = ins.counts(run)
    total = c.total

    def order(place: str) -> tuple[int, str]:
        if place == SHARED:
            return (1, place)
        if place == UNBOUND:
            return (2, place)
        return (0, place)

    places = [{"place": place, "label": place_label(place), "site": c.sites.get(place),
               "pilot_state": c.pilot_states.get(place), "counts": {s: n for s, n in c.rows[place].items() if n},
               "total": sum(c.rows[place].values())} for place in sorted(c.rows, key=order)]
    return {"run": run, "states": list(CU_STATES), "places": places,
            "total": {s: total[s] for s in CU_STATES if total.get(s)}, "all": sum(total.values()),
            "shared_queue": c.shared_queue}


# ------------------------------------------------------------------------------ throughput
def throughput(ins: Inspector, run: str | None) -> JSON:
    """ComputeUnits ended per time bucket and final state, continuous from the first bucket to the last.

    The index counts ends per minute; buckets are whole minutes, widened so the chart has at most
    :data:`MAX_BUCKETS` bars.
    """
    minutes = ins.throughput(run, bucket=60.0)
    if not minutes:
        return {"bucket": 60, "start": [], "series": {}, "total": 0}
    first, last = minutes[0][0], minutes[-1][0]
    bucket = 60 * max(1, math.ceil((last - first) / 60 / MAX_BUCKETS + 1e-9))
    base = first - first % bucket
    n = int((last - base) // bucket) + 1
    finals = [s for s in CU_STATES if is_final(s)]
    series = {s: [0] * n for s in finals}
    for start, by_state in minutes:
        i = int((start - base) // bucket)
        for state, count in by_state.items():
            series.setdefault(state, [0] * n)[i] += count
    return {"bucket": bucket, "start": [base + i * bucket for i in range(n)],
            "series": {s: v for s, v in series.items() if any(v)},
            "total": sum(sum(v) for v in series.values())}


# ------------------------------------------------------------------------------ bytes
CATEGORIES = [{"id": c.value, "label": CATEGORY_LABELS[c.value], "moves": c.moves_bytes} for c in ByteCategory]
"""The byte categories in their canonical order, with whether each moves bytes."""


def _totals_json(t: ByteTotals) -> JSON:
    return {**t.as_dict(), "linked_replicas": t.linked_replicas}


def merge_totals(parts: Iterable[ByteTotals]) -> ByteTotals:
    """The sum of several :class:`ByteTotals` (every category, and the CUs' part of each)."""
    every: dict[str, int] = {}
    mine: dict[str, int] = {}
    for part in parts:
        for c, n in part.by_category.items():
            every[c] = every.get(c, 0) + n
        for c, n in part.for_cus.items():
            mine[c] = mine.get(c, 0) + n
    return ByteTotals.of(every, mine)


def bytes_panel(ins: Inspector, run: str | None) -> JSON:
    """Bytes by category in total, per pilot (``client`` for uploads and replications made by a client) and
    per site: what moved (uploaded, replicated, staged, output) and what did not (linked, cache hit)."""
    by_pilot = ins.bytes_by("pilot", run)
    by_site = ins.bytes_by("site", run)
    total = merge_totals(by_pilot.values())  # the same records as Inspector.bytes(run), summed once
    return {"categories": CATEGORIES, "total": _totals_json(total),
            "by_pilot": [{"name": k, **_totals_json(v)} for k, v in by_pilot.items()],
            "by_site": [{"name": k, **_totals_json(v)} for k, v in by_site.items()]}


# ------------------------------------------------------------------------------ transfers in flight
@dataclass(frozen=True)
class PendingReplica:
    """A DataUnit copy under way: a first upload or a replication onto ``pd`` (from coordination)."""

    du: str
    name: str | None
    run: str | None
    pd: str
    since: float
    """When the copy was started (the replica was marked pending)."""
    bytes: int
    """The DataUnit's size as its manifest says (0 while a first upload has not written it)."""
    du_state: str


def transfers(pending: Sequence[PendingReplica], scanned: float | None, scan_seconds: float,
              counts_value: JSON, run: str | None) -> JSON:
    """Transfers in flight: DataUnit replicas pending (of ``run``, or all), the ComputeUnits staging per
    place (their copies are recorded when they end), and what is not visible (:data:`NOT_VISIBLE`)."""
    rows = [asdict(p) for p in pending if run is None or p.run == run]
    staging = []
    for place in counts_value["places"]:
        c = place["counts"]
        staging_in, staging_out = c.get("StagingInput", 0), c.get("StagingOutput", 0)
        if staging_in or staging_out:
            staging.append({"place": place["place"], "label": place["label"], "site": place["site"],
                            "staging_input": staging_in, "staging_output": staging_out})
    return {"pending_replicas": sorted(rows, key=lambda r: (r["since"], r["du"], r["pd"])),
            "staging": staging, "scanned": scanned, "scan_seconds": scan_seconds,
            "not_visible": list(NOT_VISIBLE)}


# ------------------------------------------------------------------------------ failures
def failures(ins: Inspector, run: str | None) -> JSON:
    """Failed ComputeUnits grouped by reason (largest group first), each with up to five example ids."""
    groups = ins.failures(run, limit=50)
    return {"groups": [{"reason": g.reason, "count": g.count, "examples": g.examples} for g in groups],
            "failed": sum(g.count for g in groups)}


# ------------------------------------------------------------------------------ the table
def summary_json(cu: CUSummary) -> JSON:
    """One ComputeUnit as a table row."""
    return {"id": cu.id, "name": cu.name, "run": cu.run, "state": cu.state, "attempt": cu.attempt,
            "place": cu.place, "where": None if cu.place is None else place_label(cu.place), "pilot": cu.pilot,
            "site": cu.site, "host": cu.host, "created": cu.created, "updated": cu.updated,
            "queue_wait": cu.queue_wait, "duration": cu.duration, "exit_code": cu.exit_code, "reason": cu.reason,
            "slots": cu.slots}


def cus(ins: Inspector, flt: CUFilter, *, offset: int, limit: int, after: str | None, newest: bool) -> JSON:
    """One page of the ComputeUnits matching ``flt`` (by ``offset`` or after a cursor), with the total."""
    page = ins.list_cus(flt, offset=offset, limit=limit, newest_first=newest, after=after)
    return {"rows": [summary_json(r) for r in page.rows], "total": page.total, "offset": page.offset,
            "limit": page.limit, "next_offset": page.next_offset, "cursor": page.cursor}


# ------------------------------------------------------------------------------ one ComputeUnit
def tail(path: Path, nbytes: int = TAIL_BYTES) -> JSON:
    """The last ``nbytes`` of a file as text (``{"text", "size", "truncated"}``), or why there is none."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            fh.seek(max(0, size - nbytes))
            data = fh.read(nbytes)
    except FileNotFoundError:
        return {"text": None, "size": None, "truncated": False, "note": "no such file (nothing written)"}
    except OSError as exc:
        return {"text": None, "size": None, "truncated": False, "note": f"cannot read it: {exc.strerror}"}
    return {"text": data.decode("utf-8", "replace"), "size": size, "truncated": size > nbytes, "note": None}


def _stream(sandbox: Path, name: str) -> JSON:
    path = (sandbox / name).resolve()
    if not path.is_relative_to(sandbox.resolve()):  # names are checked relative paths; never leave the sandbox
        return {"path": str(sandbox / name), "text": None, "size": None, "truncated": False,
                "note": "not inside the sandbox"}
    return {"path": str(sandbox / name), **tail(path)}


def logs(details: CUDetails) -> JSON:
    """The ends of the ComputeUnit's stderr and stdout, read from its sandbox when it is on this host."""
    desc: Mapping[str, Any] = details.description or {}
    if not details.sandbox:
        note = ("it never started" if is_final(details.summary.state) else "it has not started yet")
        return {"available": False, "note": f"no sandbox: {note}", "stderr": None, "stdout": None}
    sandbox = Path(details.sandbox)
    if not sandbox.is_dir():
        where = details.summary.host or "its pilot's host"
        return {"available": False, "note": f"the sandbox {details.sandbox} is not on this host ({where})",
                "stderr": None, "stdout": None}
    return {"available": True, "note": None, "stderr": _stream(sandbox, str(desc.get("error") or "stderr")),
            "stdout": _stream(sandbox, str(desc.get("output") or "stdout"))}


def cu(ins: Inspector, cu_id: str) -> JSON:
    """Everything about one ComputeUnit: its row, description, every state with its time, how each input
    arrived (copied, linked, cache hit) with its bytes, its outputs and bytes by category, and the ends of
    its stderr and stdout."""
    d = ins.cu(cu_id)
    return {**summary_json(d.summary), "description": d.description, "sandbox": d.sandbox,
            "placement": d.placement, "events": d.events, "inputs": [asdict(t) for t in d.inputs],
            "outputs": [asdict(t) for t in d.outputs], "bytes": d.bytes.as_dict(),
            "in_coordination": d.in_coordination, "logs": logs(d)}
