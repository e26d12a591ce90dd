"""The self-contained HTML timeline of ``pdata report --out FILE.html``.

One file with everything inline: CSS in a ``<style>`` element, the charts as inline SVG (each bar
carries a ``<title>``, which browsers show as a tooltip), no script, no font, no image, no link to
any other address: it opens offline, from a mail attachment or an air-gapped cluster's login node.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from datetime import datetime

from pilotdata.cli.output import human_duration, human_size, human_time
from pilotdata.cli.report_png import headline
from pilotdata.cli.timeline import (
    CATEGORY_COLOURS,
    KIND_LABELS,
    LIFETIME_COLOUR,
    STAGE_IN_COLOUR,
    STAGE_OUT_COLOUR,
    STATE_COLOURS,
    Timeline,
)

WIDTH = 1200
LEFT = 260
RIGHT = 20
ROW = 16

_CSS = """
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px;
       color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px 0; } h2 { font-size: 15px; margin: 28px 0 6px 0; }
p.headline { margin: 0 0 12px 0; color: #444; }
table { border-collapse: collapse; margin: 6px 0; } th, td { padding: 3px 10px; text-align: left; }
th { background: #f2f2f2; font-weight: 600; } tr:nth-child(even) td { background: #fafafa; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
svg { display: block; } svg text { font-size: 11px; fill: #333; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -2px;
            border: 1px solid #999; }
footer { margin-top: 30px; color: #777; font-size: 11px; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _legend(items: Iterable[tuple[str, str]]) -> str:
    return '<p class="legend">' + "".join(f'<span><i style="background:{c}"></i>{_e(label)}</span>'
                                          for label, c in items) + "</p>"


def _axis(tl: Timeline, y: float, x_of: Callable[[float], float]) -> str:
    span = max(tl.t1 - tl.t0, 1e-3)
    step = _nice_step(span / 8)
    out = []
    t = 0.0
    while t <= span * 1.0001:
        x = x_of(tl.t0 + t)
        out.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>'
                   f'<text x="{x:.1f}" y="{y + 14:.1f}" text-anchor="middle">{_e(human_duration(t))}</text>')
        t += step
    return "".join(out)


def _nice_step(raw: float) -> float:
    for unit in (0.001, 0.01, 0.1, 1, 10, 60, 600, 3600, 36000, 86400):
        for mult in (1, 2, 5):
            if unit * mult >= raw:
                return unit * mult
    return raw


def render_html(tl: Timeline) -> str:
    """The whole page."""
    span = max(tl.t1 - tl.t0, 1e-3)
    plot = WIDTH - LEFT - RIGHT

    def x_of(t: float) -> float:
        return LEFT + (t - tl.t0) / span * plot

    parts = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
             f"<title>{_e(tl.title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(tl.title)}</h1>", f'<p class="headline">{_e(headline(tl))}</p>']
    util = "-" if tl.utilisation is None else f"{tl.utilisation:.1%}"
    figures = [("window", f"{human_time(tl.t0)} to {human_time(tl.t1)} ({human_duration(span)})"),
               ("compute units", ", ".join(f"{n} {s}" for s, n in sorted(tl.states.items())) or "none"),
               ("pilots", f"{len(tl.pilots)} with {sum(p.slots for p in tl.pilots)} slots"),
               ("utilisation", f"{util} (busy {human_duration(tl.busy)} of {human_duration(tl.offered)} slot time; "
                               f"idle {human_duration(tl.idle)})"),
               ("queue wait", f"mean {human_duration(tl.queue_wait_mean)}, longest "
                              f"{human_duration(tl.queue_wait_max)}"),
               ("bytes moved", f"{human_size(tl.bytes.moved)}; not moved (linked, cache hits) "
                               f"{human_size(tl.bytes.saved)}")]
    parts.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in figures) + "</table>")

    # --- pilot slots
    rows = [(p, lane) for p in tl.pilots for lane in range(p.lanes)]
    row_of = {(p.id, lane): i for i, (p, lane) in enumerate(rows)}
    height = max(len(rows), 1) * ROW + 24
    svg = [f'<svg width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
           f'aria-label="pilot slots over time">', _axis(tl, height - 22, x_of)]
    for i, (p, lane) in enumerate(rows):
        y = i * ROW
        svg.append(f'<text x="{LEFT - 6}" y="{y + ROW - 4}" text-anchor="end">{_e(p.label)} slot {lane}</text>')
        if p.started is not None:
            end = p.ended if p.ended is not None else tl.t1
            svg.append(f'<rect x="{x_of(p.started):.1f}" y="{y + 1}" width="{max(x_of(end) - x_of(p.started), 1):.1f}" '
                       f'height="{ROW - 2}" fill="{LIFETIME_COLOUR}"><title>{_e(p.id)}: alive '
                       f"{_e(human_duration(end - p.started))}</title></rect>")
    for s in tl.segments:
        y = row_of[(s.pilot, s.lane)] * ROW
        what = KIND_LABELS[s.kind] + (f" ({s.state})" if s.kind == "run" else "")
        svg.append(f'<rect x="{x_of(s.start):.1f}" y="{y + 2}" width="{max(x_of(s.end) - x_of(s.start), 1.0):.1f}" '
                   f'height="{ROW - 4}" fill="{s.colour}"><title>{_e(s.cu)} {_e(s.name or "")}: {_e(what)}, '
                   f"{_e(human_duration(s.end - s.start))} from {_e(human_time(s.start))}</title></rect>")
    svg.append("</svg>")
    parts.append("<h2>Pilot slots</h2>")
    parts.append(_legend([("pilot alive, slot idle", LIFETIME_COLOUR), ("staging input", STAGE_IN_COLOUR),
                          ("staging output", STAGE_OUT_COLOUR),
                          *[(s if s != "active" else "running", c) for s, c in STATE_COLOURS.items()]]))
    parts += svg

    # --- queue
    qh = 140
    peak = max([max(w, r) for _, w, r in tl.queue] or [1]) or 1

    def y_of(n: int) -> float:
        return 10 + (qh - 40) * (1 - n / peak)

    def steps(index: int) -> str:
        points: list[str] = []
        last = 0
        for t, *values in tl.queue:
            points.append(f"{x_of(t):.1f},{y_of(last):.1f}")
            last = values[index]
            points.append(f"{x_of(t):.1f},{y_of(last):.1f}")
        points.append(f"{x_of(tl.t1):.1f},{y_of(last):.1f}")
        return " ".join(points)

    parts.append("<h2>Queue</h2>")
    parts.append(_legend([("waiting (Pending)", "#d62728"), ("staging or running", "#1f77b4")]))
    parts.append(f'<svg width="{WIDTH}" height="{qh}" viewBox="0 0 {WIDTH} {qh}" role="img" aria-label="queue">'
                 + _axis(tl, qh - 22, x_of)
                 + f'<text x="{LEFT - 6}" y="{y_of(peak) + 4:.1f}" text-anchor="end">{peak}</text>'
                 + f'<text x="{LEFT - 6}" y="{y_of(0):.1f}" text-anchor="end">0</text>'
                 + (f'<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{steps(0)}"/>'
                    f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{steps(1)}"/>'
                    if tl.queue else "")
                 + "</svg>")

    # --- transfers
    movers = sorted({t.pilot or "client" for t in tl.transfers})
    th = max(len(movers), 1) * ROW + 24
    svg = [f'<svg width="{WIDTH}" height="{th}" viewBox="0 0 {WIDTH} {th}" role="img" aria-label="transfers">',
           _axis(tl, th - 22, x_of)]
    for i, who in enumerate(movers):
        svg.append(f'<text x="{LEFT - 6}" y="{i * ROW + ROW - 4}" text-anchor="end">{_e(who)}</text>')
    for t in tl.transfers:
        y = movers.index(t.pilot or "client") * ROW
        svg.append(f'<rect x="{x_of(t.start):.1f}" y="{y + 3}" width="{max(x_of(t.end) - x_of(t.start), 2.0):.1f}" '
                   f'height="{ROW - 6}" fill="{CATEGORY_COLOURS.get(t.category, "#777")}"><title>{_e(t.du)} '
                   f"{_e(t.category)} {_e(human_size(t.bytes))}" + (f" for {_e(t.cu)}" if t.cu else "")
                   + f" at {_e(human_time(t.end))}</title></rect>")
    if not tl.transfers:
        svg.append(f'<text x="{LEFT}" y="{ROW}">no transfers recorded</text>')
    svg.append("</svg>")
    parts.append("<h2>Transfers</h2>")
    parts.append(_legend(list(CATEGORY_COLOURS.items())))
    parts += svg

    # --- tables
    parts.append("<h2>Bytes by category</h2><table><tr><th>category</th><th>bytes</th></tr>"
                 + "".join(f'<tr><td>{_e(k)}</td><td class="n">{_e(human_size(v))}</td></tr>'
                           for k, v in tl.bytes.as_dict().items()) + "</table>")
    if tl.bytes_by_site:
        cats = list(CATEGORY_COLOURS)
        parts.append("<h2>Bytes by site</h2><table><tr><th>site</th>" + "".join(f"<th>{_e(c)}</th>" for c in cats)
                     + "</tr>" + "".join(
                         f"<tr><td>{_e(site)}</td>" + "".join(
                             f'<td class="n">{_e(human_size(b.by_category.get(c, 0)))}</td>' for c in cats) + "</tr>"
                         for site, b in tl.bytes_by_site.items()) + "</table>")
    parts.append("<h2>Pilots</h2><table><tr><th>pilot</th><th>site</th><th>slots</th><th>alive from</th>"
                 "<th>to</th><th>busy</th><th>utilisation</th></tr>" + "".join(
                     f"<tr><td>{_e(p.id)}</td><td>{_e(p.site or '-')}</td><td class=\"n\">{p.slots}</td>"
                     f"<td>{_e(human_time(p.started))}</td><td>{_e(human_time(p.ended) if p.ended else 'running')}</td>"
                     f'<td class="n">{_e(human_duration(p.busy))}</td><td class="n">'
                     f"{'-' if p.utilisation is None else f'{p.utilisation:.0%}'}</td></tr>"
                     for p in tl.pilots) + "</table>")
    parts.append(f"<footer>pdata report, {_e(datetime.now().strftime('%Y-%m-%d %H:%M:%S'))}: one file, no "
                 "network needed.</footer></body></html>\n")
    return "".join(parts)
