"""Compute commands: ``pdata pilot start|ls|show|stop`` and ``submit``, ``status``, ``wait``, ``cancel``,
``logs``, ``explain``, ``agent``.

Built on :class:`~pilotdata.services.PilotComputeService`, :func:`~pilotdata.services.compute_data.submit_units`
and the binder. ``pdata submit`` binds at once and exits: the CU runs on a pilot (or from the shared
queue, which every pilot serves) without any ``pdata`` process staying alive. Commands that read
pilot states first reconcile them with their launchers, so a pilot whose process died shows Failed
and its work goes back to the queue (any participant may detect a dead pilot).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import click

from pilotdata.cli.lookup import resolve, resolve_all
from pilotdata.cli.options import (
    KEY_VALUE,
    CliContext,
    WorkFailed,
    json_option,
    json_or_text,
    labels_option,
    pass_cli,
    to_dict,
)
from pilotdata.cli.output import count_progress, emit, fields, human_age, human_time, labels_text, table
from pilotdata.errors import NotFoundError, PilotDataError
from pilotdata.session import Session
from pilotdata.states import FINAL_STATES, Kind, states_of


def _refresh(session: Session) -> None:
    """Reconcile pilots with their launchers and take back the work of lost ones."""
    from pilotdata.services import PilotComputeService

    PilotComputeService(session=session).refresh()


# ------------------------------------------------------------------------------------ pilots
@click.group("pilot")
def pilot_group() -> None:
    """Pilots: agents holding cores on a resource (fork://localhost, ssh://host, slurm://localhost, ...)."""


@pilot_group.command("start")
@click.argument("url")
@click.option("--cores", type=click.IntRange(min=1), default=1, show_default=True,
              help="Slots (cores) the pilot offers.")
@click.option("--walltime", type=click.FloatRange(min=0, min_open=True), help="Minutes until a clean stop.")
@labels_option
@click.option("--workdir", help="Working directory of the agent (sandboxes, cache) on the resource.")
@click.option("--queue", help="Batch queue / partition.")
@click.option("--project", help="Batch project / account.")
@click.option("--launcher-option", "launcher_options", multiple=True, type=KEY_VALUE,
              help="Launcher option KEY=VALUE, e.g. known_hosts=~/.ssh/known_hosts (repeatable).")
@click.option("--max-retries", type=click.IntRange(min=0), default=0, show_default=True,
              help="Failed task max reassign: reruns of a CU that failed.")
@click.option("--max-reassign", type=click.IntRange(min=0), default=3, show_default=True,
              help="Lost task max reassign: requeues of a CU whose pilot died.")
@click.option("--max-consecutive-failures", type=click.IntRange(min=0), default=0, show_default=True,
              help="Remove a failing worker: stop after N CU failures in a row (0: never).")
@click.option("--heartbeat-ttl", type=click.FloatRange(min=0, min_open=True), default=15.0, show_default=True,
              help="Seconds without a heartbeat after which the pilot counts as lost.")
@click.option("--wait", "wait_running", is_flag=True, help="Return only once the agent is running.")
@click.option("--timeout", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="Seconds --wait waits.")
@json_option
@pass_cli
def pilot_start(cli: CliContext, url: str, cores: int, walltime: float | None, labels: tuple[tuple[str, str], ...],
                workdir: str | None, queue: str | None, project: str | None,
                launcher_options: tuple[tuple[str, str], ...], max_retries: int, max_reassign: int,
                max_consecutive_failures: int, heartbeat_ttl: float, wait_running: bool, timeout: float) -> None:
    """Start a pilot on the resource at URL; print its id."""
    from pilotdata.descriptions import PilotComputeDescription
    from pilotdata.launchers import launcher_for
    from pilotdata.services import FailurePolicy, PilotComputeService

    options = {k: json_or_text(v) for k, v in to_dict(launcher_options, "--launcher-option").items()}
    desc: dict[str, Any] = {"service_url": url, "number_of_processes": cores, "walltime": walltime,
                            "labels": to_dict(labels, "--label"), "working_directory": workdir,
                            "queue": queue, "project": project}
    PilotComputeDescription.coerce(desc)  # a bad value is named before anything is recorded
    try:
        launcher_for(url, **options).close()
    except PilotDataError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from exc
    policy = FailurePolicy(lost_task_max_reassign=max_reassign, failed_task_max_reassign=max_retries,
                           remove_failed_worker=max_consecutive_failures, heartbeat_ttl=heartbeat_ttl)
    pcs = PilotComputeService(session=cli.session(), policy=policy, launcher_options=options)
    pilot = pcs.create_pilot(desc)
    state = pilot.wait(timeout=timeout) if wait_running else pilot.get_state()
    emit(cli, {"id": pilot.id, "state": state}, lambda: click.echo(pilot.id))
    if wait_running and state != "Running":
        details = pilot.get_details()
        raise WorkFailed(f"pilot {pilot.id} is {state}: {details.get('reason') or 'see pdata pilot show'}")


def _pilot_row(session: Session, rec: Any, queued: int) -> dict[str, Any]:
    desc = rec.data.get("description") or {}
    return {"id": rec.id, "state": rec.state, "resource": desc.get("service_url"),
            "slots": rec.data.get("slots"), "busy": len(session.coord.claimed(rec.id)) if rec.state == "Running" else 0,
            "queued": queued, "labels": rec.data.get("labels") or {}, "created": rec.created,
            "reason": rec.detail.get("reason") if rec.state in FINAL_STATES else None}


def _pilot_rows(session: Session, include_final: bool = True) -> list[dict[str, Any]]:
    coord = session.coord
    records = [r for r in coord.get_many(Kind.PILOT, coord.list_ids(Kind.PILOT)) if r is not None]
    if not include_final:
        records = [r for r in records if r.state not in FINAL_STATES]
    lengths = coord.queue_lengths([r.id for r in records])
    return [_pilot_row(session, r, lengths.get(r.id, 0)) for r in sorted(records, key=lambda r: r.created)]


@pilot_group.command("ls")
@click.option("--all", "show_all", is_flag=True, help="Include pilots that ended (Done, Failed, Canceled).")
@json_option
@pass_cli
def pilot_ls(cli: CliContext, show_all: bool) -> None:
    """List pilots: state, resource, slots, busy slots, queued CUs, labels, age."""
    session = cli.session()
    _refresh(session)
    rows = _pilot_rows(session, include_final=show_all)
    emit(cli, rows, lambda: table(["ID", "STATE", "RESOURCE", "SLOTS", "BUSY", "QUEUED", "LABELS", "AGE"], [
        [r["id"], r["state"], r["resource"], r["slots"], r["busy"], r["queued"], labels_text(r["labels"]),
         human_age(r["created"])] for r in rows], empty="(no pilots)"))


@pilot_group.command("show")
@click.argument("pilot")
@json_option
@pass_cli
def pilot_show(cli: CliContext, pilot: str) -> None:
    """Show a pilot: state, description, slots, claimed CUs, cached DataUnits, launcher job."""
    from pilotdata.services import PilotCompute

    session = cli.session()
    pilot_id = resolve(session, Kind.PILOT, pilot)
    _refresh(session)
    details = PilotCompute(pilot_id, session=session).get_details()

    def human() -> None:
        desc = details.get("description") or {}
        launcher = details.get("launcher") or {}
        fields([("id", details["id"]), ("state", details["state"]), ("reason", details.get("reason")),
                ("resource", desc.get("service_url")), ("slots", details.get("slots")),
                ("walltime", f"{desc['walltime']} min" if desc.get("walltime") else None),
                ("labels", labels_text(details.get("labels"))), ("job", launcher.get("job_id")),
                ("claimed", ", ".join(details.get("claimed") or []) or None), ("queued", details.get("queued")),
                ("cached", ", ".join(details.get("cached_dus") or []) or None)])
        click.echo("\ntimes:")
        table(["STATE", "SINCE"], [[s, human_time(t)] for s, t in sorted(details["times"].items(),
                                                                          key=lambda kv: kv[1])])

    emit(cli, details, human)


@pilot_group.command("stop")
@click.argument("pilots", nargs=-1)
@click.option("--all", "stop_all", is_flag=True, help="Stop every pilot that has not ended.")
@pass_cli
def pilot_stop(cli: CliContext, pilots: tuple[str, ...], stop_all: bool) -> None:
    """Stop pilots: Canceled, agent killed, its claimed work back on the shared queue."""
    from pilotdata.services import PilotComputeService

    session = cli.session()
    if not pilots and not stop_all:
        raise click.UsageError("name the pilots to stop, or pass --all")
    ids = resolve_all(session, Kind.PILOT, pilots)
    if stop_all:
        ids += [r["id"] for r in _pilot_rows(session, include_final=False) if r["id"] not in ids]
    pcs = PilotComputeService(session=session)
    for pilot_id in ids:
        pcs.cancel_pilot(pilot_id)
        click.echo(f"stopped {pilot_id}", err=True)


# ------------------------------------------------------------------------------ ComputeUnits
INPUT_STATES = ("Pending", "Running", "Done")
"""States of a DataUnit a CU may read: usable, or still uploading (the agent waits for it)."""
OUTPUT_STATES = ("Running",)
"""States of a DataUnit a CU may write into (open; Done is closed for good)."""


def _input_ref(session: Session, text: str) -> str | dict[str, list[str]]:
    ref, _, files = text.partition(":")
    du_id = _usable_du(session, ref, "--input", INPUT_STATES)
    names = [f for f in files.split(",") if f] if files else []
    return {du_id: names} if names else du_id


def _usable_du(session: Session, ref: str, option: str, states: tuple[str, ...]) -> str:
    try:
        du_id = resolve(session, Kind.DU, ref)
    except NotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    state = session.coord.get(Kind.DU, du_id).state
    if state not in states:
        raise click.BadParameter(f"DataUnit {du_id} is {state}; expected {' or '.join(states)}", param_hint=option)
    return du_id


def _output_refs(session: Session, values: tuple[str, ...]) -> list[dict[str, list[str]]]:
    globs: dict[str, list[str]] = {}
    for text in values:
        ref, sep, pattern = text.partition(":")
        if not sep or not ref or not pattern:
            raise click.BadParameter(f"{text!r} is not DU:GLOB", param_hint="--output")
        globs.setdefault(_usable_du(session, ref, "--output", OUTPUT_STATES), []).append(pattern)
    return [{du: patterns} for du, patterns in globs.items()]


@click.command("submit", context_settings={"allow_interspersed_args": False})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="[--] EXE [ARGS]...")
@click.option("--input", "inputs", multiple=True, metavar="DU[:FILE,FILE]",
              help="Input DataUnit (all of it, or some files), linked into the sandbox (repeatable).")
