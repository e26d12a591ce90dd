"""Benchmark (issue "placement engine"): a BLAST-like workload on two sites over a throttled link.

One shared database DataUnit of D bytes and N ComputeUnits, each reading the whole database plus
its own small query chunk (a DataUnit of its own). Pilots run at two sites, site-a and site-b; all
data starts at site-a. Site-b is a Linux network namespace behind a veth pair shaped with ``tc tbf``
to the wide-area rate, its pilots are started over SSH *inside* that namespace, and coordination is
a redis-server on site-a's address, so everything site-b reads or says crosses the throttled link
(see ``benchmarks/_sites.py``). Three policies run in one go, each on fresh pilots (cold caches):

naive
    No staging by the system: each CU streams the database and its chunk from site-a's store itself
    (``ssh ... cat``, OpenSSH, inside the CU), so nothing is cached. CUs are bound to a random pilot.
label-only
    BigJob's placement: every CU is bound (``PilotCompute.submit_compute_unit``) to a random pilot
    among those matching its labels (here: all), with the agent's normal per-pilot cache.
engine
    This engine: ``ComputeDataService`` placement + per-pilot cache + replication. The CDS does not
    trigger replication itself yet, so the policy does it through the public API: it asks
    :func:`placement.replication_plan` (readers = one pull per pilot, as each pilot caches once),
    copies the planned replicas with ``DataUnit.add_replica``, and -- as the CDS does not know about
    replicas in flight -- hands CUs to the CDS only at the pace the sites already holding the data can
    run them (required affinity to those sites) until the copies land; then the rest, unconstrained.

Printed per policy: makespan (first submit to last CU final; the engine's replication included),
bytes across sites from the veth counters (both directions: data, coordination, SSH control), and
where the CUs ran; then the ratios against the targets, and the time of :func:`placement.assign`
for 10,000 CUs x 100 pilots. Needs root and ``ip netns``; refuses with the reason otherwise.

    python benchmarks/locality.py [--db-size 1GB] [--cus 200] [--wan-rate 200mbit] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import placement_speed
from benchmarks._sites import SetupError, TwoSites, check_prerequisites, fmt_bytes, parse_rate, parse_size
from pilotdata import ComputeDataService, PilotComputeService, PilotDataService
from pilotdata.records import TRANSFER_EVENT
from pilotdata.services.data_unit import DataUnit
from pilotdata.services.pilot_compute import PilotCompute
from pilotdata.services.pilot_data import PilotData
from pilotdata.services.snapshot import take_snapshot
from pilotdata.services.waiting import wait_for_states
from pilotdata.session import Session
from pilotdata.states import FINAL_STATES, Kind
from placement import BandwidthModel, StoreInfo, assign, replication_plan

POLICIES = ("naive", "label-only", "engine")
SITES = ("site-a", "site-b")
HOME = "site-a"
"""Where every DataUnit starts."""
PD_IDS = {"site-b": "pd-0-site-b", "site-a": "pd-1-site-a"}
"""PilotData ids. The agent tries complete replicas in PD-id order (agent/staging.py ranks only
``file://`` stores first), so site-b's store must sort first for site-b pilots to read the engine's
replica; site-a pilots have cached the database from site-a's store before that replica exists."""
TASK = Path(__file__).resolve().with_name("_locality_task.py")
TARGET_NAIVE = 3.0
TARGET_LABEL = 1.5
TARGET_BYTES = 1.05
TARGET_PLACEMENT_S = 1.0


@dataclass(frozen=True)
class Settings:
    """The workload and testbed knobs (see ``--help``)."""

    db_size: int = 10**9
    cus: int = 200
    chunk_size: int = 64 * 1024
    wan_bits: int = 200 * 10**6
    pilots_per_site: int = 3
    slots: int = 1
    task_seconds: float = 1.0
    seed: int = 7
    timeout: float = 7200.0
    policies: tuple[str, ...] = POLICIES

    @property
    def wan_bytes_per_s(self) -> float:
        """The link rate in bytes/s."""
        return self.wan_bits / 8


@dataclass
class Env:
    """The testbed plus the data of the workload, shared by the policies."""

    sites: TwoSites
    session: Session
    workdir: Path
    pds: PilotDataService
    pd: dict[str, PilotData]
    db: DataUnit
    db_name: str
    chunks: list[DataUnit]
    chunk_names: list[str]


@dataclass
class PilotSet:
    """The pilots of one policy, with their sites and slots."""

    pcs: PilotComputeService
    pilots: list[PilotCompute]
    site_of: dict[str, str]
    directory: Path


@dataclass
class Result:
    """What one policy measured."""

    policy: str
    makespan_s: float
    bytes_a_to_b: int
    bytes_b_to_a: int
    done: int
    failed: int
    by_site: dict[str, int]
    remote_sites: list[str]
    pilots_used: dict[str, int] = field(default_factory=dict)
    """Per site, how many distinct pilots ran CUs (each fetches the database once when it caches)."""
    notes: list[str] = field(default_factory=list)
    first_failure: str | None = None
    store_fetches: dict[str, int] = field(default_factory=dict)
    """Per site, the database's copies from a store into a pilot's cache, as the agents recorded them
    (label-only: one per pilot that ran CUs there)."""
    reread_bytes: dict[str, int] = field(default_factory=dict)
    """Per site, bytes of those copies' failed attempts, moved again by the retry (the link counted both)."""

    @property
    def bytes_across(self) -> int:
        """Bytes that crossed the link, both directions."""
        return self.bytes_a_to_b + self.bytes_b_to_a


# ----------------------------------------------------------------------------- set-up
def _write_random(path: Path, size: int) -> None:
    """``size`` random bytes (incompressible, so no layer can cheat on the link)."""
    block = 4 * 2**20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(block, left)))
            left -= block


