"""``pdata cu ls`` and ``pdata cu show``: every ComputeUnit listed and inspectable.

Both read :mod:`pilotdata.inspect` (the history's index, drained first, plus coordination by id), so a
listing of a run of 100,000 CUs costs one page, not a walk. ``cu ls`` defaults to the current run
(the one started last); ``cu show`` prints one CU's description, every state it went through with its
time, pilot and reason, its sandbox and exit code, and how each input arrived (a copy from which
store, a link, or a cache hit) with the bytes.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from pilotdata.cli.complete import complete_cus, complete_pilots
from pilotdata.cli.lookup import resolve
from pilotdata.cli.options import CliContext, json_option, pass_cli, reads, run_option
from pilotdata.cli.output import emit, fields, human_duration, human_size, human_time, table, warn
from pilotdata.errors import DescriptionError, NotFoundError
from pilotdata.inspect import SHARED, CUDetails, CUFilter, CUSummary
from pilotdata.records import ByteCategory
from pilotdata.states import Kind, states_of

HOW = {ByteCategory.STAGED.value: "copied", ByteCategory.LINKED.value: "linked",
       ByteCategory.CACHE_HIT.value: "cache hit", ByteCategory.OUTPUT.value: "uploaded"}
"""How an input (or output) arrived, in words."""


def _state(value: str) -> str:
    """A CU state as typed (any case) -> its spelling; a usage error names the known ones."""
    by_lower = {s.lower(): s for s in states_of(Kind.CU)}
    found = by_lower.get(value.lower())
    if found is None:
        raise click.BadParameter(f"{value!r} is not a ComputeUnit state; expected one of "
                                 f"{', '.join(states_of(Kind.CU))}", param_hint="--state")
    return found


def place_text(place: str | None) -> str:
    """Where a CU is as a listing shows it: the pilot, ``shared queue`` or ``-`` (never bound)."""
    if place is None:
        return "-"
    return "shared queue" if place == SHARED else place


def short(text: str | None, width: int = 60) -> str | None:
    """``text`` cut to ``width`` characters (with an ellipsis)."""
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def summary_json(cu: CUSummary) -> dict[str, Any]:
    """One listing row as JSON (with the derived queue wait and duration)."""
    return {**asdict(cu), "queue_wait": cu.queue_wait, "duration": cu.duration}


@click.group("cu")
def cu_group() -> None:
    """ComputeUnits: list them (filters, paging) and show one in full."""


@cu_group.command("ls")
@run_option("Only this run  [default: PDATA_RUN, else the current run]")
@click.option("--all-runs", is_flag=True, help="ComputeUnits of every run.")
@click.option("--state", "states", multiple=True, metavar="STATE",
              help="Only CUs in this state (repeatable; any case): New, Pending, Running, Done, Failed, ...")
@click.option("--pilot", "pilot_ref", metavar="PILOT", shell_complete=complete_pilots,
              help="Only CUs waiting on, running on or ended on this pilot ('shared' for the shared queue).")
@click.option("--site", help="Only CUs at this site (site-a also matches site-a/node-1).")
@click.option("--name", "name_glob", metavar="GLOB", help="Only CUs whose name matches (shell glob, any case).")
@click.option("--limit", type=click.IntRange(min=1, max=100_000), default=50, show_default=True,
              help="Rows per page.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Rows to skip.")
@click.option("--newest", is_flag=True, help="Newest first (default: in submission order).")
@json_option
@reads
@pass_cli
def cu_ls(cli: CliContext, run_ref: str | None, all_runs: bool, states: tuple[str, ...], pilot_ref: str | None,
          site: str | None, name_glob: str | None, limit: int, offset: int, newest: bool) -> None:
    """List ComputeUnits: state, where (pilot or shared queue), site, attempt, queue wait, run time,
    exit code, reason. One page at a time (--limit, --offset); --json for scripts."""
    if run_ref and all_runs:
        raise click.UsageError("--run and --all-runs exclude each other")
    wanted = tuple(dict.fromkeys(_state(s) for s in states))
    session = cli.session()
    pilot = None
    if pilot_ref is not None:
        pilot = SHARED if pilot_ref in ("shared", "-") else resolve(session, Kind.PILOT, pilot_ref)
    run = None if all_runs else cli.run(run_ref)
    ins = cli.inspector()
    try:
        page = ins.list_cus(CUFilter(run=run.id if run else None, states=wanted, pilot=pilot, site=site,
                                     name=name_glob), offset=offset, limit=limit, newest_first=newest)
    except DescriptionError as exc:
        raise click.BadParameter(str(exc)) from None
    scope = "every run" if run is None else f"run {run.id}"
    data = {"run": run.id if run else None, "total": page.total, "offset": page.offset, "limit": page.limit,
            "next_offset": page.next_offset, "rows": [summary_json(r) for r in page.rows]}

    def human() -> None:
        table(["ID", "NAME", "STATE", "WHERE", "SITE", "ATTEMPT", "WAIT", "RUN TIME", "EXIT", "REASON"], [
            [r.id, r.name, r.state, place_text(r.place), r.site, r.attempt, human_duration(r.queue_wait),
             human_duration(r.duration), r.exit_code, short(r.reason, 50)] for r in page.rows],
            empty=f"(no compute units in {scope}" + (" matching the filters)" if any(
                (wanted, pilot is not None, site, name_glob)) else ")"))
        if page.total > len(page.rows):
            first = page.offset + 1 if page.rows else page.offset
            more = f"; next page: --offset {page.next_offset}" if page.next_offset is not None else ""
            warn(f"showing {first}-{page.offset + len(page.rows)} of {page.total} ({scope}){more}")

    emit(cli, data, human)


@cu_group.command("show")
@click.argument("cu", shell_complete=complete_cus)
@json_option
@reads
@pass_cli
def cu_show(cli: CliContext, cu: str) -> None:
    """Show a ComputeUnit: description, every state with its time, pilot and reason, sandbox, exit code,
    and how each input arrived (copied from which store, linked, or a cache hit) with its bytes."""
    session = cli.session()
    ins = cli.inspector()
    try:
        cu_id = resolve(session, Kind.CU, cu)
    except NotFoundError:
        cu_id = cu  # its record may be gone (pdata gc) while the history still knows it
    details = ins.cu(cu_id)
    emit(cli, details_json(details), lambda: _print_details(details))


def details_json(d: CUDetails) -> dict[str, Any]:
    """``cu show --json``."""
    return {**summary_json(d.summary), "description": d.description, "sandbox": d.sandbox,
            "placement": d.placement, "events": d.events, "inputs": [asdict(t) for t in d.inputs],
            "outputs": [asdict(t) for t in d.outputs], "bytes": d.bytes.as_dict(),
            "in_coordination": d.in_coordination}


def _print_details(d: CUDetails) -> None:
    s = d.summary
    desc = d.description or {}
    command = " ".join([str(desc.get("executable") or "?"), *map(str, desc.get("arguments") or [])])
    fields([("id", s.id), ("name", s.name), ("run", s.run), ("state", s.state), ("attempt", s.attempt),
            ("where", place_text(s.place)), ("site", s.site), ("host", s.host), ("exit code", s.exit_code),
            ("reason", s.reason), ("command", command if d.description else "(record removed)"),
            ("slots", desc.get("number_of_processes")), ("sandbox", d.sandbox), ("placement", d.placement),
            ("queue wait", human_duration(s.queue_wait)), ("run time", human_duration(s.duration))])
    click.echo("\nstates:")
    table(["TIME", "STATE", "PILOT", "ATTEMPT", "DETAIL"], [
        [human_time(e["time"]), e["to"], e["pilot"], e["attempt"],
         short(", ".join(f"{k}={v}" for k, v in sorted((e["detail"] or {}).items())
                         if k in ("reason", "exit_code", "host", "pilot", "retry") and v not in (None, "")), 70)]
        for e in d.events if e["to"]], empty="(no events recorded)")
    click.echo("\ninputs:")
    table(["DATAUNIT", "HOW", "FROM", "BYTES", "SECONDS", "PILOT"], [
        [t.du, HOW.get(t.category, t.category), t.source, human_size(t.bytes), f"{t.seconds:.2f}", t.pilot]
        for t in d.inputs], empty="(none recorded)")
    if d.outputs:
        click.echo("\noutputs:")
        table(["DATAUNIT", "TO", "BYTES", "SECONDS"], [
            [t.du, t.destination, human_size(t.bytes), f"{t.seconds:.2f}"] for t in d.outputs])
    b = d.bytes
    click.echo(f"\nbytes: {human_size(b.moved)} moved (staged {human_size(b.by_category['staged'])}, output "
               f"{human_size(b.by_category['output'])}); {human_size(b.saved)} not moved (linked "
               f"{human_size(b.by_category['linked'])}, cache hits {human_size(b.by_category['cache_hit'])})")


COMMANDS = [cu_group]
"""The ComputeUnit commands."""
