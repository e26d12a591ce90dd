"""What the run moved and saved, where the ComputeUnits ran, and the printed / JSON summary.

Bytes come from the coordination event stream: every copy the system makes is a ``transfer`` event
(``bytes``, ``du``, source, destination, the pilot that made it). Classified as

* *uploaded*: the client put a DataUnit's files on a PilotData;
* *staged*: a pilot brought an input DataUnit into its cache (once per pilot, then shared);
* *outputs*: a CU's output files went into the output DataUnit.

A transfer event whose ``method`` is ``link`` / ``hardlink`` / ``symlink`` (or with ``linked: true``)
moved no bytes: it is counted as *linked* instead (same filesystem fast path).

The *naive* figure is what per-CU staging would move: every CU copying every input DataUnit itself.
*Saved* = naive - staged: what the per-pilot cache and data-aware placement avoided. When no staging
event exists (an agent that does not report them), the pilots' ``cached_dus`` give an upper bound.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pilotdata.dataunits import du_size
from pilotdata.session import Session
from pilotdata.states import Kind

from .data import format_size

if TYPE_CHECKING:
    from .workflow import Outcome


_LINK_METHODS = ("link", "hardlink", "symlink")


@dataclass
class Traffic:
    """Bytes moved, by kind, and what per-CU staging would have moved."""

    naive: int = 0
    staged: int = 0
    uploaded: int = 0
    outputs: int = 0
    linked: int = 0
    staged_from: str = "transfer events"
    staged_by_pilot: dict[str, int] = field(default_factory=dict)
    cached: dict[str, list[str]] = field(default_factory=dict)
    """Pilot name -> DataUnit ids in its cache at the end."""
    events: int = 0

    @property
    def moved(self) -> int:
        """Every byte copied: uploads, staging, outputs."""
        return self.uploaded + self.staged + self.outputs

    @property
    def saved(self) -> int:
        """Bytes per-CU staging would have moved that were not moved."""
        return max(0, self.naive - self.staged)


def pilot_names(session: Session, pilot_ids: Sequence[str]) -> dict[str, str]:
    """``pilot id -> "site-a/node-1"`` from the pilots' labels (the id when a pilot has none)."""
    names = {}
    for rec in session.coord.get_many(Kind.PILOT, list(pilot_ids)):
        if rec is not None:
            labels = rec.data.get("labels") or {}
            parts = [str(labels[k]) for k in ("datacenter", "machine") if labels.get(k)]
            names[rec.id] = "/".join(parts) or rec.id
    return names


def site_of_pd(session: Session, pd_ids: Sequence[str]) -> str:
    """``"site-a (pd-...)"`` for the PilotData holding a replica."""
    shown = []
    for rec in session.coord.get_many(Kind.PD, list(pd_ids)):
        if rec is not None:
            site = (rec.data.get("labels") or {}).get("datacenter") or "?"
            shown.append(f"{site} ({rec.id})")
    return ", ".join(shown) or "nowhere"


def traffic(session: Session, cu_inputs: Sequence[Sequence[str]], output_du: str,
            pilot_ids: Sequence[str]) -> Traffic:
    """Add up the namespace's transfer events and the pilots' caches (see the module docstring).

    ``cu_inputs``: the input DataUnit ids of each ComputeUnit (for the naive figure).
    """
    coord = session.coord
    input_dus = sorted({du for inputs in cu_inputs for du in inputs})
    sizes = {rec.id: du_size(rec) for rec in coord.get_many(Kind.DU, input_dus) if rec is not None}
    names = pilot_names(session, pilot_ids)
    out = Traffic()
    out.naive = sum(sizes.get(du, 0) for inputs in cu_inputs for du in inputs)
    cursor: str | None = None
    staging_seen = False
    while True:
        events = coord.events_after(cursor, limit=1000)
        if not events:
            break
        cursor = events[-1].cursor
        for ev in events:
            if ev.entity != "transfer":
                continue
            out.events += 1
            du = str(ev.detail.get("du") or ev.id)
            nbytes = int(ev.detail.get("bytes") or 0)
            linked = bool(ev.detail.get("linked")) or ev.detail.get("method") in _LINK_METHODS
            if linked:
                out.linked += nbytes
            if du == output_du:
                out.outputs += 0 if linked else nbytes
            elif ev.pilot:
                staging_seen = True
                who = names.get(ev.pilot, ev.pilot)
                moved = 0 if linked else nbytes
                out.staged += moved
                out.staged_by_pilot[who] = out.staged_by_pilot.get(who, 0) + moved
            elif not linked:
                out.uploaded += nbytes
    for rec in coord.get_many(Kind.PILOT, list(pilot_ids)):
        if rec is not None:
            out.cached[names.get(rec.id, rec.id)] = [str(d) for d in rec.data.get("cached_dus") or []]
    if not staging_seen and any(out.cached.values()):
        out.staged_from = "pilots' cached DataUnits (upper bound: no staging events)"
        for who, dus in out.cached.items():
            nbytes = sum(sizes.get(d, 0) for d in dus)
            out.staged_by_pilot[who] = nbytes
            out.staged += nbytes
    return out


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "-"


