"""``pdata run ls|start|show`` and ``pdata resubmit``: runs, the CUs and DUs of one session.

A run is what ``wait``, ``report``, ``cu ls`` and ``resubmit`` work on by default: the current run,
i.e. the one started last in the namespace (see :mod:`pilotdata.runs`). ``resubmit --failed``
submits the failed ComputeUnits of a run again, as a new run whose parent is that run, and binds them
at once, like ``pdata submit``.
"""

from __future__ import annotations

from typing import Any

import click

from pilotdata.cli.complete import complete_runs
from pilotdata.cli.options import CliContext, WorkFailed, json_option, pass_cli, reads
from pilotdata.cli.output import emit, fields, human_age, human_duration, human_size, human_time, table
from pilotdata.errors import DescriptionError, NotFoundError
from pilotdata.inspect import CUFilter, RunSummary
from pilotdata.records import cu_description
from pilotdata.runs import Origin, list_runs, start_run, validate_run_name
from pilotdata.states import ComputeUnitState, Kind, is_final


def run_json(r: RunSummary, current: str | None) -> dict[str, Any]:
    """One run as ``run ls --json`` and ``run show --json`` give it."""
    return {"id": r.id, "origin": r.origin, "parent": r.parent, "created": r.created, "closed": r.closed,
            "current": r.id == current, "in_coordination": r.in_coordination, "counts": r.counts,
            "total": r.total, "finished": r.finished, "first_start": r.first_start, "last_end": r.last_end,
            "pilots": r.pilots, "sites": r.sites, "queue_wait_mean": r.queue_wait_mean,
            "run_time_mean": r.run_time_mean, "busy_slot_seconds": r.busy_slot_seconds,
            "bytes": r.bytes.as_dict()}


def status_text(r: RunSummary) -> str:
    """``active``, ``finished`` or ``removed`` (plus ``open`` for a run new submissions still join)."""
    if not r.in_coordination:
        return "removed"
    state = "finished" if r.finished and r.total else ("empty" if not r.total else "active")
    return f"{state}, open" if r.closed is None else state


@click.group("run")
def run_group() -> None:
    """Runs: the ComputeUnits and DataUnits of one session (a ComputeDataService, pdata submits)."""


@run_group.command("ls")
@click.option("--all", "show_all", is_flag=True, help="Include runs whose records 'pdata gc' removed.")
@json_option
@reads
@pass_cli
def run_ls(cli: CliContext, show_all: bool) -> None:
    """List runs, oldest first: CUs by outcome, wall time, mean queue wait, bytes moved and saved.

    The current run (marked *) is the one started last: wait, report, cu ls and resubmit use it.
    """
    ins = cli.inspector()
    runs = ins.runs(include_removed=show_all)
    current = ins.current_run()
    rows = [run_json(r, current) for r in runs]

    def human() -> None:
        table(["RUN", "ORIGIN", "STARTED", "CUS", "DONE", "FAILED", "ACTIVE", "WALL", "QUEUE WAIT", "MOVED", "SAVED",
               "STATUS"], [
            [("* " if r.id == current else "  ") + r.id, r.origin, human_age(r.created) + " ago", r.total,
             r.counts.get(ComputeUnitState.DONE.value, 0), r.failed,
             sum(n for s, n in r.counts.items() if not is_final(s)),
             human_duration((r.last_end or r.last_update or r.created) - r.created) if r.total else "-",
             human_duration(r.queue_wait_mean), human_size(r.bytes.moved), human_size(r.bytes.saved),
             status_text(r)] for r in runs], empty="(no runs)")

    emit(cli, rows, human)


@run_group.command("show")
@click.argument("run_ref", metavar="[RUN]", required=False, shell_complete=complete_runs)
@json_option
@reads
@pass_cli
def run_show(cli: CliContext, run_ref: str | None) -> None:
    """Show a run (default: the current one): CUs by state, pilots and sites, times, bytes by category."""
    run = cli.run(run_ref, required=True)
    assert run is not None
    ins = cli.inspector()
    summary = ins.run(run.id)
    data = run_json(summary, ins.current_run())
    data["failures"] = [{"reason": f.reason, "count": f.count, "examples": f.examples} for f in ins.failures(run.id)]

    def human() -> None:
        fields([("run", summary.id), ("origin", summary.origin), ("parent", summary.parent),
                ("started", human_time(summary.created)), ("closed", human_time(summary.closed)),
                ("status", status_text(summary)),
                ("compute units", ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items())) or "none"),
                ("pilots", ", ".join(summary.pilots) or None), ("sites", ", ".join(summary.sites) or None),
                ("first start", human_time(summary.first_start)), ("last end", human_time(summary.last_end)),
                ("mean queue wait", human_duration(summary.queue_wait_mean)),
                ("mean run time", human_duration(summary.run_time_mean))])
        click.echo("\nbytes:")
        table(["CATEGORY", "BYTES"], [[c, human_size(n)] for c, n in summary.bytes.as_dict().items()])
        if data["failures"]:
            click.echo("\nfailures:")
            table(["COUNT", "REASON", "E.G."], [[f["count"], f["reason"], f["examples"][0]] for f in data["failures"]])

    emit(cli, data, human)


