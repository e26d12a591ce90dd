"""The PNG of ``pdata report`` (matplotlib, the optional ``report`` extra): a :class:`~.timeline.Timeline`
drawn as four panels: pilot slots over time, the queue, the transfers, and bytes per site by category."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from pilotdata.cli.output import human_duration, human_time
from pilotdata.cli.timeline import (
    CATEGORY_COLOURS,
    LIFETIME_COLOUR,
    STAGE_IN_COLOUR,
    STAGE_OUT_COLOUR,
    STATE_COLOURS,
    Timeline,
)
from pilotdata.errors import MissingDependencyError

INSTALL_HINT = "pip install 'pilot-data[report]'"


def headline(tl: Timeline) -> str:
    """``12 CUs (10 Done, 2 Failed), utilisation 63%, mean queue wait 1.2 s``."""
    states = ", ".join(f"{n} {s}" for s, n in sorted(tl.states.items()))
    util = "-" if tl.utilisation is None else f"{tl.utilisation:.0%}"
    return (f"{tl.cus} CUs ({states or 'none'}), utilisation {util}, idle {human_duration(tl.idle)} of slot time, "
            f"mean queue wait {human_duration(tl.queue_wait_mean)}")


def render_png(tl: Timeline, out: Path) -> tuple[int, int]:
    """Draw the report PNG into ``out``; return its size in pixels (width, height)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise MissingDependencyError(f"pdata report needs matplotlib: {INSTALL_HINT}") from exc

    rows = [(p, lane) for p in tl.pilots for lane in range(p.lanes)]
    row_of = {(p.id, lane): i for i, (p, lane) in enumerate(rows)}
    t0 = tl.t0
    span = max(tl.t1 - t0, 1e-3)
    movers = sorted({t.pilot or "client" for t in tl.transfers})
    n_rows = max(len(rows), 3)
    fig = Figure(figsize=(12, 5.5 + 0.28 * n_rows + 0.25 * len(movers)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax, qx, tx, bx = fig.subplots(4, 1, height_ratios=[n_rows, 2.2, max(len(movers), 1) * 0.6 + 0.8, 2.4])
    for i, (p, _lane) in enumerate(rows):
        if p.started is not None:
            end = p.ended if p.ended is not None else tl.t1
            ax.broken_barh([(p.started - t0, max(end - p.started, span / 500))], (i - 0.45, 0.9),
                           facecolors=LIFETIME_COLOUR, edgecolors="#cccccc", linewidth=0.3)
    groups: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for s in tl.segments:
        groups[(row_of[(s.pilot, s.lane)], s.colour)].append((s.start - t0, max(s.end - s.start, span / 400)))
    for (i, colour), spans in groups.items():
        ax.broken_barh(spans, (i - 0.4, 0.8), facecolors=colour, edgecolors="black", linewidth=0.2)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{p.label} slot {lane}" for p, lane in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5 if rows else 0.5, -0.5)
    ax.set_xlim(0, span * 1.02)
    ax.set_title(f"{tl.title}\n{headline(tl)}", loc="left", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if not rows:
        ax.text(0.5, 0.5, "no pilot in this run", ha="center", va="center", transform=ax.transAxes)
    legend = [Patch(color=LIFETIME_COLOUR, label="pilot alive, slot idle"),
              Patch(color=STAGE_IN_COLOUR, label="staging input"),
              Patch(color=STAGE_OUT_COLOUR, label="staging output"),
              *[Patch(color=c, label=s if s != "active" else "running") for s, c in STATE_COLOURS.items()]]
    try:
        fig.legend(handles=legend, loc="outside upper right", ncol=7, fontsize=7, frameon=False)
    except ValueError:  # matplotlib < 3.7 has no "outside" legends
        ax.legend(handles=legend, loc="upper right", ncol=4, fontsize=6)

    if tl.queue:
        times = [t - t0 for t, _, _ in tl.queue]
        qx.step(times, [w for _, w, _ in tl.queue], where="post", color="#d62728", label="waiting (Pending)")
        qx.step(times, [r for _, _, r in tl.queue], where="post", color="#1f77b4", label="staging or running")
        qx.legend(fontsize=7, loc="upper right")
    qx.set_xlim(0, span * 1.02)
    qx.set_ylabel("CUs", fontsize=8)
    qx.set_title(f"queue: mean wait {human_duration(tl.queue_wait_mean)}, longest "
                 f"{human_duration(tl.queue_wait_max)}", loc="left", fontsize=9)
    qx.grid(alpha=0.3)

    row_t = {m: i for i, m in enumerate(movers)}
    spans_t: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for t in tl.transfers:
        spans_t[(row_t[t.pilot or "client"], t.category)].append((t.start - t0, max(t.end - t.start, span / 400)))
    for (i, category), spans in spans_t.items():
        tx.broken_barh(spans, (i - 0.35, 0.7), facecolors=CATEGORY_COLOURS.get(category, "#777777"))
    tx.set_yticks(range(len(movers)))
    tx.set_yticklabels(movers, fontsize=7)
    tx.set_ylim(max(len(movers), 1) - 0.5, -0.5)
    tx.set_xlim(0, span * 1.02)
    tx.set_xlabel(f"seconds since {human_time(t0)}")
    tx.set_title("transfers (by who moved them)", loc="left", fontsize=9)
    tx.legend(handles=[Patch(color=c, label=k) for k, c in CATEGORY_COLOURS.items()], fontsize=7, ncol=6,
              loc="upper right", frameon=False)
    if not tl.transfers:
        tx.text(0.5, 0.5, "no transfers recorded", ha="center", va="center", transform=tx.transAxes)

    sites = list(tl.bytes_by_site)
    bottom = [0.0] * len(sites)
    for category, colour in CATEGORY_COLOURS.items():
        heights = [tl.bytes_by_site[s].by_category.get(category, 0) / 1e6 for s in sites]
        if any(heights):
            bx.bar(sites, heights, bottom=bottom, color=colour, label=category)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    if sites:
        bx.legend(fontsize=7, ncol=6, loc="upper right", frameon=False)
        bx.tick_params(axis="x", labelsize=8)
    else:
        bx.text(0.5, 0.5, "no transfers recorded", ha="center", va="center", transform=bx.transAxes)
        bx.set_xticks([])
    bx.set_ylabel("MB")
    bx.set_title("bytes per site, by category (linked and cache hits moved nothing)", fontsize=9, loc="left")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    width, height = fig.canvas.get_width_height()
    return int(width), int(height)