def prepare(sites: TwoSites, settings: Settings, workdir: Path, log: Callable[[str], None]) -> Env:
    """Register a PilotData per site and put the database and the N chunks on site-a's."""
    session = Session(sites.coordination_url, namespace=f"locality-{uuid.uuid4().hex[:10]}",
                      history_url=f"sqlite:///{workdir / 'history.sqlite'}")
    pds = PilotDataService(session=session)
    pd: dict[str, PilotData] = {}
    for site, sshd in (("site-a", sites.sshd_a), ("site-b", sites.sshd_b)):
        root = workdir / f"pd-{site}"
        pd[site] = pds.create_pilot({
            "service_url": f"ssh://root@{sshd.host}:{sshd.port}{root}",
            "storage_options": sites.ssh_options(),
            "affinity_datacenter_label": site,
            "affinity_machine_label": f"{site}-store",
        }, pd_id=PD_IDS[site])
    cds = ComputeDataService(session=session)
    inputs = workdir / "inputs"
    inputs.mkdir()
    started = time.perf_counter()
    db_file = inputs / "db.bin"
    _write_random(db_file, settings.db_size)
    db = cds.submit_data_unit({"name": "blastdb", "file_urls": [str(db_file)]}, pilot_data=pd[HOME],
                              background=False)
    db_file.unlink()
    chunks: list[DataUnit] = []
    names: list[str] = []
    for i in range(settings.cus):
        name = f"query-{i:05d}.fa"
        path = inputs / name
        _write_random(path, settings.chunk_size)
        chunks.append(cds.submit_data_unit({"name": name, "file_urls": [str(path)]}, pilot_data=pd[HOME],
                                           background=False))
        names.append(name)
        path.unlink()
    cds.close()
    for du in [db, *chunks]:
        if du.get_state() != "Running":
            raise RuntimeError(f"DataUnit {du.id} is {du.get_state()}: {du.get_details()['reason']}")
    log(f"data: database {fmt_bytes(settings.db_size)} + {settings.cus} chunks of {fmt_bytes(settings.chunk_size)} "
        f"on {PD_IDS[HOME]} ({time.perf_counter() - started:.1f} s to upload)")
    return Env(sites, session, workdir, pds, pd, db, "db.bin", chunks, names)


