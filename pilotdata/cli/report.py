"""History commands: ``pdata history`` (events and transfers from the SQL history) and ``pdata report``
(a run's timeline as PNG or self-contained HTML, its figures, and the trace export).

Both first drain the coordination event stream into the history database with
:class:`~pilotdata.history.HistoryWriter` (idempotent), then query it for this coordination stream only.
The timeline is built by :mod:`.timeline` and drawn by :mod:`.report_png` (matplotlib, the optional
extra ``report``: ``pip install 'pilot-data[report]'``) or :mod:`.report_html` (no dependency); the
trace is written by :mod:`.trace`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pilotdata.cli.complete import complete_cus, complete_pilots
from pilotdata.cli.lookup import resolve
from pilotdata.cli.options import SINCE, CliContext, json_option, pass_cli, reads, run_option
from pilotdata.cli.output import emit, human_size, human_time, table
from pilotdata.cli.report_png import INSTALL_HINT
from pilotdata.errors import MissingDependencyError, NotFoundError
from pilotdata.states import Kind

if TYPE_CHECKING:
    from pilotdata.history import History


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
@click.option("--cu", help="Only the events of this ComputeUnit.", shell_complete=complete_cus)
@click.option("--entity", type=click.Choice(["cu", "pilot", "du", "run"]), help="Only events of this kind of entity.")
@click.option("--pilot", help="Only events recorded by this pilot.", shell_complete=complete_pilots)
@click.option("--since", type=SINCE, help="From this time: 10m, 2h, 3d ago, an ISO date/time, or epoch seconds.")
@click.option("--state", help="Only transitions into this state (Done, Failed, ...).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest N events.")
@click.option("--transfers", "show_transfers", is_flag=True, help="List transfer records instead of events.")
@json_option
@reads
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
        emit(cli, data, lambda: table(["TIME", "DU", "CATEGORY", "BYTES", "SECONDS", "FROM", "TO", "CU", "OK"], [
            [human_time(r.time), r.du, r.category, human_size(r.bytes), f"{r.seconds:.2f}", r.source_url,
             r.destination_url, r.cu, "yes" if r.ok else "no"] for r in rows], empty="(no transfers recorded)"))
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
@click.command("report")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Timeline to write: FILE.png (matplotlib) or FILE.html (self-contained, opens offline).")
@click.option("--trace", "trace_out", metavar="FILE",
              help="Trace export, one row per ComputeUnit: FILE.csv or FILE.json ('-' for CSV on stdout).")
@run_option("Report on this run  [default: PDATA_RUN, else the current run]")
@click.option("--all-runs", is_flag=True, help="Report on every run of the namespace together.")
@click.option("--title", help="Title of the timeline  [default: the run]")
@json_option
@reads
@pass_cli
def report(cli: CliContext, out: Path | None, trace_out: str | None, run_ref: str | None, all_runs: bool,
           title: str | None) -> None:
    """Report on a run: a timeline (pilot slots with their lifetime and idle time, the queue, transfers,
    bytes per site; utilisation) as PNG or HTML, and a trace of every ComputeUnit as CSV or JSON.

    Without --out or --trace it prints the figures: CUs by state, utilisation, queue wait, bytes.
    """
    from pilotdata.cli.report_png import headline
    from pilotdata.cli.timeline import build

    if run_ref and all_runs:
        raise click.UsageError("--run and --all-runs exclude each other")
    kind = out.suffix.lower() if out is not None else None
    if out is not None and kind not in (".png", ".html", ".htm"):
        raise click.BadParameter(f"{str(out)!r} must end in .png or .html", param_hint="--out")
    trace_fmt = None
    if trace_out is not None:
        trace_fmt = "csv" if trace_out == "-" else Path(trace_out).suffix.lower().lstrip(".")
        if trace_fmt not in ("csv", "json"):
            raise click.BadParameter(f"{trace_out!r} must end in .csv or .json (or be '-')", param_hint="--trace")
    if kind == ".png":
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(f"pdata report needs matplotlib for a PNG: {INSTALL_HINT} "
                                         "(or write --out FILE.html)") from exc
    run = None if all_runs else cli.run(run_ref)
    if run is None and not all_runs:
        raise click.UsageError("no run yet in this namespace: submit something first, or pass --all-runs")
    ins = cli.inspector()
    timeline = build(ins, run.id if run else None, title=title)
    data: dict[str, Any] = dict(timeline.summary())
    if out is not None:
        if kind == ".png":
            from pilotdata.cli.report_png import render_png

            width, height = render_png(timeline, out)
            data.update(out=str(out), width=width, height=height)
        else:
            from pilotdata.cli.report_html import render_html

            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(render_html(timeline), encoding="utf-8")
            data.update(out=str(out))
    if trace_out is not None and trace_fmt is not None:
        from pilotdata.cli.trace import write_trace

        rows = ins.trace(run.id if run else None)
        if trace_out == "-":
            data["trace_rows"] = write_trace(rows, sys.stdout, trace_fmt)
            return
        target = Path(trace_out)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", encoding="utf-8", newline="") as fh:
            data["trace_rows"] = write_trace(rows, fh, trace_fmt)
        data["trace"] = trace_out

    def human() -> None:
        click.echo(f"{timeline.title}: {headline(timeline)}")
        b = timeline.bytes
        click.echo(f"bytes: {human_size(b.moved)} moved (uploaded {human_size(b.by_category['uploaded'])}, "
                   f"replicated {human_size(b.by_category['replicated'])}, staged {human_size(b.by_category['staged'])}"
                   f", output {human_size(b.by_category['output'])}); {human_size(b.saved)} of inputs not moved "
                   f"(linked {human_size(b.for_cus['linked'])}, cache hits {human_size(b.for_cus['cache_hit'])})"
                   + (f"; replicas made as links {human_size(b.linked_replicas)}" if b.linked_replicas else ""))
        if out is not None:
            size = f" ({data['width']}x{data['height']})" if "width" in data else ""
            click.echo(f"wrote {out}{size}")
        if "trace" in data:
            click.echo(f"wrote {data['trace']} ({data['trace_rows']} ComputeUnits)")

    emit(cli, data, human)


COMMANDS = [history, report]
"""The history commands."""