@click.option("--output", "outputs", multiple=True, metavar="DU:GLOB",
              help="Sandbox files matching GLOB go into DataUnit DU when the CU ends (repeatable).")
@click.option("--cores", type=click.IntRange(min=1), default=1, show_default=True, help="Processes / slots.")
@click.option("--mpi", is_flag=True, help="Launch through mpirun/srun (spmd_variation mpi).")
@click.option("--env", "env", multiple=True, type=KEY_VALUE, help="Environment variable K=V (repeatable).")
@click.option("--name", help="A name for the CU (usable instead of its id).")
@labels_option
@click.option("--pilot", help="Run on this pilot (no placement).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds before the CU is killed.")
@json_option
@pass_cli
def submit(cli: CliContext, command: tuple[str, ...], inputs: tuple[str, ...], outputs: tuple[str, ...], cores: int,
           mpi: bool, env: tuple[tuple[str, str], ...], name: str | None, labels: tuple[tuple[str, str], ...],
           pilot: str | None, timeout: float | None) -> None:
    """Submit a ComputeUnit running EXE ARGS; bind it now and print its id.

    Put -- before EXE when its arguments start with '-'. It runs on a pilot chosen by where its input
    data is (or on --pilot); with no live pilot it waits on the shared queue for the next one.
    """
    from pilotdata.descriptions import ComputeUnitDescription

    session = cli.session()
    desc: dict[str, Any] = {
        "executable": command[0], "arguments": list(command[1:]), "environment": to_dict(env, "--env"),
        "number_of_processes": cores, "spmd_variation": "mpi" if mpi else "single",
        "input_data": [_input_ref(session, i) for i in inputs], "output_data": _output_refs(session, outputs),
        "name": name, "labels": to_dict(labels, "--label"), "timeout": timeout,
    }
    ComputeUnitDescription.coerce(desc)
    pilot_id = None
    if pilot is not None:
        pilot_id = resolve(session, Kind.PILOT, pilot)
        state = session.coord.get(Kind.PILOT, pilot_id).state
        if state in FINAL_STATES:
            raise click.BadParameter(f"pilot {pilot_id} is {state}", param_hint="--pilot")
    cu_id = _submit_and_bind(session, desc, pilot_id)
    rec = session.coord.get(Kind.CU, cu_id)
    where = rec.detail.get("pilot") or ("shared queue" if rec.state == "Pending" else None)
    emit(cli, {"id": cu_id, "state": rec.state, "pilot": where, "placement": rec.detail.get("placement"),
               "reason": rec.detail.get("reason")}, lambda: click.echo(cu_id))
    if rec.state == "Failed":
        raise WorkFailed(f"{cu_id} failed at submission: {rec.detail.get('reason')}")