def start_pilots(env: Env, settings: Settings, policy: str) -> PilotSet:
    """Fresh pilots for one policy: ``pilots_per_site`` at each site, all Running on return.

    site-a's run here (``fork://``); site-b's are started over SSH inside site-b's namespace.
    """
    directory = env.workdir / "pilots" / policy
    pset = PilotSet(PilotComputeService(session=env.session), [], {}, directory)
    try:
        for site in SITES:
            for i in range(settings.pilots_per_site):
                desc = {
                    "number_of_processes": settings.slots,
                    "working_directory": str(directory / f"{site}-{i}"),
                    "affinity_datacenter_label": site,
                    "affinity_machine_label": f"{site}-node{i}",
                }
                if site == "site-a":
                    pilot = pset.pcs.create_pilot({**desc, "service_url": "fork://localhost"})
                else:
                    sshd = env.sites.sshd_b
                    pilot = pset.pcs.create_pilot({**desc, "service_url": f"ssh://root@{sshd.host}:{sshd.port}"},
                                                  python=sys.executable, **env.sites.ssh_options())
                pset.pilots.append(pilot)
                pset.site_of[pilot.id] = site
        for pilot in pset.pilots:
            state = pilot.wait(timeout=120, state="Running")
            if state != "Running":
                raise RuntimeError(f"pilot {pilot.id} at {pset.site_of[pilot.id]} is {state}: "
                                   f"{pilot.get_details().get('reason')}")
    except BaseException:
        stop_pilots(pset)
        raise
    return pset


def stop_pilots(pset: PilotSet) -> None:
    """Cancel the pilots (agents stopped by their launchers, in parallel), delete their caches and sandboxes."""
    stoppers = [threading.Thread(target=pset.pcs.cancel_pilot, args=(p.id,), daemon=True) for p in pset.pilots]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join(timeout=60)
    pset.pcs.cancel()  # anything still not final, and closes the launchers' SSH connections
    shutil.rmtree(pset.directory, ignore_errors=True)


# ----------------------------------------------------------------------------- CUs
def _task_args(settings: Settings, db: str, chunk: str) -> list[str]:
    return [str(TASK), "--db", db, "--chunk", chunk, "--expect-db-bytes", str(settings.db_size),
            "--seconds", str(settings.task_seconds)]


def staged_description(env: Env, settings: Settings, i: int) -> dict[str, Any]:
    """CU ``i`` with the database and its chunk as ``input_data`` (staged by the agent, cached)."""
    return {
        "executable": sys.executable,
        "arguments": _task_args(settings, env.db_name, env.chunk_names[i]),
        "shell": False,
        "input_data": [env.db.id, env.chunks[i].id],
        "number_of_processes": 1,
        "name": f"blast-{i:05d}",
    }


def naive_description(env: Env, settings: Settings, i: int) -> dict[str, Any]:
    """CU ``i`` streaming both files from site-a's store itself (no input_data, nothing cached)."""
    store = env.pd[HOME].store
    sshd = env.sites.sshd_a
    args = _task_args(settings, store.path(f"{env.db.id}/{env.db_name}"),
                      store.path(f"{env.chunks[i].id}/{env.chunk_names[i]}"))
    args += ["--ssh", f"root@{sshd.host}", "--ssh-port", str(sshd.port), "--ssh-key", str(env.sites.user_key),
             "--known-hosts", str(env.sites.known_hosts)]
    return {"executable": sys.executable, "arguments": args, "shell": False, "number_of_processes": 1,
            "name": f"naive-{i:05d}"}


def random_binding(pset: PilotSet, n: int, seed: int) -> list[PilotCompute]:
    """A pilot per CU, uniformly at random among all pilots (every pilot matches the CUs' labels).

    The same seed gives naive and label-only the same binding, so caching is all that differs.
    """
    rng = random.Random(seed)
    return [rng.choice(pset.pilots) for _ in range(n)]