def summary_lines(o: Outcome) -> list[str]:
    """The human summary printed at the end of a run."""
    lines = ["", f"BLAST-like search on pilot-data: {'OK' if o.ok else 'PROBLEMS'}"]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<18}{text}")

    engines = ", ".join(f"{k} ({v} chunk files)" for k, v in sorted((o.merged.engines if o.merged else {}).items()))
    row("engine", f"{o.engine}" + (f" -> hits written by {engines}" if engines else ""))
    total = sum(o.cu_states.values())
    states = ", ".join(f"{n} {s}" for s, n in sorted(o.cu_states.items()))
    row("compute units", f"{o.cu_states.get('Done', 0)}/{total} done ({states})")
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in o.phases.items() if k != "total")
    row("wall time", f"{o.phases.get('total', 0.0):.1f}s ({phases})")
    row("database", f"{data_desc(o)}")
    t = o.traffic
    if t is not None:
        row("bytes moved", f"{format_size(t.moved)} = uploads {format_size(t.uploaded)} + staged into pilot "
                           f"caches {format_size(t.staged)} + outputs {format_size(t.outputs)}"
                           + (f"; {format_size(t.linked)} linked, not copied" if t.linked else ""))
        row("bytes saved", f"{format_size(t.saved)} ({_pct(t.saved, t.naive)}): per-CU staging would move "
                           f"{format_size(t.naive)} of inputs, the pilot caches and placement moved "
                           f"{format_size(t.staged)} (from {t.staged_from})")
        for who in sorted(t.cached):
            row("", f"{who}: cache holds {len(t.cached[who])} DataUnits, staged "
                    f"{format_size(t.staged_by_pilot.get(who, 0))}")
    row("where CUs ran", where_text(o.placement))
    if o.planted is not None:
        row("planted matches", f"{len(o.planted.found)}/{o.planted.expected} found")
        for p in o.planted.missing[:10]:
            row("", f"missing: {p.query} -> {p.subject} {p.sstart}..{p.send} ({p.strand})")
    if o.merged is not None:
        row("hits", f"{len(o.merged.hits)} in {o.merged.path}")
    for failure in o.cu_failures[:10]:
        row("failed", failure)
    row("coordination", f"{o.coordination} (namespace {o.namespace})")
    kept = "" if o.config.keep else " (stores and sandboxes removed; --keep keeps them)"
    row("run directory", f"{o.run_dir}{kept}")
    return lines


def per_site(placement: dict[str, int]) -> dict[str, dict[str, int]]:
    """``{"site-a/node-1": 3, ...}`` -> ``{"site-a": {"node-1": 3, ...}, ...}``."""
    sites: dict[str, dict[str, int]] = {}
    for where, count in placement.items():
        site, _, machine = where.partition("/")
        sites.setdefault(site, {})[machine or site] = count
    return sites


def where_text(placement: dict[str, int]) -> str:
    """``site-a: 4 (node-1: 4); site-b: 4 (node-2: 4)``."""
    parts = []
    for site, machines in sorted(per_site(placement).items()):
        inner = ", ".join(f"{m}: {n}" for m, n in sorted(machines.items()))
        parts.append(f"{site}: {sum(machines.values())} ({inner})")
    return "; ".join(parts) or "nowhere"


def data_desc(o: Outcome) -> str:
    """One line on the database DataUnit."""
    w = o.workload
    built = f"cached build reused from {w.root}" if w.reused else f"built in {w.build_seconds:.1f}s into {w.root}"
    return (f"{format_size(w.db_size)} FASTA, {w.records} records -> one DataUnit {o.db_du} of "
            f"{format_size(o.db_bytes)} at {o.db_site}; {built}")


def summary_json(o: Outcome) -> str:
    """The summary as JSON (``results/summary.json``), for scripts and tests."""
    t = o.traffic or Traffic()
    doc = {
        "ok": o.ok,
        "engine": o.engine,
        "hit_engines": o.merged.engines if o.merged else {},
        "compute_units": o.cu_states,
        "failures": o.cu_failures,
        "placement": o.placement,
        "placement_by_site": {site: sum(m.values()) for site, m in per_site(o.placement).items()},
        "phases_seconds": {k: round(v, 3) for k, v in o.phases.items()},
        "db_size": o.workload.db_size,
        "db_du": o.db_du,
        "db_du_bytes": o.db_bytes,
        "db_reused": o.workload.reused,
        "bytes": {"moved": t.moved, "uploaded": t.uploaded, "staged": t.staged, "outputs": t.outputs,
                  "linked": t.linked, "naive": t.naive, "saved": t.saved, "staged_from": t.staged_from,
                  "staged_by_pilot": t.staged_by_pilot},
        "cached_dus": t.cached,
        "planted": {"found": len(o.planted.found) if o.planted else 0,
                    "expected": o.planted.expected if o.planted else 0,
                    "missing": [p.query for p in o.planted.missing] if o.planted else []},
        "hits": len(o.merged.hits) if o.merged else 0,
        "hits_file": str(o.merged.path) if o.merged else None,
        "namespace": o.namespace,
        "run_dir": str(o.run_dir),
    }
    return json.dumps(doc, indent=1, sort_keys=True)
