"""Compute commands: ``pdata pilot start|ls|show|stop`` and ``submit``, ``wait``, ``cancel``, ``logs``,
``explain``, ``agent`` (``status`` is :mod:`.status`, ``cu ls|show`` :mod:`.units`).

Built on :class:`~pilotdata.services.PilotComputeService`, :mod:`pilotdata.services.submission`
(``submit_units``, ``bind_now``) and the binder. ``pdata submit`` binds at once and exits: the CU runs
on a pilot (or from the shared queue, which every pilot serves) without any ``pdata`` process staying
alive. Commands that read pilot states first reconcile them with their launchers, so a pilot whose
process died shows Failed and its work goes back to the queue (any participant may detect a dead pilot).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from pilotdata.cli.complete import complete_cus, complete_dus, complete_pilots
from pilotdata.cli.lookup import resolve, resolve_all
from pilotdata.cli.options import (
    KEY_VALUE,
    CliContext,
    WorkFailed,
    json_option,
    json_or_text,
    labels_option,
    pass_cli,
    reads,
    run_option,
    to_dict,
)
from pilotdata.cli.output import count_progress, emit, fields, human_age, human_time, labels_text, table, warn
from pilotdata.cli.status import refresh_pilots
from pilotdata.descriptions import PilotComputeDescription
from pilotdata.errors import NotFoundError, PilotDataError
from pilotdata.inspect import CUFilter
from pilotdata.records import cu_description
from pilotdata.runs import Origin, close_run
from pilotdata.session import Session
from pilotdata.states import ComputeUnitState, DataUnitState, Kind, PilotState, is_final


def _refresh(session: Session) -> None:
    """Reconcile pilots with their launchers and take back the work of lost ones."""
    refresh_pilots(session)


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
@click.option("--cpu-binding", type=click.Choice(PilotComputeDescription.CPU_BINDINGS), default="auto",
              show_default=True,
              help="Run each CU of the agent's node on its slots' CPUs: auto does when the slots cover the CPUs "
                   "the agent may use.")
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
                workdir: str | None, queue: str | None, project: str | None, cpu_binding: str,
                launcher_options: tuple[tuple[str, str], ...], max_retries: int, max_reassign: int,
                max_consecutive_failures: int, heartbeat_ttl: float, wait_running: bool, timeout: float) -> None:
    """Start a pilot on the resource at URL; print its id."""
    from pilotdata.launchers import launcher_for
    from pilotdata.services import FailurePolicy, PilotComputeService

    options = {k: json_or_text(v) for k, v in to_dict(launcher_options, "--launcher-option").items()}
    desc: dict[str, Any] = {"service_url": url, "number_of_processes": cores, "walltime": walltime,
                            "labels": to_dict(labels, "--label"), "working_directory": workdir,
                            "queue": queue, "project": project,
                            "cpu_binding": None if cpu_binding == "auto" else cpu_binding}
    PilotComputeDescription.coerce(desc)  # a bad value is named before anything is recorded
    try:
        launcher_for(url, **options).close()
    except PilotDataError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from exc
    policy = FailurePolicy(lost_task_max_reassign=max_reassign, failed_task_max_reassign=max_retries,
                           remove_failed_worker=max_consecutive_failures, heartbeat_ttl=heartbeat_ttl)
    pcs = PilotComputeService(session=cli.session(), policy=policy, launcher_options=options)
    pilot = pcs.create_pilot(desc)
    state = pilot.wait(timeout=timeout, state=PilotState.RUNNING) if wait_running else pilot.get_state()
    emit(cli, {"id": pilot.id, "state": state}, lambda: click.echo(pilot.id))
    if wait_running and state != PilotState.RUNNING:
        details = pilot.get_details()
        raise WorkFailed(f"pilot {pilot.id} is {state}: {details.get('reason') or 'see pdata pilot show'}")


def _pilot_rows(cli: CliContext, include_final: bool = True) -> list[dict[str, Any]]:
    """Pilots as ``pilot ls`` lists them: busy slots are those of CUs staging or running now."""
    out = []
    for p in cli.inspector().pilots(include_ended=include_final):
        out.append({"id": p.id, "state": p.state, "site": p.site, "resource": p.resource, "slots": p.slots,
                    "busy": p.busy_slots, "claimed": p.claimed, "queued": p.queued, "labels": p.labels,
                    "created": p.created, "started": p.started, "ended": p.ended, "reason": p.reason,
                    "walltime_left": p.walltime_left})
    return out


@pilot_group.command("ls")
@click.option("--all", "show_all", is_flag=True, help="Include pilots that ended (Done, Failed, Canceled).")
@json_option
@reads
@pass_cli
def pilot_ls(cli: CliContext, show_all: bool) -> None:
    """List pilots: state, site, resource, slots, busy slots, queued CUs, labels, age.

    AGE is the time since the pilot was started; for a pilot that ended, how long it lived.
    """
    session = cli.session()
    _refresh(session)
    rows = _pilot_rows(cli, include_final=show_all)
    emit(cli, rows, lambda: table(["ID", "STATE", "SITE", "RESOURCE", "SLOTS", "BUSY", "QUEUED", "LABELS", "AGE"], [
        [r["id"], r["state"], r["site"], r["resource"], r["slots"], r["busy"], r["queued"], labels_text(r["labels"]),
         human_age(r["created"], r["ended"])] for r in rows], empty="(no pilots)"))


@pilot_group.command("show")
@click.argument("pilot", shell_complete=complete_pilots)
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
                ("cpus", ",".join(map(str, details["cpu_binding"])) if details.get("cpu_binding") else None),
                ("walltime", f"{desc['walltime']} min" if desc.get("walltime") else None),
                ("labels", labels_text(details.get("labels"))), ("job", launcher.get("job_id")),
                ("claimed", ", ".join(details.get("claimed") or []) or None), ("queued", details.get("queued")),
                ("cached", ", ".join(details.get("cached_dus") or []) or None)])
        click.echo("\ntimes:")
        table(["STATE", "SINCE"], [[s, human_time(t)] for s, t in sorted(details["times"].items(),
                                                                          key=lambda kv: kv[1])])

    emit(cli, details, human)


@pilot_group.command("stop")
@click.argument("pilots", nargs=-1, shell_complete=complete_pilots)
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
        ids += [r["id"] for r in _pilot_rows(cli, include_final=False) if r["id"] not in ids]
    pcs = PilotComputeService(session=session)
    for pilot_id in ids:
        pcs.cancel_pilot(pilot_id)
        click.echo(f"stopped {pilot_id}", err=True)


# ------------------------------------------------------------------------------ ComputeUnits
INPUT_STATES = (DataUnitState.PENDING, DataUnitState.RUNNING, DataUnitState.DONE)
"""States of a DataUnit a CU may read: usable, or still uploading (the agent waits for it)."""
OUTPUT_STATES = (DataUnitState.RUNNING,)
"""States of a DataUnit a CU may write into (open; Done is closed for good)."""


def _input_ref(session: Session, text: str) -> str | dict[str, list[str]]:
    ref, _, files = text.partition(":")
    du_id = _usable_du(session, ref, "--input", INPUT_STATES)
    names = [f for f in files.split(",") if f] if files else []
    return {du_id: names} if names else du_id


def _usable_du(session: Session, ref: str, option: str, states: tuple[DataUnitState, ...]) -> str:
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
@click.option("--input", "inputs", multiple=True, metavar="DU[:FILE,FILE]", shell_complete=complete_dus,
              help="Input DataUnit (all of it, or some files), linked into the sandbox (repeatable).")
@click.option("--output", "outputs", multiple=True, metavar="DU:GLOB",
              help="Sandbox files matching GLOB go into DataUnit DU when the CU ends (repeatable).")
@click.option("--cores", type=click.IntRange(min=1), default=1, show_default=True, help="Processes / slots.")
@click.option("--mpi", is_flag=True, help="Launch through mpirun/srun (spmd_variation mpi).")
@click.option("--env", "env", multiple=True, type=KEY_VALUE, help="Environment variable K=V (repeatable).")
@click.option("--name", help="A name for the CU (usable instead of its id).")
@labels_option
@click.option("--pilot", help="Run on this pilot (no placement).", shell_complete=complete_pilots)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds before the CU is killed.")
@run_option("Run to put it in (started if new)  [default: PDATA_RUN, else the current command-line run while "
            "open, else a new one]")
@json_option
@pass_cli
def submit(cli: CliContext, command: tuple[str, ...], inputs: tuple[str, ...], outputs: tuple[str, ...], cores: int,
           mpi: bool, env: tuple[tuple[str, str], ...], name: str | None, labels: tuple[tuple[str, str], ...],
           pilot: str | None, timeout: float | None, run_ref: str | None) -> None:
    """Submit a ComputeUnit running EXE ARGS; bind it now and print its id.

    Put -- before EXE when its arguments start with '-'. It runs on a pilot chosen by where its input
    data is (or on --pilot); with no live pilot it waits on the shared queue for the next one (and
    a warning says so). Submissions join the current run until 'pdata wait' has seen it end.
    """
    from pilotdata.descriptions import ComputeUnitDescription
    from pilotdata.runs import Origin, named_run, run_for

    session = cli.session()
    try:
        named_run(run_ref)
    except PilotDataError as exc:
        raise click.BadParameter(str(exc), param_hint="--run") from None
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
        if is_final(state):
            raise click.BadParameter(f"pilot {pilot_id} is {state}", param_hint="--pilot")
    run = run_for(session.coord, run_ref, origin=Origin.CLI)
    cu_id = _submit_and_bind(session, desc, pilot_id, run.id)
    rec = session.coord.get(Kind.CU, cu_id)
    where = rec.detail.get("pilot") or ("shared queue" if rec.state == ComputeUnitState.PENDING else None)
    emit(cli, {"id": cu_id, "state": rec.state, "pilot": where, "run": run.id,
               "placement": rec.detail.get("placement"), "reason": rec.detail.get("reason")},
         lambda: click.echo(cu_id))
    # failed by its placement (never queued); a CU a fast pilot already ran and failed is not a submit error
    if rec.state == ComputeUnitState.FAILED and ComputeUnitState.PENDING.value not in rec.times:
        raise WorkFailed(f"{cu_id} failed at submission: {rec.detail.get('reason')}")
    if not any(not is_final(p.state) for p in session.coord.get_many(Kind.PILOT, session.coord.list_ids(Kind.PILOT))
               if p is not None):
        warn(f"warning: no live pilot: {cu_id} waits on the shared queue until one starts "
             "(pdata pilot start fork://localhost --cores N)")


def _submit_and_bind(session: Session, desc: dict[str, Any], pilot_id: str | None, run: str) -> str:
    """Record the CU in ``run`` and bind it now: to ``pilot_id``, to the best pilot, or to the shared queue."""
    from pilotdata.services.submission import bind_now, submit_units

    cu_id = submit_units(session, [desc], pilot=pilot_id, run=run)[0].id
    if pilot_id is None:
        bind_now(session, [cu_id])
    return cu_id


def _cu_ids(session: Session, refs: tuple[str, ...]) -> list[str]:
    return resolve_all(session, Kind.CU, refs) if refs else session.coord.list_ids(Kind.CU)


@click.command("wait")
@click.argument("cus", nargs=-1, shell_complete=complete_cus)
@run_option("Wait for this run's ComputeUnits  [default: PDATA_RUN, else the current run]")
@click.option("--all", "everything", is_flag=True, help="Wait for every ComputeUnit of the namespace, of every run.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after this many seconds (exit 1).")
@json_option
@reads
@pass_cli
def wait(cli: CliContext, cus: tuple[str, ...], run_ref: str | None, everything: bool, timeout: float | None) -> None:
    """Wait until the CUs end (default: those of the current run); exit 1 if any failed or was canceled.

    The current run is the one started last in this namespace. Once 'wait' has seen all of a
    command-line run's CUs end, the run is closed: the next 'pdata submit' starts a new one.
    """
    from pilotdata.errors import TimeoutExpired
    from pilotdata.services import PilotComputeService
    from pilotdata.services.waiting import wait_for_states

    session = cli.session()
    coord = session.coord
    if sum(bool(x) for x in (cus, run_ref, everything)) > 1:
        raise click.UsageError("name ComputeUnits, or --run, or --all (one of them)")
    run = None
    if cus:
        ids = resolve_all(session, Kind.CU, cus)
    elif everything:
        ids = coord.list_ids(Kind.CU)
    else:
        run = cli.run(run_ref)
        ids = [] if run is None else cli.inspector().cu_ids(CUFilter(run=run.id))
    pcs = PilotComputeService(session=session)
    try:
        with count_progress(cli, "waiting", len(ids)) as update:

            def tick() -> None:
                pcs.refresh()
                update(sum(1 for s in coord.states(Kind.CU, ids) if is_final(s)))

            try:
                records = wait_for_states(coord, Kind.CU, ids, timeout=timeout, tick=tick)
            except TimeoutExpired:
                raise WorkFailed(_timeout_message(session, ids, timeout)) from None
            update(len(ids))
    finally:
        pcs.close()
    if run is not None and run.origin == Origin.CLI.value:
        close_run(coord, run.id)
    counts = Counter(r.state for r in records)
    bad = [r for r in records if r.state != ComputeUnitState.DONE]
    summary = [{"id": r.id, "state": r.state, "exit_code": r.data.get("exit_code"),
                "reason": r.data.get("reason") or r.detail.get("reason")} for r in bad]
    scope = f"run {run.id}: " if run is not None else ""
    emit(cli, {"run": run.id if run else None, "counts": dict(counts), "failed": summary},
         lambda: click.echo(scope + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no compute units")))
    if bad:
        first = summary[0]
        raise WorkFailed(f"{len(bad)} of {len(records)} ComputeUnit(s) did not finish Done; first: {first['id']} "
                         f"{first['state']}" + (f" ({first['reason']})" if first["reason"] else "")
                         + "; see 'pdata cu ls --state Failed'")


def _timeout_message(session: Session, ids: list[str], timeout: float | None) -> str:
    """Why a wait timed out, in words: how many are where, and what to do about it."""
    found = [(i, s) for i, s in zip(ids, session.coord.states(Kind.CU, ids), strict=True)
             if s is not None and not is_final(s)]
    states = Counter(s for _, s in found)
    left = sum(states.values())
    waiting = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    pilots = [p for p in session.coord.get_many(Kind.PILOT, session.coord.list_ids(Kind.PILOT))
              if p is not None and not is_final(p.state)]
    if not pilots:
        hint = "no pilot is running: start one (pdata pilot start fork://localhost --cores N)"
    else:
        hint = "see 'pdata status' for where they wait"
    example = f", e.g. {found[0][0]} {found[0][1]}" if found else ""
    return (f"timed out after {timeout:g}s: {left} of {len(ids)} ComputeUnit(s) not finished ({waiting}{example}); "
            f"{hint}")


@click.command("cancel")
@click.argument("cus", nargs=-1, shell_complete=complete_cus)
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
        if is_final(rec.state):
            if cus:
                click.echo(f"{rec.id} already {rec.state}", err=True)
            continue
        ComputeUnit(rec.id, session=session).cancel()
        click.echo(f"canceled {rec.id}", err=True)


@click.command("logs")
@click.argument("cu", required=False, shell_complete=complete_cus)
@click.option("--stdout", "which", flag_value="stdout", help="Only standard output.")
@click.option("--stderr", "which", flag_value="stderr", help="Only standard error.")
@click.option("--pilot", "pilot_ref", metavar="PILOT", shell_complete=complete_pilots,
              help="Print this pilot's agent log instead (its stdout and stderr, on this host).")
@reads
@pass_cli
def logs(cli: CliContext, cu: str | None, which: str | None, pilot_ref: str | None) -> None:
    """Print a ComputeUnit's stdout and stderr from its sandbox (pilots on this host), and why it failed.

    With --pilot, print a pilot's agent log: what the agent itself wrote (registration, claims,
    staging, requeues, why it stopped).
    """
    session = cli.session()
    if (cu is None) == (pilot_ref is None):
        raise click.UsageError("name a ComputeUnit, or a pilot with --pilot")
    if pilot_ref is not None:
        _pilot_logs(session, resolve(session, Kind.PILOT, pilot_ref), which)
        return
    assert cu is not None
    cu_id = resolve(session, Kind.CU, cu)
    rec = session.coord.get(Kind.CU, cu_id)
    reason = rec.data.get("reason") or rec.detail.get("reason")
    ended_badly = is_final(rec.state) and rec.state != ComputeUnitState.DONE
    sandbox = rec.data.get("sandbox")
    if not sandbox:
        if ended_badly:
            raise WorkFailed(f"{cu_id} is {rec.state} and has no sandbox (it never started)"
                             + (f": {reason}" if reason else ""))
        raise NotFoundError(f"{cu_id} has no sandbox yet (it is {rec.state}; see 'pdata cu show {cu_id}')")
    desc = cu_description(rec)
    streams = [("stdout", desc.output), ("stderr", desc.error)]
    if which:
        streams = [s for s in streams if s[0] == which]
    if not Path(sandbox).is_dir():
        host = rec.detail.get("host") or "its pilot's host"
        raise NotFoundError(f"sandbox {sandbox!r} of {cu_id} is not on this host (pilot {rec.pilot}, {host})")
    _print_files([(label, Path(sandbox) / name) for label, name in streams])
    if ended_badly:
        code = rec.data.get("exit_code")
        said = f"exit code {code}" if code is not None else None
        why = ", ".join(dict.fromkeys(t for t in (said, reason) if t))
        click.echo(f"==> {cu_id} {rec.state}" + (f": {why}" if why else "") + " <==", err=True)


def _print_files(files: list[tuple[str, Path]]) -> None:
    out = sys.stdout.buffer
    for label, path in files:
        if len(files) > 1:
            click.echo(f"==> {label} ({path}) <==")
        if path.is_file():
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 16):
                    out.write(chunk)
            out.flush()
        elif len(files) > 1:
            click.echo("(no file)")


def _pilot_logs(session: Session, pilot_id: str, which: str | None) -> None:
    """The agent's stdout / stderr files, where its launcher put them (``<workdir>/<pilot>.stdout|.stderr``)."""
    rec = session.coord.get(Kind.PILOT, pilot_id)
    desc = rec.data.get("description") or {}
    launch_dir = desc.get("working_directory") or rec.data.get("workdir")
    if not launch_dir:
        raise NotFoundError(f"pilot {pilot_id} has no recorded working directory (it was started by hand: "
                            "its log is wherever its agent's output went)")

    def where(custom: str | None, suffix: str) -> Path:
        name = custom or f"{pilot_id}.{suffix}"
        return Path(name) if name.startswith("/") else Path(launch_dir) / name

    files = [("stdout", where(desc.get("output"), "stdout")), ("stderr", where(desc.get("error"), "stderr"))]
    if which:
        files = [f for f in files if f[0] == which]
    if not any(path.parent.is_dir() for _, path in files):
        host = rec.data.get("host") or (rec.data.get("launcher") or {}).get("service_url") or "its resource"
        raise NotFoundError(f"the agent log of pilot {pilot_id} ({files[0][1].parent}) is not on this host "
                            f"({host})")
    _print_files(files)