def run_bound(env: Env, pset: PilotSet, descs: Sequence[dict[str, Any]], settings: Settings) -> list[str]:
    """Submit each CU to its random pilot and wait for all; the CU ids."""
    targets = random_binding(pset, len(descs), settings.seed)
    cus = [pilot.submit_compute_unit(desc) for pilot, desc in zip(targets, descs)]
    ids = [cu.id for cu in cus]
    wait_for_states(env.session.coord, Kind.CU, ids, timeout=settings.timeout, tick=pset.pcs.refresh)
    return ids


def run_engine(env: Env, pset: PilotSet, settings: Settings, notes: list[str]) -> tuple[list[str], list[str]]:
    """The engine policy (see the module docstring); ``(CU ids, sites that got a new replica)``.

    Each release of CUs goes through a ComputeDataService of its own: one CDS's background binding
    thread and a new ``submit_compute_units`` on the same CDS race on its hold timers
    (``placement.decide`` then sees a negative wait and raises). Binding from several CDS instances at
    once is safe (every bind is a compare-and-set), and they all read the same pilots and queues.
    """
    coord = env.session.coord
    model = BandwidthModel.from_rates(wide_area=settings.wan_bytes_per_s)
    services: list[ComputeDataService] = []

    def release(descs: Sequence[dict[str, Any]]) -> list[str]:
        cds = ComputeDataService(session=env.session, affinity="required", bandwidth=model)
        cds.add_pilot_compute_service(pset.pcs)
        cds.add_pilot_data_service(env.pds)
        services.append(cds)
        return [cu.id for cu in cds.submit_compute_units(descs)]

    snap = take_snapshot(coord, settings.task_seconds, [env.db.id])
    db_ref = snap.data_ref(env.db.id, None)
    readers = Counter(c.site for c in snap.candidates)  # one pull per pilot: each caches the DB once
    stores = [StoreInfo(pd_id, site) for pd_id, site in sorted(snap.pd_sites.items())]
    plan = replication_plan(db_ref, readers, stores, model)
    notes.extend(plan.explain().splitlines())
    errors: list[str] = []

    def copy(pd_id: str) -> None:
        try:
            env.db.add_replica(pd_id)
        except Exception as exc:  # reported below; the CUs still run from site-a
            errors.append(f"replica on {pd_id} failed: {exc}")

    copiers = [threading.Thread(target=copy, args=(c.pd_id,), daemon=True) for c in plan.copies]
    for thread in copiers:
        thread.start()
    replica_dcs = {site[0] for site in db_ref.replica_sites if site}
    descs = [staged_description(env, settings, i) for i in range(settings.cus)]
    ids: list[str] = []
    try:
        if copiers and len(replica_dcs) == 1:
            # Until the copies land, only the sites holding the data take work, at the pace they run it.
            (home,) = replica_dcs
            slots = sum(c.total_slots for c in snap.candidates if c.site[:1] == (home,))
            while descs and any(t.is_alive() for t in copiers):
                cursor = coord.last_cursor()
                unfinished = sum(1 for r in coord.get_many(Kind.CU, ids)
                                 if r is not None and r.state not in FINAL_STATES)
                room = 2 * slots - unfinished  # one running and one queued per slot: no pilot idles
                if room > 0:
                    batch, descs = descs[:room], descs[room:]
                    ids += release([{**d, "affinity_datacenter_label": home} for d in batch])
                coord.events_after(cursor, limit=1, block=0.5)
            notes.append(f"{len(ids)} CUs released to {home} while the replica was copied")
        for thread in copiers:
            thread.join()
        notes.extend(errors)
        if descs:
            ids += release(descs)
        wait_for_states(coord, Kind.CU, ids, timeout=settings.timeout, tick=pset.pcs.refresh)
    finally:
        for cds in services:
            cds.close()
    new_sites = [c.site[0] for c in plan.copies if c.site]
    return ids, new_sites