def _submit_and_bind(session: Session, desc: dict[str, Any], pilot_id: str | None) -> str:
    """Record the CU and bind it now: to ``pilot_id``, to the best pilot, or to the shared queue."""
    from pilotdata.services.compute_data import bind_now, submit_units

    cu_id = submit_units(session, [desc], pilot=pilot_id)[0].id
    if pilot_id is None:
        bind_now(session, [cu_id])
    return cu_id


def _cu_ids(session: Session, refs: tuple[str, ...]) -> list[str]:
    return resolve_all(session, Kind.CU, refs) if refs else session.coord.list_ids(Kind.CU)


@click.command("status")
@json_option
@pass_cli
def status(cli: CliContext) -> None:
    """Counts of ComputeUnits by state, per pilot; live pilots and their slots."""
    session = cli.session()
    _refresh(session)
    coord = session.coord
    records = [r for r in coord.get_many(Kind.CU, coord.list_ids(Kind.CU)) if r is not None]
    by_pilot: dict[str, Counter[str]] = {}
    for rec in records:
        by_pilot.setdefault(rec.pilot or "-", Counter())[rec.state] += 1
    total = Counter(rec.state for rec in records)
    du_states = Counter(r.state for r in coord.get_many(Kind.DU, coord.list_ids(Kind.DU)) if r is not None)
    pilots = _pilot_rows(session, include_final=True)
    live = [p for p in pilots if p["state"] not in FINAL_STATES]
    data = {"url": session.url, "namespace": session.namespace,
            "pilots": live,
            "compute_units": {"total": dict(total), "by_pilot": {k: dict(v) for k, v in by_pilot.items()}},
            "shared_queue": len(coord.queued(None)), "data_units": dict(du_states)}

    def human() -> None:
        click.echo(f"coordination: {session.url} (namespace {session.namespace})")
        click.echo(f"pilots: {len(live)} live, {sum(p['slots'] or 0 for p in live)} slots, "
                   f"{sum(p['busy'] for p in live)} busy; shared queue: {data['shared_queue']}")
        states = [s for s in states_of(Kind.CU) if total.get(s)]
        state_of = {p["id"]: p["state"] for p in pilots}
        rows = [[pid, state_of.get(pid, "-"), *[c.get(s, 0) for s in states], sum(c.values())]
                for pid, c in sorted(by_pilot.items())]
        if rows:
            rows.append(["TOTAL", "", *[total[s] for s in states], sum(total.values())])
        click.echo("")
        table(["PILOT", "PILOT STATE", *states, "ALL"], rows, empty="(no compute units)")
        if du_states:
            click.echo("\ndata units: " + ", ".join(f"{n} {s}" for s, n in sorted(du_states.items())))

    emit(cli, data, human)