@click.command("explain")
@click.argument("cu", shell_complete=complete_cus)
@json_option
@reads
@pass_cli
def explain(cli: CliContext, cu: str) -> None:
    """Why a ComputeUnit was bound where it was, and how each live pilot scores for it now."""
    from pilotdata.services.binder import explain_cu

    session = cli.session()
    cu_id = resolve(session, Kind.CU, cu)
    text = explain_cu(session.coord, cu_id)
    rec = session.coord.get(Kind.CU, cu_id)
    place = cli.inspector().cu(cu_id).summary.place
    where = None if place is None else ("the shared queue" if place == "" else place)
    if rec.pilot is None and where is not None and rec.state == ComputeUnitState.PENDING:
        text += f"\nwaiting on: {where}"
    emit(cli, {"id": cu_id, "state": rec.state, "pilot": rec.pilot or place or None, "where": where,
               "explanation": text}, lambda: click.echo(text))


@click.command("agent", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                         "help_option_names": []}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@pass_cli
def agent_cmd(cli: CliContext, args: tuple[str, ...]) -> int:
    """Run a pilot's agent here: the same options as 'python -m agent' (try 'pdata agent --help').

    The coordination URL and namespace of pdata (flags, environment or config file) are handed to the
    agent through its environment, never on its command line.
    """
    from agent.config import build_parser
    from agent.main import main as agent_main

    parser = build_parser()
    parser.prog = "pdata agent"
    parser.epilog = ("The coordination URL and namespace come from pdata's settings (--url, --namespace, "
                     "PDATA_URL, PDATA_NAMESPACE, the config file), handed to the agent in its environment.")
    if any(a in ("-h", "--help") for a in args):
        click.echo(parser.format_help(), nl=False)
        return 0
    try:
        parser.parse_args(list(args))  # bad options: argparse's usage line names 'pdata agent', status 2
    except SystemExit as exc:
        return int(exc.code or 0)
    if cli.url:
        os.environ["PDATA_URL"] = cli.url
    if cli.namespace and not any(a.startswith("--namespace") for a in args):
        args = ("--namespace", cli.namespace, *args)
    return agent_main(list(args))


COMMANDS = [submit, wait, cancel, logs, explain, agent_cmd]
"""The top-level compute commands (``pilot`` is a group of its own)."""