def collect(
    env: Env, pset: PilotSet, ids: Sequence[str]
) -> tuple[int, int, dict[str, int], dict[str, int], str | None]:
    """``(done, failed, CUs per site, distinct pilots per site, first failure reason)``."""
    records = [r for r in env.session.coord.get_many(Kind.CU, list(ids)) if r is not None]
    ran = [r for r in records if r.state == "Done"]
    failed = [r for r in records if r.state != "Done"] + [None] * (len(ids) - len(records))
    by_site = Counter(pset.site_of.get(r.pilot or "", "?") for r in ran)
    pilots = Counter(pset.site_of.get(p, "?") for p in {r.pilot or "" for r in ran})
    first = None
    if failed:
        r = failed[0]
        first = "a CU record is missing" if r is None else (
            f"{r.id} {r.state}: {r.data.get('reason') or r.detail.get('reason')} (exit {r.data.get('exit_code')})")
    return len(ran), len(failed), {s: by_site.get(s, 0) for s in SITES}, {s: pilots.get(s, 0) for s in SITES}, first


def store_fetches(
    env: Env, pset: PilotSet, after: str | None
) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """Per site, the agents' recorded copies of the database from a store into a pilot cache since the
    cursor ``after``, the bytes their retried attempts moved again, and a note for each failed or
    retried copy."""
    coord = env.session.coord
    fetches: Counter[str] = Counter()
    reread: Counter[str] = Counter()
    notes: list[str] = []
    while True:
        events = coord.events_after(after, limit=1000)
        for ev in events:
            detail = ev.detail
            if (ev.entity != TRANSFER_EVENT or ev.id != env.db.id or detail.get("origin") != "store"
                    or not str(detail.get("destination", "")).startswith("pilot-cache:")):
                continue
            site = pset.site_of.get(ev.pilot or "", "?")
            if detail.get("ok", True):
                fetches[site] += 1
            else:
                notes.append(f"a copy of the database into {ev.pilot}'s cache ({site}) failed")
            if detail.get("retries"):
                again = int(detail.get("reread_bytes") or 0)
                reread[site] += again
                notes.append(f"the copy of the database into {ev.pilot}'s cache ({site}) was retried "
                             f"{detail['retries']} time(s): {fmt_bytes(again)} crossed again")
        if not events:
            return ({s: fetches.get(s, 0) for s in SITES}, {s: reread.get(s, 0) for s in SITES}, notes)
        after = events[-1].cursor


def run_policy(env: Env, settings: Settings, policy: str, log: Callable[[str], None]) -> Result:
    """Start fresh pilots, run one policy measuring makespan and link bytes, stop the pilots."""
    up = time.perf_counter()
    pset = start_pilots(env, settings, policy)
    up = time.perf_counter() - up
    notes: list[str] = []
    new_sites: list[str] = []
    try:
        link = env.sites.link
        cursor = env.session.coord.last_cursor()
        before = link.counters()
        started = time.perf_counter()
        if policy == "naive":
            ids = run_bound(env, pset, [naive_description(env, settings, i) for i in range(settings.cus)], settings)
        elif policy == "label-only":
            ids = run_bound(env, pset, [staged_description(env, settings, i) for i in range(settings.cus)], settings)
        else:
            ids, new_sites = run_engine(env, pset, settings, notes)
        makespan = time.perf_counter() - started
        after = link.counters()
        done, failed, by_site, pilots_used, first = collect(env, pset, ids)
        fetched, reread, fetch_notes = store_fetches(env, pset, cursor)
        notes += fetch_notes
    finally:
        down = time.perf_counter()
        stop_pilots(pset)
        down = time.perf_counter() - down
        if policy == "engine":
            for pd_id in env.db.list_pilot_data():  # leave the data where it started
                if pd_id != PD_IDS[HOME]:
                    env.db.remove_replica(pd_id)
    remote = sorted({s for s, n in by_site.items() if n and s != HOME} | {s for s in new_sites if s != HOME})
    result = Result(policy, makespan, after[0] - before[0], after[1] - before[1], done, failed, by_site, remote,
                    pilots_used, notes, first, fetched, reread)
    log(f"  {policy}: {makespan:.1f} s, {fmt_bytes(result.bytes_across)} across sites, "
        f"{done}/{settings.cus} done (pilots: {up:.1f} s to start, {down:.1f} s to stop)")
    return result


