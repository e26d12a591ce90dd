"""The timeline of a run, as ``pdata report`` draws it (PNG and self-contained HTML).

Built once from :mod:`pilotdata.inspect` (:func:`build`), then drawn by :mod:`.report_png` and
:mod:`.report_html`:

* one row per **pilot slot**, every slot of every pilot (idle ones too), labelled by site; across
  each row the pilot's **lifetime** (from Running to its end, or now) in light grey: what is not
  covered by a ComputeUnit there is **idle**;
* on the rows, each CU's last attempt: **staging input**, **running** (coloured by its final state),
  **staging output**;
* the **queue**: how many CUs wait (Pending, from their binding to their start) and run at each moment;
* the **transfers**, per pilot (or the client), coloured by byte category;
* **utilisation** = slot-seconds busy / slot-seconds the pilots offered, both within the run's window
  (its first submission or transfer to its last end, or now).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pilotdata.inspect import ByteTotals, CUFilter, CUSummary, Inspector, PilotSummary, TransferItem
from pilotdata.records import ByteCategory
from pilotdata.states import ComputeUnitState, is_final

_S = ComputeUnitState

STATE_COLOURS = {_S.DONE.value: "#2ca02c", _S.FAILED.value: "#d62728", _S.CANCELED.value: "#8c8c8c",
                 "active": "#1f77b4"}
"""Colour of a CU's run segment by its (last) state; ``active`` for CUs not final yet."""
STAGE_IN_COLOUR = "#ff7f0e"
STAGE_OUT_COLOUR = "#9467bd"
LIFETIME_COLOUR = "#eeeeee"
CATEGORY_COLOURS = {ByteCategory.UPLOADED.value: "#17becf", ByteCategory.REPLICATED.value: "#e377c2",
                    ByteCategory.STAGED.value: "#ff7f0e", ByteCategory.LINKED.value: "#bcbd22",
                    ByteCategory.CACHE_HIT.value: "#98df8a", ByteCategory.OUTPUT.value: "#9467bd"}
"""Colour of each byte category."""
KIND_LABELS = {"stage_in": "staging input", "run": "running", "stage_out": "staging output"}


@dataclass(frozen=True)
class Segment:
    """A piece of one CU on one pilot slot: ``kind`` is ``stage_in``, ``run`` or ``stage_out``."""

    pilot: str
    lane: int
    kind: str
    start: float
    end: float
    cu: str
    name: str | None
    state: str

    @property
    def colour(self) -> str:
        """Its fill colour."""
        if self.kind == "stage_in":
            return STAGE_IN_COLOUR
        if self.kind == "stage_out":
            return STAGE_OUT_COLOUR
        return STATE_COLOURS.get(self.state, STATE_COLOURS["active"])


@dataclass(frozen=True)
class PilotRows:
    """One pilot's rows: its slots, lifetime and what its slots were busy with."""

    id: str
    site: str | None
    slots: int
    lanes: int
    """Rows drawn: every slot, or more when CUs overlapped beyond them."""
    started: float | None
    ended: float | None
    busy: float
    """Slot-seconds its CUs held within the window."""
    offered: float
    """Slot-seconds it offered within the window (slots x lifetime)."""

    @property
    def label(self) -> str:
        """``site-a/node-1 (pilot-1234abcd)``, or the id alone without a site."""
        return f"{self.site} ({self.id})" if self.site else self.id

    @property
    def utilisation(self) -> float | None:
        """Busy / offered (``None`` when it offered nothing in the window)."""
        return self.busy / self.offered if self.offered > 0 else None


@dataclass(frozen=True)
class TransferMark:
    """A transfer on the timeline: from ``end - seconds`` to ``end``, by ``pilot`` (``None``: a client)."""

    pilot: str | None
    category: str
    start: float
    end: float
    bytes: int
    du: str
    cu: str | None


@dataclass
class Timeline:
    """Everything the report draws (see the module docstring)."""

    title: str
    run: str | None
    t0: float
    t1: float
    pilots: list[PilotRows]
    segments: list[Segment]
    transfers: list[TransferMark]
    queue: list[tuple[float, int, int]]
    """``(time, waiting, running)`` after each change, in time order."""
    cus: int
    states: dict[str, int]
    queue_wait_mean: float | None
    queue_wait_max: float | None
    bytes: ByteTotals
    bytes_by_site: dict[str, ByteTotals] = field(default_factory=dict)

    @property
    def busy(self) -> float:
        """Slot-seconds busy, all pilots."""
        return sum(p.busy for p in self.pilots)

    @property
    def offered(self) -> float:
        """Slot-seconds offered, all pilots."""
        return sum(p.offered for p in self.pilots)

    @property
    def idle(self) -> float:
        """Slot-seconds offered and not used."""
        return max(0.0, self.offered - self.busy)

    @property
    def utilisation(self) -> float | None:
        """Busy / offered, ``None`` without pilots in the window."""
        return self.busy / self.offered if self.offered > 0 else None

    def summary(self) -> dict[str, object]:
        """The figures ``pdata report --json`` prints."""
        return {"run": self.run, "compute_units": self.cus, "states": self.states,
                "pilots": len(self.pilots), "slots": sum(p.lanes for p in self.pilots),
                "window": [self.t0, self.t1], "busy_slot_seconds": round(self.busy, 3),
                "offered_slot_seconds": round(self.offered, 3), "idle_slot_seconds": round(self.idle, 3),
                "utilisation": None if self.utilisation is None else round(self.utilisation, 4),
                "queue_wait_mean": self.queue_wait_mean, "queue_wait_max": self.queue_wait_max,
                "transfers": len(self.transfers), "bytes": self.bytes.as_dict(),
                "bytes_by_site": {site: b.as_dict() for site, b in self.bytes_by_site.items()},
                "pilot_utilisation": {p.id: None if p.utilisation is None else round(p.utilisation, 4)
                                      for p in self.pilots}}