@click.command("wait")
@click.argument("cus", nargs=-1)
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after this many seconds (exit 1).")
@json_option
@pass_cli
def wait(cli: CliContext, cus: tuple[str, ...], timeout: float | None) -> None:
    """Wait until the CUs (default: all of the namespace) end; exit 1 if any failed or was canceled."""
    from pilotdata.services import PilotComputeService
    from pilotdata.services.waiting import wait_for_states

    session = cli.session()
    coord = session.coord
    ids = _cu_ids(session, cus)
    pcs = PilotComputeService(session=session)
    with count_progress(cli, "waiting", len(ids)) as update:

        def tick() -> None:
            pcs.refresh()
            update(sum(1 for r in coord.get_many(Kind.CU, ids) if r is not None and r.state in FINAL_STATES))

        records = wait_for_states(coord, Kind.CU, ids, timeout=timeout, tick=tick)
        update(len(ids))
    counts = Counter(r.state for r in records)
    bad = [r for r in records if r.state != "Done"]
    summary = [{"id": r.id, "state": r.state, "exit_code": r.data.get("exit_code"),
                "reason": r.data.get("reason") or r.detail.get("reason")} for r in bad]
    emit(cli, {"counts": dict(counts), "failed": summary},
         lambda: click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no compute units"))
    if bad:
        first = summary[0]
        raise WorkFailed(f"{len(bad)} of {len(records)} ComputeUnit(s) did not finish Done; first: {first['id']} "
                         f"{first['state']}" + (f" ({first['reason']})" if first["reason"] else ""))


@click.command("cancel")
@click.argument("cus", nargs=-1)
@click.option("--all", "cancel_all", is_flag=True, help="Cancel every ComputeUnit that has not ended.")
@pass_cli
def cancel(cli: CliContext, cus: tuple[str, ...], cancel_all: bool) -> None:
    """Cancel ComputeUnits: dequeued if waiting, killed by their agent if running."""
    from pilotdata.services import ComputeUnit

    session = cli.session()
    if not cus and not cancel_all:
        raise click.UsageError("name the ComputeUnits to cancel, or pass --all")
    ids = _cu_ids(session, cus)
    for rec in session.coord.get_many(Kind.CU, ids):
        if rec is None:
            continue
        if rec.state in FINAL_STATES:
            if cus:
                click.echo(f"{rec.id} already {rec.state}", err=True)
            continue
        ComputeUnit(rec.id, session=session).cancel()
        click.echo(f"canceled {rec.id}", err=True)


@click.command("logs")
@click.argument("cu")
@click.option("--stdout", "which", flag_value="stdout", help="Only standard output.")
@click.option("--stderr", "which", flag_value="stderr", help="Only standard error.")
@pass_cli
def logs(cli: CliContext, cu: str, which: str | None) -> None:
    """Print a ComputeUnit's stdout and stderr from its sandbox (pilots on this host)."""
    session = cli.session()
    cu_id = resolve(session, Kind.CU, cu)
    rec = session.coord.get(Kind.CU, cu_id)
    sandbox = rec.data.get("sandbox")
    if not sandbox:
        raise NotFoundError(f"{cu_id} has no sandbox yet (it is {rec.state})")
    desc = rec.data.get("description") or {}
    streams = [("stdout", desc.get("output") or "stdout"), ("stderr", desc.get("error") or "stderr")]
    if which:
        streams = [s for s in streams if s[0] == which]
    if not Path(sandbox).is_dir():
        raise NotFoundError(f"sandbox {sandbox!r} of {cu_id} is not on this host (pilot {rec.pilot})")
    out = click.get_binary_stream("stdout")
    for label, name in streams:
        path = Path(sandbox) / name
        if len(streams) > 1:
            click.echo(f"==> {label} ({path}) <==")
        if path.is_file():
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 16):
                    out.write(chunk)
            out.flush()
        elif len(streams) > 1:
            click.echo("(no file)")


