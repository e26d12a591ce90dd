"""History commands: ``pdata history`` (events and transfers from the SQL history) and ``pdata report``
(a PNG: ComputeUnits per pilot slot over time, coloured by state with staging shown, and bytes moved
per site).

Both first drain the coordination event stream into the history database with
:class:`~pilotdata.history.HistoryWriter` (idempotent), then query it for this coordination stream only.
The report needs matplotlib, the optional extra ``report`` (``pip install 'pilot-data[report]'``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from pilotdata.cli.lookup import resolve
from pilotdata.cli.options import SINCE, CliContext, json_option, pass_cli
from pilotdata.cli.output import emit, human_size, human_time, table
from pilotdata.errors import MissingDependencyError, NotFoundError
from pilotdata.states import FINAL_STATES, Kind

if TYPE_CHECKING:
    from pilotdata.history import CUTimeline, History, TransferRecord

INSTALL_HINT = "pip install 'pilot-data[report]'"

STATE_COLOURS = {"Done": "#2ca02c", "Failed": "#d62728", "Canceled": "#8c8c8c", "active": "#1f77b4"}
"""Colour of a CU's run segment by its (last) state; ``active`` for CUs not final yet."""
STAGE_IN_COLOUR = "#ff7f0e"
STAGE_OUT_COLOUR = "#9467bd"
SITE_COLOURS = ("#17becf", "#bcbd22", "#e377c2", "#1f77b4", "#ff7f0e", "#7f7f7f")


def _drained(cli: CliContext) -> tuple[History, str]:
    """Drain the coordination events into the history; return it and this stream's source id."""
    from pilotdata.history import HistoryWriter

    writer = HistoryWriter(cli.session().coord, cli.history())
    writer.drain()
    return writer.history, writer.source


def _detail_text(detail: Mapping[str, Any], limit: int = 70) -> str:
    text = ", ".join(f"{k}={v}" for k, v in sorted(detail.items()) if v not in (None, ""))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------ history
@click.command("history")
@click.option("--cu", help="Only the events of this ComputeUnit.")
@click.option("--entity", type=click.Choice(["cu", "pilot", "du"]), help="Only events of this kind of entity.")
@click.option("--pilot", help="Only events recorded by this pilot.")
@click.option("--since", type=SINCE, help="From this time: 10m, 2h, 3d ago, an ISO date/time, or epoch seconds.")
@click.option("--state", help="Only transitions into this state (Done, Failed, ...).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest N events.")
@click.option("--transfers", "show_transfers", is_flag=True, help="List transfer records instead of events.")
@json_option
@pass_cli
def history(cli: CliContext, cu: str | None, entity: str | None, pilot: str | None, since: float | None,
            state: str | None, limit: int, show_transfers: bool) -> None:
    """Events from the history database (state transitions, with reasons), oldest first."""
    from pilotdata.history import queries

    db, source = _drained(cli)
    if show_transfers:
        rows = list(reversed(queries.transfers(db, since=since, pilot=pilot, source=source, limit=limit,
                                               newest_first=True)))
        data = [asdict(r) for r in rows]
        emit(cli, data, lambda: table(["TIME", "DU", "BYTES", "SECONDS", "FROM", "TO", "OK"], [
            [human_time(r.time), r.du, human_size(r.bytes), f"{r.seconds:.2f}", r.source_url, r.destination_url,
             "yes" if r.ok else "no"] for r in rows], empty="(no transfers recorded)"))
        return
    if cu is not None:
        cu_id = _cu_in_history(cli, db, cu, source)
        events = [e for e in queries.events_for(db, "cu", cu_id, source=source)
                  if (since is None or e.time >= since) and (state is None or e.to_state == state)
                  and (pilot is None or e.pilot == pilot)][-limit:]
    else:
        events = list(reversed(queries.events(db, since=since, entity=entity, state=state, pilot=pilot,
                                              source=source, limit=limit, newest_first=True)))
    data = [asdict(e) for e in events]
    emit(cli, data, lambda: table(["TIME", "ENTITY", "ID", "TRANSITION", "PILOT", "ATTEMPT", "DETAIL"], [
        [human_time(e.time), e.entity, e.entity_id, f"{e.from_state or '-'} -> {e.to_state or '-'}", e.pilot,
         e.attempt, _detail_text(e.detail)] for e in events], empty="(no events)"))