def assign_lanes(intervals: Sequence[tuple[str, float, float]]) -> dict[str, int]:
    """Give each ``(key, start, end)`` the lowest lane free at its start (slots of one pilot)."""
    lanes_end: list[float] = []
    out: dict[str, int] = {}
    for key, start, end in sorted(intervals, key=lambda i: (i[1], i[2], i[0])):
        lane = next((i for i, busy_until in enumerate(lanes_end) if busy_until <= start), len(lanes_end))
        if lane == len(lanes_end):
            lanes_end.append(end)
        else:
            lanes_end[lane] = end
        out[key] = lane
    return out


def _overlap(a: float, b: float, lo: float, hi: float) -> float:
    return max(0.0, min(b, hi) - max(a, lo))


def _segments_of(cu: CUSummary, pilot: str, lane: int, start: float, end: float) -> list[Segment]:
    running = cu.times.get(_S.RUNNING.value)
    if running is not None and running < start:
        running = None
    out_at = cu.times.get(_S.STAGING_OUTPUT.value)
    if out_at is not None and (running is None or out_at < running):
        out_at = None
    parts: list[tuple[str, float, float]] = []
    if running is None or running > start:
        parts.append(("stage_in", start, running if running is not None else end))
    if running is not None:
        parts.append(("run", running, out_at if out_at is not None else end))
    if out_at is not None:
        parts.append(("stage_out", out_at, end))
    return [Segment(pilot, lane, kind, a, max(a, b), cu.id, cu.name, cu.state) for kind, a, b in parts if b >= a]


def _queue_curve(cus: Iterable[CUSummary], now: float) -> list[tuple[float, int, int]]:
    changes: dict[float, list[int]] = defaultdict(lambda: [0, 0])
    for cu in cus:
        pending = cu.times.get(_S.PENDING.value)
        started = cu.started
        end = cu.times.get(cu.state) if is_final(cu.state) else now
        if pending is not None:
            wait_end = started if started is not None else (end if end is not None else now)
            if wait_end >= pending:
                changes[pending][0] += 1
                changes[wait_end][0] -= 1
        if started is not None:
            run_end = end if end is not None else now
            changes[started][1] += 1
            changes[max(run_end, started)][1] -= 1
    out: list[tuple[float, int, int]] = []
    waiting = running = 0
    for t in sorted(changes):
        waiting += changes[t][0]
        running += changes[t][1]
        out.append((t, waiting, running))
    return out


def build(ins: Inspector, run: str | None, *, title: str | None = None, now: float | None = None) -> Timeline:
    """The timeline of ``run`` (``None``: every run of the namespace)."""
    now = time.time() if now is None else now
    cus = list(ins.iter_cus(CUFilter(run=run)))
    pilots = {p.id: p for p in ins.pilots(run=run)}
    transfers = [_mark(t) for t in ins.transfers(run)]
    starts = [cu.created for cu in cus] + [t.start for t in transfers]
    ends = [cu.times.get(cu.state, now) if is_final(cu.state) else now for cu in cus]
    t0 = min(starts, default=now)
    t1 = max(ends + [t.end for t in transfers], default=now)
    per_pilot: dict[str, list[tuple[CUSummary, float, float]]] = defaultdict(list)
    waits: list[float] = []
    for cu, end in zip(cus, ends, strict=True):
        if cu.queue_wait is not None:
            waits.append(cu.queue_wait)
        started = cu.started
        if started is None or not cu.place:
            continue
        per_pilot[cu.place].append((cu, started, max(end, started)))
    segments: list[Segment] = []
    rows: list[PilotRows] = []
    for pilot_id in sorted(set(per_pilot) | set(pilots), key=lambda p: (_pilot_start(pilots.get(p), t0), p)):
        items = per_pilot.get(pilot_id, [])
        lanes = assign_lanes([(cu.id, a, b) for cu, a, b in items])
        busy = 0.0
        for cu, a, b in items:
            segments += _segments_of(cu, pilot_id, lanes[cu.id], a, b)
            busy += _overlap(a, b, t0, t1) * (cu.slots or 1)
        info = pilots.get(pilot_id)
        slots = int(info.slots or 1) if info is not None and info.slots else 1
        started = info.started if info is not None else min((a for _, a, _ in items), default=None)
        ended = info.ended if info is not None else None
        offered = _overlap(started, ended if ended is not None else now, t0, t1) * slots if started else 0.0
        rows.append(PilotRows(pilot_id, info.site if info else None, slots, max(slots, len(set(lanes.values()))),
                              started, ended, busy, max(offered, busy)))
    states: dict[str, int] = {}
    for cu in cus:
        states[cu.state] = states.get(cu.state, 0) + 1
    by_site: dict[str, ByteTotals] = ins.bytes_by("site", run)
    return Timeline(
        title=title or (f"pilot-data run {run}" if run else "pilot-data: every run"), run=run, t0=t0,
        t1=t1, pilots=rows, segments=segments,
        transfers=transfers, queue=_queue_curve(cus, now), cus=len(cus), states=states,
        queue_wait_mean=sum(waits) / len(waits) if waits else None, queue_wait_max=max(waits, default=None),
        bytes=ins.bytes(run), bytes_by_site=by_site)


def _pilot_start(info: PilotSummary | None, default: float) -> float:
    if info is None:
        return default
    return info.started if info.started is not None else info.created


def _mark(t: TransferItem) -> TransferMark:
    return TransferMark(t.pilot, t.category, t.time - t.seconds, t.time, t.bytes, t.du, t.cu)
