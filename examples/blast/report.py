"""What the run moved and saved, where the ComputeUnits ran, and the printed / JSON summary.

Bytes come from pilot-data's one byte accounting (:class:`pilotdata.records.ByteCategory`), read through
:mod:`pilotdata.inspect` for this run, so they are the numbers ``pdata report``, ``pdata run show`` and
``pdata cu show`` give: *uploaded* (the client put files in a store), *replicated* (store to store),
*staged* (a pilot copied an input into its cache), *linked* (a copy made as a link: nothing moved),
*cache hits* (an input already in the pilot's cache: nothing moved) and *outputs*.

The *naive* figure is what per-CU staging would move: every CU copying every input itself, which is
the sum of the three input categories of the CUs' records (staged + linked + cache hits: each CU's
inputs are counted in exactly one of them). *Saved* = the inputs linked or found in the cache: what the
per-pilot cache, links and placement avoided. A replica made as a link (two stores on one filesystem)
is counted as *linked* too, but it is no CU's input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pilotdata.history import History
from pilotdata.inspect import ByteTotals, Inspector
from pilotdata.session import Session
from pilotdata.states import Kind

from .data import format_size

if TYPE_CHECKING:
    from .workflow import Outcome


@dataclass
class Traffic:
    """The run's bytes by category, per pilot, and what each pilot's cache held at the end."""

    run: str = ""
    bytes: ByteTotals = field(default_factory=lambda: ByteTotals.of({}))
    by_pilot: dict[str, ByteTotals] = field(default_factory=dict)
    """Pilot name -> its bytes (``client`` for uploads and replications made by this process)."""
    cached: dict[str, list[str]] = field(default_factory=dict)
    """Pilot name -> DataUnit ids in its cache at the end."""

    def _of(self, category: str) -> int:
        return int(self.bytes.by_category[category])

    @property
    def uploaded(self) -> int:
        """Bytes the client put into stores."""
        return self._of("uploaded")

    @property
    def replicated(self) -> int:
        """Bytes copied store to store."""
        return self._of("replicated")

    @property
    def staged(self) -> int:
        """Input bytes pilots copied into their caches."""
        return self._of("staged")

    @property
    def linked(self) -> int:
        """Input bytes pilots linked into their caches (nothing moved)."""
        return self._of("linked")

    @property
    def cache_hit(self) -> int:
        """Input bytes found in the pilots' caches (nothing moved)."""
        return self._of("cache_hit")

    @property
    def output(self) -> int:
        """Bytes of the CUs' outputs."""
        return self._of("output")

    @property
    def moved(self) -> int:
        """Every byte copied: uploads, replications, staging, outputs."""
        return self.bytes.moved

    @property
    def naive(self) -> int:
        """Input bytes per-CU staging would have moved (staged + linked + cache hits)."""
        return self.bytes.inputs

    @property
    def saved(self) -> int:
        """Input bytes that moved nothing (linked + cache hits)."""
        return self.bytes.saved


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


def traffic(session: Session, run: str, pilot_ids: Sequence[str]) -> Traffic:
    """The bytes of ``run`` by category and per pilot, from the history (drained first), and the pilots'
    caches from coordination."""
    names = pilot_names(session, pilot_ids)
    with History(session.history_url) as history:
        ins = Inspector(session.coord, history)
        ins.refresh()
        out = Traffic(run, ins.bytes(run))
        for who, totals in ins.bytes_by("pilot", run).items():
            out.by_pilot[names.get(who, who)] = totals
    for rec in session.coord.get_many(Kind.PILOT, list(pilot_ids)):
        if rec is not None:
            out.cached[names.get(rec.id, rec.id)] = [str(d) for d in rec.data.get("cached_dus") or []]
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
        row("bytes moved", f"{format_size(t.moved)} = uploads {format_size(t.uploaded)} + replication "
                           f"{format_size(t.replicated)} + staged into pilot caches {format_size(t.staged)} + "
                           f"outputs {format_size(t.output)}")
        row("not moved", f"{format_size(t.saved)} ({_pct(t.saved, t.naive)} of the inputs) = inputs linked "
                         f"{format_size(t.bytes.for_cus['linked'])} + cache hits {format_size(t.cache_hit)}; "
                         f"per-CU staging would have moved {format_size(t.naive)}"
                         + (f"; replicas made as links {format_size(t.bytes.linked_replicas)}"
                            if t.bytes.linked_replicas else ""))
        for who in sorted(t.cached):
            mine = t.by_pilot.get(who, ByteTotals.of({}))
            row("", f"{who}: cache holds {len(t.cached[who])} DataUnits; staged "
                    f"{format_size(mine.by_category['staged'])}, linked {format_size(mine.by_category['linked'])}, "
                    f"cache hits {format_size(mine.by_category['cache_hit'])}")
    row("where CUs ran", where_text(o.placement))
    if o.planted is not None:
        row("planted matches", f"{len(o.planted.found)}/{o.planted.expected} found")
        for p in o.planted.missing[:10]:
            row("", f"missing: {p.query} -> {p.subject} {p.sstart}..{p.send} ({p.strand})")
    if o.merged is not None:
        row("hits", f"{len(o.merged.hits)} in {o.merged.path}")
    for failure in o.cu_failures[:10]:
        row("failed", failure)
    row("coordination", f"{o.coordination} (namespace {o.namespace}, run {t.run if t else '-'})")
    kept = "" if o.config.keep else (" (stores, sandboxes and this run's records removed; the history keeps "
                                     "the run: pdata --namespace NS run ls --all; --keep keeps them)")
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
        "bytes": {**t.bytes.as_dict(), "naive": t.naive,
                  "by_pilot": {who: b.as_dict() for who, b in sorted(t.by_pilot.items())}},
        "run": t.run,
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