# ----------------------------------------------------------------------------- report
def placement_seconds(repeat: int = 3) -> float:
    """Best time of :func:`placement.assign` for benchmarks/placement_speed.py's 10,000 x 100 workload."""
    demands, candidates = placement_speed.workload(10_000, 100)
    model = BandwidthModel()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        assign(demands, candidates, model)
        best = min(best, time.perf_counter() - started)
    return best


def _verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def summarize(settings: Settings, results: dict[str, Result], placement_s: float) -> tuple[list[str], dict[str, Any]]:
    """The report lines and the same figures as a JSON-able dict."""
    d = settings.db_size
    lines = [
        "",
        f"{'policy':<11} {'makespan':>10} {'across sites':>13} {'a->b':>11} {'b->a':>10} {'x D':>7} "
        f"{'done':>9} {'site-a/site-b':>14}",
    ]
    for r in results.values():
        lines.append(
            f"{r.policy:<11} {r.makespan_s:>8.1f} s {fmt_bytes(r.bytes_across):>13} {fmt_bytes(r.bytes_a_to_b):>11} "
            f"{fmt_bytes(r.bytes_b_to_a):>10} {r.bytes_across / d:>7.2f} {r.done:>4}/{settings.cus:<4} "
            f"{r.by_site['site-a']:>6}/{r.by_site['site-b']:<6}"
        )
    figures: dict[str, Any] = {
        "settings": {**dataclasses.asdict(settings), "policies": list(settings.policies)},
        "policies": {
            name: {**dataclasses.asdict(r), "bytes_across": r.bytes_across, "bytes_over_db": r.bytes_across / d}
            for name, r in results.items()
        },
        "ratios": {},
        "targets": {},
        "placement_seconds": placement_s,
    }
    for r in results.values():
        if any(r.store_fetches.values()):
            counts = ", ".join(f"{site} {n}" for site, n in r.store_fetches.items())
            lines.append(f"{r.policy}: database copies from a store into pilot caches: {counts} "
                         f"(pilots that ran CUs: {', '.join(f'{s} {n}' for s, n in r.pilots_used.items())})")
        for note in r.notes:
            lines.append(f"{r.policy}: {note}")
        if r.first_failure:
            lines.append(f"{r.policy}: {r.failed} CU(s) not done, e.g. {r.first_failure}")
    lines.append("")
    engine = results.get("engine")
    if engine is not None:
        allowance = TARGET_BYTES * d * max(1, len(engine.remote_sites))
        ok = engine.bytes_across <= allowance
        figures["targets"]["engine_bytes"] = {"allowance": allowance, "ok": ok}
        sites = ", ".join(engine.remote_sites) or "none"
        lines.append(f"bytes: engine moved {engine.bytes_across / d:.3f} x D across sites; remote sites used: {sites} "
                     f"(target <= {TARGET_BYTES} x D per site used: {_verdict(ok)})")
        for name, target in (("naive", TARGET_NAIVE), ("label-only", TARGET_LABEL)):
            other = results.get(name)
            if other is None:
                continue
            ratio = other.makespan_s / engine.makespan_s if engine.makespan_s > 0 else float("inf")
            byte_ratio = other.bytes_across / engine.bytes_across if engine.bytes_across else float("inf")
            figures["ratios"][name] = {"makespan": ratio, "bytes": byte_ratio}
            figures["targets"][f"makespan_vs_{name}"] = {"target": target, "ok": ratio >= target}
            lines.append(f"ratio {name}/engine: makespan {ratio:.2f}x (target >= {target}x: "
                         f"{_verdict(ratio >= target)}), bytes across sites {byte_ratio:.2f}x")
    ok = placement_s < TARGET_PLACEMENT_S
    figures["targets"]["placement"] = {"target": TARGET_PLACEMENT_S, "ok": ok}
    lines.append(f"placement: assign 10000 CUs x 100 pilots in {placement_s:.3f} s "
                 f"(target < {TARGET_PLACEMENT_S:.0f} s: {_verdict(ok)})")
    return lines, figures


