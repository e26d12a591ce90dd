"""The example's workflow on the Pilot-API: stores and pilots at two sites, DataUnits, ComputeUnits.

:func:`run_workflow` prepares (or reuses) the synthetic database, registers one PilotData per site
(``file://`` directories labelled ``site-a`` / ``site-b``), starts the pilots (alternating sites),
submits the database as ONE shared DataUnit, each query chunk as its own DataUnit, the task code as a
small DataUnit and an empty output DataUnit; then one ComputeUnit per chunk reading the code, the
database and its chunk and writing ``hits-*.tsv`` into the output DataUnit. It waits, exports and
merges the hits, and gathers what :mod:`examples.blast.report` prints. Pilots are always cancelled,
and (unless ``--keep``) the example removes what it recorded: stores, sandboxes, and its records in
coordination (:func:`remove_records`); the history keeps the run.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilotdata import ComputeDataService, ComputeUnit, PilotComputeService, PilotDataService
from pilotdata.cleanup import remove_run
from pilotdata.config import data_dir
from pilotdata.errors import PilotDataError
from pilotdata.history import History, HistoryWriter
from pilotdata.session import Session
from pilotdata.states import Kind

from . import data, merge, report

SITES = ("site-a", "site-b")
HERE = Path(__file__).resolve().parent
TASK_FILES = ("task.py", "kmer.py", "hits.py")
"""The program each ComputeUnit runs, shipped as a DataUnit so remote pilots need only Python."""


class WorkflowError(Exception):
    """The example could not run (bad flags, a DataUnit that failed, pilots that never started)."""


@dataclass
class Config:
    """What ``run.py`` was asked to do (see its ``--help``)."""

    db_size: int = 200_000_000
    chunks: int = 8
    pilots: int = 2
    cores: int = 2
    seed: int = 42
    queries: int = 400
    engine: str = "auto"
    workdir: Path | None = None
    keep: bool = False
    url: str | None = None
    resource: str = "fork://localhost"
    python: str = sys.executable
    timeout: float = 900.0


@dataclass
class Outcome:
    """Everything the summary reports."""

    config: Config
    engine: str
    run_dir: Path
    namespace: str
    coordination: str
    workload: data.Workload
    phases: dict[str, float] = field(default_factory=dict)
    cu_states: dict[str, int] = field(default_factory=dict)
    cu_failures: list[str] = field(default_factory=list)
    placement: dict[str, int] = field(default_factory=dict)
    traffic: report.Traffic | None = None
    merged: merge.Merged | None = None
    planted: merge.PlantCheck | None = None
    db_du: str = ""
    db_bytes: int = 0
    db_site: str = ""

    @property
    def ok(self) -> bool:
        """All CUs Done and every planted match found."""
        done = self.cu_states.get("Done", 0)
        return (done == sum(self.cu_states.values()) and done > 0
                and self.planted is not None and self.planted.all_found)


def resolve_engine(requested: str) -> str:
    """``blast`` when NCBI BLAST+ is installed (or asked for), else ``kmer``."""
    have_blast = bool(shutil.which("makeblastdb") and shutil.which("blastn"))
    if requested == "blast" and not have_blast:
        raise WorkflowError("--engine blast: makeblastdb/blastn not found (scripts/setup installs ncbi-blast+)")
    if requested == "auto":
        return "blast" if have_blast else "kmer"
    return requested


def default_run_dir() -> Path:
    """``<data dir>/blast-runs/run-<time>-<random>``."""
    return data_dir() / "blast-runs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def run_workflow(cfg: Config, say: Callable[[str], None] = print) -> Outcome:
    """Run the whole example (see the module docstring); never leaves a pilot running."""
    if cfg.chunks < 1 or cfg.pilots < 1 or cfg.cores < 1:
        raise WorkflowError("--chunks, --pilots and --cores must be >= 1")
    started = time.monotonic()
    engine = resolve_engine(cfg.engine)
    run_dir = (cfg.workdir or default_run_dir()).expanduser().absolute()
    run_dir.mkdir(parents=True, exist_ok=True)

    say(f"preparing a {data.format_size(cfg.db_size)} database (seed {cfg.seed}, {cfg.queries} queries) ...")
    workload = data.prepare(data_dir() / "blast-cache", cfg.db_size, cfg.seed, cfg.queries,
                            makeblastdb=shutil.which("makeblastdb") if engine == "blast" else None)
    say(f"  {'reused' if workload.reused else 'built'} {workload.root} in {workload.build_seconds:.1f}s: "
        f"{workload.records} records, {len(workload.plants)} planted matches")
    chunk_files = data.split_queries(workload.queries_fasta, cfg.chunks, run_dir / "chunks")
    namespace = f"blast-{uuid.uuid4().hex[:10]}"
    session = Session(cfg.url, namespace=namespace)
    out = Outcome(cfg, engine, run_dir, namespace, "", workload)
    out.phases["prepare"] = time.monotonic() - started
    pcs = PilotComputeService(session=session)
    pds = PilotDataService(session=session)
    cds = ComputeDataService(session=session)
    try:
        out.coordination = session.url
        _execute(cfg, out, chunk_files, pcs, pds, cds, say)
    finally:
        t_end = time.monotonic()
        try:
            cds.close()
        finally:
            pcs.cancel()
            try:
                if not cfg.keep and cds.run is not None:
                    remove_records(session, cds.run)
            finally:
                session.close()
            if not cfg.keep:
                for sub in ("stores", "pilots", "chunks"):
                    shutil.rmtree(run_dir / sub, ignore_errors=True)
        out.phases["teardown"] = time.monotonic() - t_end
    out.phases["total"] = time.monotonic() - started
    return out


def remove_records(session: Session, run: str) -> None:
    """Remove everything this example recorded in its namespace: the run's CUs and DataUnits (replicas
    deleted), the run, the stores and the pilots; then drain the event stream into the history and trim
    it, so the namespace leaves nothing in the coordination backend. The history keeps the whole run
    (``pdata --namespace NS run ls --all``, ``pdata --namespace NS report --run RUN``)."""
    coord = session.coord
    remove_run(coord, run, data=True)
    for kind in (Kind.PD, Kind.PILOT):
        for entity_id in coord.list_ids(kind):
            coord.delete(kind, entity_id)
    with History(session.history_url) as history:
        HistoryWriter(coord, history).drain()
    last = coord.last_cursor()
    if last is not None:
        coord.trim_events(last)


def _execute(cfg: Config, out: Outcome, chunk_files: list[Path], pcs: PilotComputeService,
             pds: PilotDataService, cds: ComputeDataService, say: Callable[[str], None]) -> None:
    run_dir, engine, workload = out.run_dir, out.engine, out.workload
    sites = SITES[:min(len(SITES), cfg.pilots)]
    t0 = time.monotonic()
    deadline = t0 + cfg.timeout

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    for site in sites:
        pds.create_pilot({"service_url": f"file://{run_dir / 'stores' / site}", "affinity_datacenter_label": site})
    pilots = []
    for i in range(cfg.pilots):
        site = SITES[i % len(SITES)]
        pilots.append(pcs.create_pilot({
            "service_url": cfg.resource, "number_of_processes": cfg.cores,
            "affinity_datacenter_label": site, "affinity_machine_label": f"node-{i + 1}",
            "working_directory": str(run_dir / "pilots" / f"{site}-node-{i + 1}"),
        }))
    cds.add_pilot_compute_service(pcs)
    cds.add_pilot_data_service(pds)
    say(f"started {len(pilots)} pilot(s) x {cfg.cores} slot(s) on {cfg.resource} at {', '.join(sites)}; "
        f"coordination {out.coordination} (namespace {out.namespace})")

    code_du = cds.submit_data_unit({"name": "blast-task-code", "file_urls": [str(HERE / f) for f in TASK_FILES],
                                    "affinity_datacenter_label": sites[0]})
    db_du = cds.submit_data_unit({"name": "blastdb", "file_urls": [str(workload.db_dir(engine))],
                                  "affinity_datacenter_label": sites[0]})
    chunk_dus = [cds.submit_data_unit({"name": path.stem, "file_urls": [str(path)],
                                       "affinity_datacenter_label": sites[i % len(sites)]})
                 for i, path in enumerate(chunk_files)]
    out_du = cds.submit_data_unit({"name": "hits", "file_urls": [], "affinity_datacenter_label": sites[0]})
    for du in [code_du, db_du, *chunk_dus, out_du]:
        state = du.wait(timeout=left())
        if state != "Running":
            raise WorkflowError(f"DataUnit {du.id} ({du.get_details().get('name')}) is {state}: "
                                f"{du.get_details().get('reason')}")
    details = db_du.get_details()
    out.db_du, out.db_bytes = db_du.id, int(details["size"])
    out.db_site = report.site_of_pd(cds.session, db_du.list_pilot_data())
    out.phases["pilots + data units"] = time.monotonic() - t0
    say(f"database DataUnit {db_du.id}: {len(details['files'])} files, {data.format_size(out.db_bytes)} "
        f"at {out.db_site}; {len(chunk_dus)} chunk DataUnits")

    t1 = time.monotonic()
    descriptions: list[dict[str, Any]] = []
    for i, (path, chunk_du) in enumerate(zip(chunk_files, chunk_dus)):
        descriptions.append({
            "name": f"blast-{path.stem}",
            "executable": cfg.python,
            "arguments": ["task.py", "--db", data.DB_DIR, "--queries", path.name,
                          "--out", f"hits-{i:04d}.tsv", "--engine", engine],
            "shell": False,
            "number_of_processes": 1,
            "input_data": [code_du.id, db_du.id, chunk_du.id],
            "output_data": [{out_du.id: ["hits-*.tsv"]}],
        })
    cus = cds.submit_compute_units(descriptions)
    say(f"submitted {len(cus)} ComputeUnits; waiting ...")
    pilot_names = report.pilot_names(cds.session, [p.id for p in pilots])
    progress = _Progress(len(cus), pilot_names, t1, say)
    for cu in cus:
        cu.add_done_callback(progress.done)
    try:
        cds.wait(timeout=left())
    except PilotDataError as exc:
        raise WorkflowError(f"ComputeUnits did not finish: {exc}") from exc
    progress.finished.wait(timeout=5.0)  # the last callbacks may trail wait() by a moment
    out.phases["compute"] = time.monotonic() - t1
    for cu in cus:
        d = cu.get_details()
        out.cu_states[d["state"]] = out.cu_states.get(d["state"], 0) + 1
        where = pilot_names.get(d["pilot"] or "", d["pilot"] or "unplaced")
        if d["state"] == "Done":
            out.placement[where] = out.placement.get(where, 0) + 1
        else:
            out.cu_failures.append(f"{cu.id} ({d['description'].get('name')}) {d['state']} on {where}: "
                                   f"{d['reason']}")
    t2 = time.monotonic()
    out.traffic = report.traffic(cds.session, cds.run or "", [p.id for p in pilots])
    export_dir = run_dir / "results" / "chunks"
    shutil.rmtree(export_dir, ignore_errors=True)
    files = [Path(p) for p in out_du.export(str(export_dir))] if out_du.get_details()["files"] else []
    out.merged = merge.merge(files, run_dir / "results" / "hits.tsv")
    out.planted = merge.check_planted(out.merged.hits, workload.plants)
    out.phases["merge"] = time.monotonic() - t2


class _Progress:
    """Prints a line as ComputeUnits finish: each one when there are few, about every tenth otherwise."""

    def __init__(self, total: int, pilot_names: dict[str, str], started: float, say: Callable[[str], None]) -> None:
        self.total = total
        self.names = pilot_names
        self.started = started
        self.say = say
        self.count = 0
        self.step = max(1, total // 10)
        self.lock = threading.Lock()
        self.finished = threading.Event()

    def done(self, cu: ComputeUnit) -> None:
        """``add_done_callback`` target (runs in the service's watcher thread)."""
        details = cu.get_details()
        with self.lock:
            self.count += 1
            if not self.count % self.step or self.count == self.total or details["state"] != "Done":
                where = self.names.get(details["pilot"] or "", details["pilot"] or "no pilot")
                name = (details.get("description") or {}).get("name", cu.id)
                self.say(f"  [{time.monotonic() - self.started:6.1f}s] {self.count}/{self.total} finished "
                         f"(latest: {name} {details['state']} on {where})")
            if self.count >= self.total:
                self.finished.set()