def _cu_in_history(cli: CliContext, db: History, ref: str, source: str) -> str:
    """The CU id for ``ref``: resolved in coordination, or an id the history knows (records may be gone)."""
    from pilotdata.history import queries

    try:
        return resolve(cli.session(), Kind.CU, ref)
    except NotFoundError:
        if queries.events_for(db, "cu", ref, source=source):
            return ref
        raise


# ------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class Bar:
    """One horizontal segment of the timeline: a CU on one pilot slot, from ``start`` for ``width`` s."""

    pilot: str
    lane: int
    start: float
    width: float
    colour: str
    cu_id: str


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


def timeline_bars(timelines: Iterable[CUTimeline], now: float | None = None) -> list[Bar]:
    """Segments of every CU that reached a slot: staging in, running (coloured by state), staging out."""
    now = time.time() if now is None else now
    per_pilot: dict[str, list[tuple[CUTimeline, float, float]]] = defaultdict(list)
    for tl in timelines:
        start = tl.times.get("StagingInput", tl.times.get("Running"))
        if tl.pilot is None or start is None:
            continue
        end = tl.times.get(tl.state, now) if tl.state in FINAL_STATES else now
        per_pilot[tl.pilot].append((tl, start, max(end, start)))
    bars: list[Bar] = []
    for pilot, items in sorted(per_pilot.items()):
        lanes = assign_lanes([(tl.cu_id, start, end) for tl, start, end in items])
        for tl, start, end in items:
            lane = lanes[tl.cu_id]
            run_colour = STATE_COLOURS.get(tl.state, STATE_COLOURS["active"])
            running = tl.times.get("Running")
            if running is not None and running < start:  # retried: an older Running than the last StagingInput
                running = None
            out_at = tl.times.get("StagingOutput")
            if out_at is not None and (running is None or out_at < running):
                out_at = None
            marks = [("in", start, running if running is not None else end, STAGE_IN_COLOUR)]
            if running is not None:
                marks.append(("run", running, out_at if out_at is not None else end, run_colour))
            if out_at is not None:
                marks.append(("out", out_at, end, STAGE_OUT_COLOUR))
            for _name, a, b, colour in marks:
                bars.append(Bar(pilot, lane, a, max(b - a, 0.0), colour, tl.cu_id))
    return bars


def site_label(url: str | None, pd_by_url: Mapping[str, tuple[str, Mapping[str, Any]]]) -> str:
    """Where a transfer went: the store's ``datacenter/machine`` labels, else its id, else the URL's host."""
    if not url:
        return "unknown"
    for pd_url, (pd_id, labels) in pd_by_url.items():
        if url.rstrip("/") == pd_url.rstrip("/") or url.startswith(pd_url.rstrip("/") + "/"):
            path = [str(labels[k]) for k in ("datacenter", "machine") if labels.get(k)]
            return "/".join(path) if path else pd_id
    try:
        parts = urlsplit(url)
    except ValueError:
        return url[:40]
    if parts.hostname:
        return parts.hostname
    return "localhost" if parts.scheme in ("", "file") else parts.scheme


def bytes_per_site(transfers: Iterable[TransferRecord],
                   pd_by_url: Mapping[str, tuple[str, Mapping[str, Any]]]) -> dict[str, int]:
    """Successful bytes moved, by destination site."""
    out: dict[str, int] = defaultdict(int)
    for tr in transfers:
        if tr.ok:
            out[site_label(tr.destination_url, pd_by_url)] += tr.bytes
    return dict(sorted(out.items()))