@click.command("explain")
@click.argument("cu")
@json_option
@pass_cli
def explain(cli: CliContext, cu: str) -> None:
    """Why a ComputeUnit was bound where it was, and how each live pilot scores for it now."""
    from pilotdata.services.compute_data import explain_cu

    session = cli.session()
    cu_id = resolve(session, Kind.CU, cu)
    text = explain_cu(session, cu_id)
    rec = session.coord.get(Kind.CU, cu_id)
    emit(cli, {"id": cu_id, "state": rec.state, "pilot": rec.pilot, "explanation": text}, lambda: click.echo(text))


@click.command("agent", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                         "help_option_names": []}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@pass_cli
def agent_cmd(cli: CliContext, args: tuple[str, ...]) -> int:
    """Run a pilot's agent here: the same options as 'python -m agent' (try 'pdata agent --help').

    The coordination URL and namespace of pdata (flags, environment or config file) are handed to the
    agent through its environment, never on its command line.
    """
    from agent.main import main as agent_main

    if cli.url:
        os.environ["PDATA_URL"] = cli.url
    if cli.namespace and not any(a.startswith("--namespace") for a in args):
        args = ("--namespace", cli.namespace, *args)
    return agent_main(list(args))


COMMANDS = [submit, status, wait, cancel, logs, explain, agent_cmd]
"""The top-level compute commands (``pilot`` is a group of its own)."""

