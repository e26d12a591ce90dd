"""Benchmark (issue "pilots as HPC centres run them"): a BLAST-like workload on a two-node SLURM pilot.

A real two-node SLURM (``tests/slurm2_harness.py``: slurmctld on a bridge, a slurmd per network
namespace, 2 cores per node) runs one pilot of 2 nodes x 2 cores. The workload: one shared database
DataUnit of D bytes (the example's synthetic FASTA, ``examples/blast/data.py``) and N ComputeUnits,
each reading the whole database plus its own query chunk (a subset of the queries DataUnit), then
searching for ``--task-seconds`` (modelled as wall time, as in ``benchmarks/locality.py``: the two
nodes share this machine's two cores, so CPU time would measure the machine, not the placement).

Two agents run in one go, each as a fresh batch job (cold caches), with the same CUs:

node-aware
    today's agent: CUs placed on both nodes, one node process per other node, a cache per node
    (database from the store once, then node to node).
first-node
    the agent with ``--node-launch off``: every CU on the node the batch script runs on, with the
    pilot's 4 slots (what agents did before they were node-aware: a 4-core pilot over 2 nodes starts
    4 processes on node1 and leaves node2 idle).

Printed per agent: CUs per node; core utilisation while work was queued (the mean, over the time from
the first CU start to the last, of the busy cores of the allocation, a node counting at most its own
cores busy, divided by the allocation's 4 cores); makespan (first submit to last Done); database
bytes from the store and from peer nodes (the agent's transfer records). Then the targets: at least
90 % of the allocation's cores busy while work is queued, database bytes from the store at most
1.05 x D per pilot. Needs root (network namespaces) and slurm-wlm.

    python benchmarks/multinode.py [--db-size 32MB] [--cus 24] [--task-seconds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from examples.blast.data import parse_size, prepare, split_queries  # noqa: E402
from pilotdata.coordination import Coordination  # noqa: E402
from pilotdata.data import ReplicaManager  # noqa: E402
from pilotdata.descriptions import DataUnitDescription  # noqa: E402
from pilotdata.services.pilot_data import PilotDataService  # noqa: E402
from pilotdata.session import Session  # noqa: E402
from pilotdata.states import Kind, is_final  # noqa: E402

AGENTS = ("node-aware", "first-node")
CORES = 4


def _events(coord: Coordination) -> list[Any]:
    out: list[Any] = []
    cursor = None
    while batch := coord.events_after(cursor, limit=1000):
        out.extend(batch)
        cursor = batch[-1].cursor
    return out


def run_agent(name: str, session: Session, cluster: Any, work: Path, db_du: str, q_du: str, chunks: list[str],
              db_bytes: int, settings: argparse.Namespace) -> dict[str, Any]:
    """One batch job running the agent (node-aware or not) over the N CUs; the figures."""
    coord = session.coord
    pilot = f"pilot-{name}-{uuid.uuid4().hex[:6]}"
    coord.create(Kind.PILOT, pilot, {"description": {"number_of_processes": CORES, "processes_per_node": 2}})
    coord.transition(Kind.PILOT, pilot, "Pending")
    task = str(REPO / "benchmarks" / "_locality_task.py")
    cus = [f"{pilot}-cu{i:03d}" for i in range(settings.cus)]
    for i, cu in enumerate(cus):
        chunk = chunks[i % len(chunks)]
        coord.create(Kind.CU, cu, {"description": {
            "executable": sys.executable,
            "arguments": [task, "--db", "db.fasta", "--chunk", chunk, "--expect-db-bytes", str(db_bytes),
                          "--seconds", str(settings.task_seconds)],
            "input_data": [db_du, {q_du: [chunk]}],
        }})
        coord.transition(Kind.CU, cu, "Pending")
    submitted = time.time()
    coord.enqueue(cus, pilot)
    argv = [sys.executable, "-m", "agent", "--pilot", pilot, "--namespace", session.namespace, "--slots", str(CORES),
            "--workdir", str(work / name)]
    if name == "first-node":
        argv += ["--node-launch", "off"]
    env = {**os.environ, **cluster.env(), "PDATA_URL": session.url, "PYTHONPATH": str(REPO)}
    job = subprocess.run(["sbatch", "--parsable", "-N2", "--ntasks-per-node=2", "-o", str(work / f"{name}.log"),
                          "--chdir", str(REPO), "--wrap", "exec " + " ".join(argv)],
                         env=env, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    deadline = time.monotonic() + settings.timeout
    while True:
        records = coord.get_many(Kind.CU, cus)
        if all(r is not None and is_final(r.state) for r in records):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: CUs not done after {settings.timeout} s; see {work / (name + '.log')}")
        time.sleep(0.5)
    coord.transition(Kind.PILOT, pilot, "Canceled", detail={"reason": "benchmark over"})
    while job in cluster.run("squeue", "-h", "-o", "%i").stdout.split():
        time.sleep(0.5)
    done = [r for r in records if r is not None]
    states = Counter(r.state for r in done)
    starts = sorted((r.times["Running"], r.times["Done"], r.data.get("node", "?")) for r in done if "Done" in r.times)
    per_node = Counter(node for _, _, node in starts)
    first, last_start = starts[0][0], max(s for s, _, _ in starts)
    end = max(e for _, e, _ in starts)
    window_end = last_start if last_start > first else end
    # busy cores of the allocation, sampled every 10 ms from the first start to the last (work queued)
    step, busy, samples = 0.01, 0.0, 0
    t = first
    while t <= window_end:
        running = Counter(node for s, e, node in starts if s <= t < e)
        busy += sum(min(count, 2) for count in running.values())
        samples += 1
        t += step
    transfers = [e.detail for e in _events(coord) if e.entity == "transfer" and e.pilot == pilot and e.id == db_du]
    store = sum(d.get("bytes", 0) for d in transfers if d.get("origin", "store") == "store")
    peer = sum(d.get("bytes", 0) for d in transfers if d.get("origin") == "peer")
    return {
        "agent": name, "states": dict(states), "cus_per_node": dict(sorted(per_node.items())),
        "utilisation": busy / max(1, samples) / CORES, "makespan_s": end - submitted,
        "db_bytes_from_store": store, "db_bytes_from_peers": peer,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db-size", default="32MB", help="database size D (default 32MB)")
    p.add_argument("--cus", type=int, default=24, help="number of CUs N (default 24)")
    p.add_argument("--task-seconds", type=float, default=2.0, help="modelled search time per CU (default 2)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds an agent may take (default 600)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    settings = p.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        print("needs root (network namespaces) and slurm-wlm (slurmctld, slurmd)", file=sys.stderr)
        return 2
    from tests.slurm2_harness import start_slurm2

    work = Path(tempfile.mkdtemp(prefix="pdata-multinode-"))
    os.chmod(work, 0o755)
    cluster = start_slurm2(work / "slurm")
    try:
        d = parse_size(settings.db_size)
        data = prepare(work / "data", d, queries=max(40, settings.cus * 2))
        chunk_files = split_queries(data.queries_fasta, settings.cus, work / "chunks")
        session = Session(f"sqlite:///{work / 'coord.sqlite'}", namespace="bench")
        pd = PilotDataService(session=session).create_pilot({"service_url": f"file://{work / 'store'}"}).get_url()
        units = ReplicaManager(session.coord)
        db_file = data.fasta_dir / "db.fasta"
        db_du = units.register(DataUnitDescription.from_dict({"file_urls": [str(db_file)]}), du_id="du-db")
        units.upload(db_du, pd)
        q_du = units.register(DataUnitDescription.from_dict({"file_urls": [str(f) for f in chunk_files]}),
                              du_id="du-queries")
        units.upload(q_du, pd)
        db_bytes = db_file.stat().st_size
        chunks = [f.name for f in chunk_files]
        results = [run_agent(name, session, cluster, work, db_du, q_du, chunks, db_bytes, settings)
                   for name in AGENTS]
    finally:
        cluster.stop()
        if not settings.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"two-node SLURM (2 x 2 cores), D = {db_bytes / 1e6:.1f} MB, N = {settings.cus} CUs of "
          f"{settings.task_seconds:g} s")
    print(f"{'agent':<12} {'CUs per node':<24} {'cores busy':>10} {'makespan':>9} {'DB from store':>14} "
          f"{'DB from peers':>14}")
    for r in results:
        print(f"{r['agent']:<12} {json.dumps(r['cus_per_node']):<24} {r['utilisation']:>9.0%} "
              f"{r['makespan_s']:>8.1f}s {r['db_bytes_from_store'] / db_bytes:>13.2f}D "
              f"{r['db_bytes_from_peers'] / db_bytes:>13.2f}D")
    aware, first = results
    print(f"ratio node-aware / first-node: cores busy {aware['utilisation'] / max(first['utilisation'], 1e-9):.2f}x, "
          f"makespan {aware['makespan_s'] / first['makespan_s']:.2f}x")
    ok_util = aware["utilisation"] >= 0.90
    ok_bytes = aware["db_bytes_from_store"] <= 1.05 * db_bytes
    print(f"target cores busy >= 90 %: {aware['utilisation']:.0%} {'met' if ok_util else 'MISSED'}")
    print(f"target DB from store <= 1.05 D: {aware['db_bytes_from_store'] / db_bytes:.2f} D "
          f"{'met' if ok_bytes else 'MISSED'}")
    if settings.json:
        Path(settings.json).write_text(json.dumps({"db_bytes": db_bytes, "cus": settings.cus,
                                                   "task_seconds": settings.task_seconds, "results": results},
                                                  indent=2))
    return 0 if ok_util and ok_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