def render(bars: Sequence[Bar], sites: Mapping[str, int], out: Path, *, title: str, t0: float) -> tuple[int, int]:
    """Draw the report PNG into ``out``; return its size in pixels (width, height)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise MissingDependencyError(f"pdata report needs matplotlib: {INSTALL_HINT}") from exc

    rows = sorted({(b.pilot, b.lane) for b in bars})
    row_of = {key: i for i, key in enumerate(rows)}
    span = max([b.start + b.width - t0 for b in bars], default=1.0) or 1.0
    fig = Figure(figsize=(11, 3.5 + 0.3 * max(len(rows), 4)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(2, 1, height_ratios=[max(len(rows), 4), 3])
    for b in bars:  # very short segments stay visible
        ax.barh(row_of[(b.pilot, b.lane)], max(b.width, span / 400), left=b.start - t0, height=0.8,
                color=b.colour, edgecolor="black", linewidth=0.3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{pilot} / slot {lane}" for pilot, lane in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds since {human_time(t0)}")
    ax.set_title(title, loc="left")
    ax.grid(axis="x", alpha=0.3)
    if not rows:
        ax.text(0.5, 0.5, "no ComputeUnit reached a pilot slot", ha="center", va="center", transform=ax.transAxes)
    legend = [Patch(color=STAGE_IN_COLOUR, label="staging input"),
              Patch(color=STAGE_OUT_COLOUR, label="staging output"),
              *[Patch(color=c, label=s if s != "active" else "running") for s, c in STATE_COLOURS.items()]]
    try:
        fig.legend(handles=legend, loc="outside upper right", ncol=6, fontsize=8, frameon=False)
    except ValueError:  # matplotlib < 3.7 has no "outside" legends
        ax.legend(handles=legend, loc="upper right", ncol=3, fontsize=7)
    if sites:
        names = list(sites)
        bx.bar(names, [sites[n] / 1e6 for n in names], color=[SITE_COLOURS[i % len(SITE_COLOURS)]
                                                              for i in range(len(names))])
        bx.tick_params(axis="x", labelsize=8)
    else:
        bx.text(0.5, 0.5, "no transfers recorded", ha="center", va="center", transform=bx.transAxes)
        bx.set_xticks([])
    bx.set_ylabel("MB moved")
    bx.set_title("bytes moved per site (destination)", fontsize=10, loc="left")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    width, height_px = fig.canvas.get_width_height()
    return int(width), int(height_px)


@click.command("report")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG file to write.")
@click.option("--since", type=SINCE, help="Only ComputeUnits active from this time (10m, 2h, ISO date/time).")
@click.option("--title", help="Title of the timeline  [default: namespace and time range]")
@json_option
@pass_cli
def report(cli: CliContext, out: Path, since: float | None, title: str | None) -> None:
    """Write a PNG report: ComputeUnits per pilot slot over time (by state, staging shown) and bytes per site."""
    from pilotdata.history import queries

    if out.suffix.lower() != ".png":
        raise click.BadParameter(f"{str(out)!r} must end in .png", param_hint="--out")
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"pdata report needs matplotlib: {INSTALL_HINT}") from exc
    db, source = _drained(cli)
    session = cli.session()
    timelines = queries.cu_timeline(db, since=since, source=source)
    transfers = queries.transfers(db, since=since, source=source)
    pds = [r for r in session.coord.get_many(Kind.PD, session.coord.list_ids(Kind.PD)) if r is not None]
    pd_by_url = {str(r.data.get("url")): (r.id, r.data.get("labels") or {}) for r in pds}
    bars = timeline_bars(timelines)
    sites = bytes_per_site(transfers, pd_by_url)
    t0 = min((b.start for b in bars), default=since or time.time())
    width, height = render(bars, sites, out, title=title or f"pilot-data: namespace {session.namespace}", t0=t0)
    data = {"out": str(out), "width": width, "height": height, "compute_units": len({b.cu_id for b in bars}),
            "pilots": len({b.pilot for b in bars}), "slots": len({(b.pilot, b.lane) for b in bars}),
            "bytes_per_site": sites}
    emit(cli, data, lambda: click.echo(
        f"wrote {out} ({width}x{height}): {data['compute_units']} CUs on {data['pilots']} pilot(s), "
        f"{human_size(sum(sites.values()))} moved to {len(sites)} site(s)"))


COMMANDS = [history, report]
"""The history commands."""
