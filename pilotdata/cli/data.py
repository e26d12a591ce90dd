"""Data commands: ``pdata store add|ls|show|rm`` (PilotData) and ``put``, ``ls``, ``show``, ``get``,
``replicate``, ``mv``, ``rm``, ``verify`` (DataUnits).

Built on :class:`~pilotdata.services.PilotDataService` and :class:`~pilotdata.data.ReplicaManager`.
Inputs (ids, store names, local paths, URLs) are all checked before anything is recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pilotdata.cli.complete import complete_dus, complete_stores
from pilotdata.cli.lookup import resolve
from pilotdata.cli.options import (
    KEY_VALUE,
    SIZE,
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
from pilotdata.cli.output import byte_progress, emit, fields, human_size, human_time, labels_text, table
from pilotdata.errors import StoreError
from pilotdata.records import ReplicaStatus
from pilotdata.states import DataUnitState, Kind, is_final


# ------------------------------------------------------------------------------------ stores
@click.group("store")
def store_group() -> None:
    """PilotData stores: storage allocations (file://, ssh://, s3://, irods://) that hold DataUnits."""


@store_group.command("add")
@click.argument("name")
@click.argument("url")
@labels_option
@click.option("--size", type=SIZE, help="Quota: 10GB, 512MiB, or a bare number of megabytes.")
@click.option("--option", "storage_options", multiple=True, type=KEY_VALUE,
              help="fsspec storage option KEY=VALUE (repeatable; VALUE may be JSON). Secrets belong in the "
                   "environment, not here.")
@json_option
@pass_cli
def store_add(cli: CliContext, name: str, url: str, labels: tuple[tuple[str, str], ...], size: str | None,
              storage_options: tuple[tuple[str, str], ...]) -> None:
    """Register the store at URL under NAME (its id): the store is opened, checked and its root created."""
    from pilotdata.services import PilotDataService

    session = cli.session()
    if session.coord.exists(Kind.PD, name):
        raise click.BadParameter(f"a store named {name!r} already exists", param_hint="NAME")
    desc: dict[str, Any] = {"service_url": url, "labels": to_dict(labels, "--label")}
    if size is not None:
        desc["size"] = size
    options = {k: json_or_text(v) for k, v in to_dict(storage_options, "--option").items()}
    if options:
        desc["storage_options"] = options
    pd = PilotDataService(session=session).create_pilot(desc, pd_id=name)
    record = session.coord.get(Kind.PD, pd.id).data
    emit(cli, _store_row(pd.id, record), lambda: click.echo(pd.id))


def _store_row(pd_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": pd_id, "url": data.get("url"), "labels": data.get("labels") or {}, "size": data.get("size")}


@store_group.command("ls")
@json_option
@reads
@pass_cli
def store_ls(cli: CliContext) -> None:
    """List the stores."""
    coord = cli.session().coord
    rows = [_store_row(r.id, r.data) for r in coord.get_many(Kind.PD, coord.list_ids(Kind.PD)) if r is not None]
    emit(cli, rows, lambda: table(["NAME", "URL", "QUOTA", "LABELS"], [
        [r["id"], r["url"], human_size(r["size"]), labels_text(r["labels"])] for r in rows], empty="(no stores)"))


@store_group.command("show")
@click.argument("name", shell_complete=complete_stores)
@json_option
@reads
@pass_cli
def store_show(cli: CliContext, name: str) -> None:
    """Show a store: URL, labels, quota, bytes used and the DataUnits it holds."""
    from pilotdata.services import PilotData

    session = cli.session()
    pd_id = resolve(session, Kind.PD, name)
    details = PilotData(pd_id, session=session).get_details()

    def human() -> None:
        fields([("name", details["id"]), ("url", details["url"]), ("labels", labels_text(details["labels"])),
                ("quota", human_size(details["size"])), ("used", human_size(details["used"])),
                ("data units", ", ".join(details["data_units"]) or "-")])

    emit(cli, details, human)


@store_group.command("rm")
@click.argument("name", shell_complete=complete_stores)
@click.option("--force", is_flag=True, help="Deregister even if DataUnits have replicas there.")
@pass_cli
def store_rm(cli: CliContext, name: str, force: bool) -> None:
    """Deregister a store (its files stay where they are)."""
    from pilotdata.services import PilotData

    session = cli.session()
    pd_id = resolve(session, Kind.PD, name)
    pd = PilotData(pd_id, session=session)
    held = [du.id for du in pd.list_data_units()]
    if held and not force:
        raise click.UsageError(f"store {pd_id!r} holds replicas of {', '.join(held)}; move them first "
                               "(pdata mv DU --to OTHER) or pass --force")
    pd.cancel()
    click.echo(f"removed store {pd_id}", err=True)


# ---------------------------------------------------------------------------------- DataUnits
def _choose_store(cli: CliContext, store: str | None) -> str:
    session = cli.session()
    if store is not None:
        return resolve(session, Kind.PD, store)
    stores = session.coord.list_ids(Kind.PD)
    if len(stores) == 1:
        return stores[0]
    if not stores:
        raise click.UsageError("no store yet: add one with 'pdata store add NAME URL'")
    raise click.UsageError(f"several stores ({', '.join(stores)}): choose one with --store")


@click.command("put")
@click.argument("paths", nargs=-1)
@click.option("--name", help="DataUnit name  [default: the first path's name]")
@click.option("--store", help="Store to upload into  [default: the only store]", shell_complete=complete_stores)
@click.option("--empty", is_flag=True, help="Create an empty DataUnit that CUs fill (submit --output DU:GLOB).")
@labels_option
@run_option("Run to put it in (started if new)  [default: PDATA_RUN, else the current command-line run while "
            "open, else a new one]")
@json_option
@pass_cli
def put(cli: CliContext, paths: tuple[str, ...], name: str | None, store: str | None, empty: bool,
        labels: tuple[tuple[str, str], ...], run_ref: str | None) -> None:
    """Create a DataUnit from local files/directories (or URLs) and upload it; print its id.

    A directory keeps its own name as a prefix of its files' paths. With --empty (and no PATHS) the
    DataUnit starts empty, ready to receive the outputs of ComputeUnits. Each file's checksum is
    recorded in the algorithm of 'pdata --checksum' (blake3 if installed, else sha256).
    """
    from pilotdata.data import ReplicaManager, resolve_sources
    from pilotdata.descriptions import DataUnitDescription
    from pilotdata.errors import DescriptionError
    from pilotdata.records import du_entries
    from pilotdata.runs import Origin, named_run, run_for

    try:
        named_run(run_ref)
    except DescriptionError as exc:
        raise click.BadParameter(str(exc), param_hint="--run") from None
    if bool(paths) == empty:
        raise click.UsageError("give PATHS to upload, or --empty (without PATHS) for an output DataUnit")
    checksum = cli.checksum_algorithm()  # a bad or uninstalled algorithm: usage error, nothing recorded
    session = cli.session()
    pd_id = _choose_store(cli, store)
    default_name = (Path(paths[0].rstrip("/")).name or paths[0]) if paths else None
    desc = DataUnitDescription(name=default_name if name is None else name, file_urls=paths,  # '' is an error
                               labels=to_dict(labels, "--label"))
    sources = resolve_sources(desc.file_urls)  # missing paths fail here: nothing recorded yet
    total = sum(s.size() for s in sources)
    ops = ReplicaManager(session.coord, checksum=checksum)
    du_id = ops.register(desc, run=run_for(session.coord, run_ref, origin=Origin.CLI).id)
    if empty:
        ops.open_empty(du_id, pd_id)
    else:
        with byte_progress(cli, f"put {du_id}", total) as progress:
            ops.upload(du_id, pd_id, progress=progress)
    rec = ops.record(du_id)
    files = du_entries(rec)
    emit(cli, {"id": du_id, "name": rec.data.get("name"), "state": rec.state, "store": pd_id,
               "files": len(files), "size": sum(f.size for f in files)}, lambda: click.echo(du_id))


def _du_row(rec: Any) -> dict[str, Any]:
    from pilotdata.records import du_entries, replicas

    files = du_entries(rec)
    return {"id": rec.id, "name": rec.data.get("name"), "state": rec.state, "files": len(files),
            "size": sum(f.size for f in files),
            "replicas": {pd: rep.status.value for pd, rep in replicas(rec).items()}}


def _replicas_text(reps: dict[str, str]) -> str:
    return ",".join(pd if status == ReplicaStatus.COMPLETE else f"{pd}({status})"
                    for pd, status in reps.items()) or "-"


@click.command("ls")
@click.option("--store", help="Only DataUnits with a replica on this store.", shell_complete=complete_stores)
@json_option
@reads
@pass_cli
def ls(cli: CliContext, store: str | None) -> None:
    """List DataUnits: name, state, files, size and replicas."""
    coord = cli.session().coord
    pd_id = resolve(cli.session(), Kind.PD, store) if store else None
    rows = [_du_row(r) for r in coord.get_many(Kind.DU, coord.list_ids(Kind.DU)) if r is not None]
    if pd_id:
        rows = [r for r in rows if pd_id in r["replicas"]]
    emit(cli, rows, lambda: table(["ID", "NAME", "STATE", "FILES", "SIZE", "REPLICAS"], [
        [r["id"], r["name"], r["state"], r["files"], human_size(r["size"]), _replicas_text(r["replicas"])]
        for r in rows], empty="(no data units)"))


@click.command("show")
@click.argument("du", shell_complete=complete_dus)
@json_option
@reads
@pass_cli
def show(cli: CliContext, du: str) -> None:
    """Show a DataUnit: state, files (sizes, checksums) and replicas."""
    from pilotdata.services import DataUnit

    session = cli.session()
    details = DataUnit(resolve(session, Kind.DU, du), session=session).get_details()

    def human() -> None:
        fields([("id", details["id"]), ("name", details["name"]), ("state", details["state"]),
                ("size", human_size(details["size"])), ("reason", details["reason"])])
        click.echo("\nfiles:")
        table(["PATH", "SIZE", "CHECKSUM"], [[f["path"], human_size(f["size"]),
                                              f"{f['algorithm']}:{(f[f['algorithm']] or '?')[:16]}"]
                                             for f in details["files"]])
        click.echo("\nreplicas:")
        table(["STORE", "STATUS", "SINCE", "REASON"], [
            [pd, info.get("status"), human_time(info.get("time")), info.get("reason")]
            for pd, info in sorted(details["replicas"].items())])

    emit(cli, details, human)


@click.command("get")
@click.argument("du", shell_complete=complete_dus)
@click.argument("dest")
@click.option("--file", "files", multiple=True, help="Only this file of the DataUnit (repeatable).")
@click.option("--store", help="Read the replica on this store  [default: any complete one]")
@json_option
@reads
@pass_cli
def get(cli: CliContext, du: str, dest: str, files: tuple[str, ...], store: str | None) -> None:
    """Copy a DataUnit's files into DEST (a local directory or a store URL)."""
    from pilotdata.data import ReplicaManager
    from pilotdata.records import du_entries

    if "://" not in dest and Path(dest).expanduser().exists() and not Path(dest).expanduser().is_dir():
        raise click.BadParameter(f"{dest!r} exists and is not a directory", param_hint="DEST")
    session = cli.session()
    du_id = resolve(session, Kind.DU, du)
    pd_id = resolve(session, Kind.PD, store) if store else None
    ops = ReplicaManager(session.coord)
    total = sum(e.size for e in du_entries(ops.record(du_id)) if not files or e.path in files)
    with byte_progress(cli, f"get {du_id}", total) as progress:
        written = ops.export(du_id, dest, files=list(files) or None, pd_id=pd_id, progress=progress)
    emit(cli, {"id": du_id, "destination": dest, "files": written},
         lambda: click.echo(f"{len(written)} file(s) of {du_id} -> {dest}"))


@click.command("replicate")
@click.argument("du", shell_complete=complete_dus)
@click.option("--to", "to", required=True, help="Store to copy the DataUnit onto.", shell_complete=complete_stores)
@pass_cli
def replicate(cli: CliContext, du: str, to: str) -> None:
    """Copy a DataUnit onto another store (store to store, verified)."""
    _copy_to(cli, du, to, move=False)


@click.command("mv")
@click.argument("du", shell_complete=complete_dus)
@click.option("--to", "to", required=True, help="Store to move the DataUnit to.", shell_complete=complete_stores)
@pass_cli
def mv(cli: CliContext, du: str, to: str) -> None:
    """Move a DataUnit to another store (replicate, then delete the other replicas)."""
    _copy_to(cli, du, to, move=True)


def _copy_to(cli: CliContext, du: str, to: str, *, move: bool) -> None:
    from pilotdata.data import ReplicaManager
    from pilotdata.records import du_size

    session = cli.session()
    du_id, pd_id = resolve(session, Kind.DU, du), resolve(session, Kind.PD, to)
    ops = ReplicaManager(session.coord)
    verb, action = ("move", ops.move) if move else ("replicate", ops.replicate)
    with byte_progress(cli, f"{verb} {du_id} -> {pd_id}", du_size(ops.record(du_id))) as progress:
        action(du_id, pd_id, progress=progress)
    click.echo(f"{du_id} {'moved' if move else 'replicated'} to {pd_id}", err=True)


@click.command("rm")
@click.argument("du", shell_complete=complete_dus)
@click.option("--store", help="Delete only the replica on this store (never the last one).")
@pass_cli
def rm(cli: CliContext, du: str, store: str | None) -> None:
    """Remove a DataUnit and all its replicas, or one replica with --store."""
    from pilotdata.data import ReplicaManager
    from pilotdata.records import complete_replicas, replicas

    session = cli.session()
    du_id = resolve(session, Kind.DU, du)
    ops = ReplicaManager(session.coord)
    if store is None:
        ops.remove(du_id)
        click.echo(f"removed {du_id}", err=True)
        return
    pd_id = resolve(session, Kind.PD, store)
    rec = ops.record(du_id)
    if pd_id not in replicas(rec):
        raise click.BadParameter(f"DataUnit {du_id} has no replica on {pd_id!r}", param_hint="--store")
    if complete_replicas(rec) == [pd_id] and not is_final(rec.state):
        raise click.BadParameter(f"{pd_id} holds the last replica of DataUnit {du_id}; 'pdata rm {du_id}' "
                                 "removes the whole DataUnit", param_hint="--store")
    ops.remove_replica(du_id, pd_id)
    click.echo(f"removed the replica of {du_id} on {pd_id}", err=True)


@click.command("verify")
@click.argument("du", shell_complete=complete_dus)
@click.option("--store", help="Check only the replica on this store.")
@json_option
@reads
@pass_cli
def verify(cli: CliContext, du: str, store: str | None) -> None:
    """Check every complete replica against the manifest (sizes and checksums); exit 1 if one is bad.

    Each file is read whole and hashed in the algorithm its manifest entry names.
    """
    from pilotdata.data import ReplicaManager
    from pilotdata.records import du_entries

    session = cli.session()
    du_id = resolve(session, Kind.DU, du)
    pd_id = resolve(session, Kind.PD, store) if store else None
    ops = ReplicaManager(session.coord)
    rec = ops.record(du_id)
    if is_final(rec.state) and rec.state != DataUnitState.DONE:
        raise StoreError(f"DataUnit {du_id} is {rec.state}: nothing to verify")
    problems = ops.verify(du_id, pd_id)
    if not problems:
        raise StoreError(f"DataUnit {du_id} has no complete replica to verify")
    algorithms = sorted({f.algorithm for f in du_entries(rec)})

    def human() -> None:
        checked = f" ({', '.join(algorithms)})" if algorithms else ""
        for pd, found in sorted(problems.items()):
            click.echo(f"{pd}: {'ok' + checked if not found else f'{len(found)} problem(s)'}")
            for problem in found:
                click.echo(f"  {problem}")

    emit(cli, {"id": du_id, "replicas": problems, "ok": not any(problems.values()), "algorithms": algorithms},
         human)
    bad = sorted(pd for pd, found in problems.items() if found)
    if bad:
        raise WorkFailed(f"DataUnit {du_id}: bad replica on {', '.join(bad)}: {problems[bad[0]][0]}")


COMMANDS = [put, ls, show, get, replicate, mv, rm, verify]
"""The top-level DataUnit commands (``store`` is a group of its own)."""