@run_group.command("start")
@click.argument("name", required=False)
@pass_cli
def run_start(cli: CliContext, name: str | None) -> None:
    """Start a new run (named NAME, or a generated id) and make it the current one; print its id.

    Later 'pdata submit' and 'pdata put' join it until 'pdata wait' has seen it end.
    """
    from pilotdata.runs import close_run, current_run

    session = cli.session()
    if name is not None:
        try:
            validate_run_name(name, "NAME")
        except DescriptionError as exc:
            raise click.BadParameter(str(exc), param_hint="NAME") from None
        if session.coord.exists(Kind.RUN, name):
            raise click.BadParameter(f"run {name!r} exists already", param_hint="NAME")
    previous = current_run(session.coord)
    if previous is not None and previous.origin in (Origin.CLI.value, Origin.USER.value):
        close_run(session.coord, previous.id)
    run = start_run(session.coord, name, origin=Origin.CLI)
    click.echo(run.id)


@click.command("resubmit")
@click.argument("run_ref", metavar="[RUN]", required=False, shell_complete=complete_runs)
@click.option("--failed", is_flag=True, help="Resubmit the ComputeUnits that ended Failed.")
@click.option("--canceled", is_flag=True, help="Resubmit the ComputeUnits that ended Canceled.")
@json_option
@pass_cli
def resubmit(cli: CliContext, run_ref: str | None, failed: bool, canceled: bool) -> None:
    """Submit the failed (or canceled) ComputeUnits of RUN (default: the current run) again.

    They go into a new run, RUN-retryN (its parent is RUN), which becomes the current run, and are
    bound at once like 'pdata submit'. A CU already resubmitted once is not resubmitted again from
    the same run; resubmit the new run instead.
    """
    from pilotdata.services.submission import bind_now, submit_units

    if not failed and not canceled:
        raise click.UsageError("say what to resubmit: --failed and/or --canceled")
    session = cli.session()
    coord = session.coord
    run = cli.run(run_ref, required=True)
    assert run is not None
    wanted = tuple(s.value for s, on in ((ComputeUnitState.FAILED, failed), (ComputeUnitState.CANCELED, canceled))
                   if on)
    ids = cli.inspector().cu_ids(CUFilter(run=run.id, states=wanted))
    records = [r for r in coord.get_many(Kind.CU, ids) if r is not None and not r.data.get("resubmitted_as")]
    gone = len(ids) - len([r for r in coord.get_many(Kind.CU, ids) if r is not None])
    if not records:
        what = " or ".join(wanted)
        extra = f" ({gone} removed by pdata gc)" if gone else ""
        raise WorkFailed(f"run {run.id} has no {what} ComputeUnit left to resubmit{extra}")
    descs = []
    for rec in records:
        try:
            descs.append(cu_description(rec))
        except DescriptionError as exc:
            raise NotFoundError(f"cannot resubmit {rec.id}: {exc}") from exc
    children = [r for r in list_runs(coord) if r.parent == run.id]
    new_id = f"{run.id}-retry{len(children) + 1}"
    try:
        validate_run_name(new_id)
    except DescriptionError:
        new_id = None  # type: ignore[assignment]
    new_run = start_run(coord, new_id, origin=Origin.RESUBMIT, parent=run.id)
    cus = submit_units(session, descs, run=new_run.id)
    bind_now(session, [c.id for c in cus])
    for rec, cu in zip(records, cus, strict=True):
        coord.update_data(Kind.CU, rec.id, {"resubmitted_as": cu.id})
        coord.update_data(Kind.CU, cu.id, {"resubmit_of": rec.id})
    mapping = {rec.id: cu.id for rec, cu in zip(records, cus, strict=True)}
    emit(cli, {"run": new_run.id, "parent": run.id, "resubmitted": mapping},
         lambda: click.echo(new_run.id))
    click.echo(f"resubmitted {len(cus)} ComputeUnit(s) of run {run.id} as run {new_run.id}", err=True)


COMMANDS = [run_group, resubmit]
"""The run commands."""