# ----------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    """Command-line options -> :class:`Settings` (and the rest of the namespace)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db-size", default="1GB", help="database size D (default 1GB; units B, KB, MB, GB, MiB ...)")
    p.add_argument("--cus", type=int, default=200, help="number of CUs N (default 200)")
    p.add_argument("--chunk-size", default="64KiB", help="query chunk per CU (default 64KiB)")
    p.add_argument("--wan-rate", default="200mbit", help="rate of the link between the sites (tc units; 200mbit)")
    p.add_argument("--pilots-per-site", type=int, default=3, help="pilots at each site (default 3)")
    p.add_argument("--slots", type=int, default=1, help="slots per pilot (default 1)")
    p.add_argument("--task-seconds", type=float, default=1.0, help="modelled search time per CU (default 1.0)")
    p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated subset of " + ", ".join(POLICIES))
    p.add_argument("--seed", type=int, default=7, help="seed of the random bindings (default 7)")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds a policy may take (default 7200)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, stores)")
    args = p.parse_args(argv)
    policies = tuple(x.strip() for x in args.policies.split(",") if x.strip())
    unknown = [x for x in policies if x not in POLICIES]
    if unknown or not policies:
        p.error(f"--policies: unknown {unknown}; choose from {', '.join(POLICIES)}")
    try:
        settings = Settings(
            db_size=parse_size(args.db_size), cus=args.cus, chunk_size=parse_size(args.chunk_size),
            wan_bits=parse_rate(args.wan_rate), pilots_per_site=args.pilots_per_site, slots=args.slots,
            task_seconds=args.task_seconds, seed=args.seed, timeout=args.timeout,
            policies=tuple(x for x in POLICIES if x in policies),
        )
    except ValueError as exc:
        p.error(str(exc))
    if settings.cus < 1 or settings.pilots_per_site < 1 or settings.slots < 1 or settings.db_size < 1:
        p.error("--cus, --pilots-per-site, --slots and --db-size must be positive")
    return settings, args


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 0 when every CU of every policy finished, 1 if not, 2 if it cannot run."""
    settings, args = parse_args(argv)
    try:
        check_prerequisites()
    except SetupError as exc:
        print(f"locality: cannot run: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_on_sigterm)

    def log(text: str) -> None:
        print(text, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="pd-locality-"))
    os.environ["PDATA_HOME"] = str(workdir / "pdata-home")
    results: dict[str, Result] = {}
    crashed: dict[str, str] = {}
    sites: TwoSites | None = None
    env: Env | None = None
    try:
        sites = TwoSites.start(workdir / "sites", settings.wan_bits)
        link = sites.link
        log(f"locality: D={fmt_bytes(settings.db_size)}, N={settings.cus} CUs, WAN {settings.wan_bits / 1e6:g} Mbit/s "
            f"({fmt_bytes(settings.wan_bytes_per_s)}/s), {settings.pilots_per_site} pilot(s) x {settings.slots} "
            f"slot(s) per site, {settings.task_seconds:g} s search per CU")
        log(f"link: {link.veth_a} {link.ip_a} (site-a, this namespace) <-> {link.veth_b} {link.ip_b} "
            f"(site-b, netns {link.netns}), tbf {settings.wan_bits}bit each way")
        env = prepare(sites, settings, workdir, log)
        for policy in settings.policies:
            try:
                results[policy] = run_policy(env, settings, policy, log)
            except (SetupError, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # one policy's failure must not hide the others' figures
                traceback.print_exc()
                crashed[policy] = f"{type(exc).__name__}: {exc}"
                log(f"  {policy}: FAILED: {crashed[policy]}")
    except SetupError as exc:
        print(f"locality: cannot run: {exc}", file=sys.stderr)
        return 2
    finally:
        if env is not None:
            env.session.close()
        if sites is not None:
            sites.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")
    lines, figures = summarize(settings, results, placement_seconds())
    lines += [f"{policy}: FAILED, no figures: {why}" for policy, why in crashed.items()]
    figures["crashed"] = crashed
    for line in lines:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, sort_keys=True))
    return 0 if not crashed and all(r.failed == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
