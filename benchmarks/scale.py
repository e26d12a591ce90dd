"""Scale: a million queued ComputeUnits submitted in one call, then a real pilot draining part of them.

Per backend (a redis-server started here on loopback, and the embedded SQLite file):

* **submit**: a fresh client process builds N ``/bin/true`` descriptions (each its own name and
  argument, as a parameter sweep has) and hands them to ONE
  ``ComputeDataService.submit_compute_units`` call (no pilot yet: every CU is recorded, bound to the
  shared queue and left queued). Printed: CU/s over the call, the client's peak RSS (``ru_maxrss``,
  the N description dicts the caller built included) and, on Redis, ``used_memory`` after the call.
  Targets: >= 10,000 CU/s; client peak RSS + Redis ``used_memory`` < 4 GB.
* **drain**: a fork pilot (``python -m agent``, ``--slots`` slots, sandboxes on ``/dev/shm``) takes
  ``--drain`` CUs off the shared queue; the agent's RSS (``/proc/<pid>/status`` VmRSS) is sampled
  as it goes and printed at 10%, 50% and 90% of the drained count, with the least-squares slope over
  the part after the first 10% (start-up, imports and pools warming). Target: flat (slope ~0).

The drain of a million ``/bin/true`` on 2 cores would take 15-20 minutes at the agent's ~1,000 CU/s,
so by default a part of them is drained (``--drain 50000``): a growth per CU shows in the slope.

``--history`` also drains the submission's events (two per CU) into a SQLite history in a fresh
process, as ``pdata report`` and the dashboard do, and prints events/s and that process's peak RSS.

    python benchmarks/scale.py [--n 1000000] [--drain 50000] [--backend redis,sqlite] [--slots 4] [--history]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pilotdata import ComputeDataService, PilotComputeService
from pilotdata.services import FailurePolicy
from pilotdata.session import Session
from pilotdata.states import Kind
from tests import servers

SUBMIT_TARGET = 10_000.0
"""CU/s over the single submit call."""
MEMORY_TARGET = 4 * 10**9
"""Bytes: the client's peak RSS plus Redis's used_memory."""
NAMESPACE = "scale"


def rss(pid: int | str = "self") -> int:
    """Resident set size of ``pid`` in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def submit_phase(url: str, n: int) -> dict[str, float]:
    """In a fresh process: N descriptions, one submit call; the figures as a dict (printed as JSON)."""
    session = Session(url, namespace=NAMESPACE)
    session.coord.ping()
    before = rss()
    descs = [{"executable": "/bin/true", "arguments": [str(i)], "name": f"task-{i}", "shell": False}
             for i in range(n)]
    built = rss()
    cds = ComputeDataService(session=session)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    cus = cds.submit_compute_units(descs)
    seconds = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    after = rss()
    assert len(cus) == n
    cds.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    session.close()
    return {"seconds": seconds, "rate": n / seconds, "cpu": cpu, "peak": peak, "before": before,
            "descs": built - before, "after": after}


def history_phase(url: str, history_url: str) -> dict[str, float]:
    """In a fresh process: drain the namespace's events into a SQL history (the writer of ``pdata report``
    and the dashboard); events, seconds and the writer's peak RSS."""
    from pilotdata.coordination import connect
    from pilotdata.history import History, HistoryWriter

    coord = connect(url, NAMESPACE)
    history = History(history_url)
    start = time.perf_counter()
    events = HistoryWriter(coord, history).drain()
    seconds = time.perf_counter() - start
    history.close()
    coord.close()
    return {"events": events, "seconds": seconds, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_memory(url: str) -> int:
    """Redis's ``used_memory`` in bytes."""
    import redis

    client: Any = redis.Redis.from_url(url)  # redis-py types sync replies as "Awaitable[T] | T"
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def drain_phase(url: str, n: int, drain: int, slots: int, workdir: Path) -> dict[str, object]:
    """Start a fork pilot, let it take ``drain`` CUs off the shared queue, sample its agent's RSS."""
    session = Session(url, namespace=NAMESPACE)
    pcs = PilotComputeService(session=session, policy=FailurePolicy())
    samples: list[tuple[int, int]] = []
    try:
        pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": slots,
                                  "working_directory": str(workdir)})
        pilot.wait(timeout=120, state="Running")
        record = session.coord.get(Kind.PILOT, pilot.id)
        pid = record.data.get("pid") or record.detail.get("pid")
        if not pid:
            raise SystemExit(f"pilot {pilot.id} recorded no pid: {record.data} {record.detail}")
        start = time.perf_counter()
        taken = 0
        while taken < drain:
            left = session.coord.queue_lengths([""])[""]
            taken = n - left
            samples.append((taken, rss(pid)))
            if time.perf_counter() - start > 1800:
                raise SystemExit(f"drain timed out after 30 min at {taken} CUs")
            time.sleep(0.5)
        seconds = time.perf_counter() - start
    finally:
        pcs.cancel()
        session.close()
    return {"samples": samples, "seconds": seconds, "taken": taken}


def at(samples: list[tuple[int, int]], count: float) -> int:
    """The RSS of the first sample at or past ``count`` CUs taken."""
    return next((r for c, r in samples if c >= count), samples[-1][1])


def slope(samples: list[tuple[int, int]], after: float) -> float:
    """Least-squares bytes per CU over the samples past ``after`` CUs taken."""
    pts = [(c, r) for c, r in samples if c >= after and r]
    if len(pts) < 3:
        return float("nan")
    mx = sum(c for c, _ in pts) / len(pts)
    my = sum(r for _, r in pts) / len(pts)
    var = sum((c - mx) ** 2 for c, _ in pts)
    return sum((c - mx) * (r - my) for c, r in pts) / var if var else float("nan")


def mb(value: float) -> str:
    return f"{value / 2**20:,.0f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="CUs submitted in the one call")
    parser.add_argument("--drain", type=int, default=50_000, help="CUs a pilot takes off the queue (0: none)")
    parser.add_argument("--backend", default="redis,sqlite", help="comma-separated: redis, sqlite")
    parser.add_argument("--slots", type=int, default=4, help="the draining pilot's slots")
    parser.add_argument("--history", action="store_true",
                        help="also drain the submission's events into a SQLite history and time it")
    parser.add_argument("--submit-only", metavar="URL", help=argparse.SUPPRESS)  # the client process
    parser.add_argument("--history-only", nargs=2, metavar=("URL", "HISTORY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.submit_only:
        print(json.dumps(submit_phase(args.submit_only, args.n)))
        return 0
    if args.history_only:
        print(json.dumps(history_phase(*args.history_only)))
        return 0
    if args.drain > args.n:
        parser.error(f"--drain {args.drain} is more than --n {args.n}")
    backends = [b for b in args.backend.split(",") if b]
    unknown = sorted(set(backends) - {"redis", "sqlite"})
    if unknown:
        parser.error(f"--backend: unknown {unknown}; known: redis, sqlite")
    shm = Path("/dev/shm")
    scratch = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    rows: list[str] = []
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="pd-scale-") as tmp, \
                tempfile.TemporaryDirectory(prefix="pd-scale-pilot-", dir=scratch) as pilots:
            redis_server = None
            if backend == "redis":
                redis_server = servers.start_redis(Path(tmp) / "redis")
                url = redis_server.url
            else:
                url = f"sqlite:///{tmp}/coordination.sqlite"
            try:
                server_cpu = cpu_seconds(redis_server.pid) if redis_server is not None else 0.0
                out = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--submit-only", url],
                                     check=True, capture_output=True, text=True)
                sub = json.loads(out.stdout.strip().splitlines()[-1])
                if redis_server is not None:
                    server_cpu = cpu_seconds(redis_server.pid) - server_cpu
                server_mem = redis_memory(url) if redis_server is not None else 0
                if backend == "sqlite":
                    server_mem = 0
                    size = sum(p.stat().st_size for p in Path(tmp).glob("coordination.sqlite*"))
                    where = f"SQLite file {mb(size)}"
                else:
                    where = f"Redis used_memory {mb(server_mem)}"
                total = sub["peak"] + server_mem
                ok_rate = "OK" if sub["rate"] >= SUBMIT_TARGET else "MISSED"
                ok_mem = "OK" if total < MEMORY_TARGET else "MISSED"
                print(f"\n{backend}: {args.n:,} CUs in one submit call: {sub['seconds']:.1f} s, "
                      f"{sub['rate']:,.0f} CU/s (target >= {SUBMIT_TARGET:,.0f}/s {ok_rate})", flush=True)
                cost = sub["cpu"] + server_cpu
                print(f"  CPU per CU: client {sub['cpu'] / args.n * 1e6:.0f} us"
                      + (f", redis-server {server_cpu / args.n * 1e6:.0f} us" if redis_server is not None else "")
                      + f" (one core each: the call cannot beat {args.n / max(sub['cpu'], server_cpu):,.0f} CU/s; "
                      f"{args.n / cost:,.0f} CU/s per core)", flush=True)
                print(f"  client peak RSS {mb(sub['peak'])} (of which the {args.n:,} description dicts "
                      f"{mb(sub['descs'])}; RSS after the call {mb(sub['after'])}); {where}; "
                      f"total {mb(total)} (target < {MEMORY_TARGET / 1e9:.0f} GB {ok_mem})", flush=True)
                if args.history:
                    out = subprocess.run([sys.executable, __file__, "--history-only", url,
                                          f"sqlite:///{tmp}/history.sqlite"],
                                         check=True, capture_output=True, text=True)
                    hist = json.loads(out.stdout.strip().splitlines()[-1])
                    print(f"  history writer: {hist['events']:,.0f} events into SQLite in {hist['seconds']:.1f} s "
                          f"({hist['events'] / hist['seconds']:,.0f} events/s), its peak RSS {mb(hist['peak'])}",
                          flush=True)
                drain_note = "not drained"
                if args.drain:
                    d = drain_phase(url, args.n, args.drain, args.slots, Path(pilots) / backend)
                    samples = d["samples"]
                    assert isinstance(samples, list)
                    taken = int(d["taken"])  # type: ignore[call-overload]
                    points = [at(samples, args.drain * q) for q in (0.1, 0.5, 0.9)]
                    per_cu = slope(samples, args.drain * 0.1)
                    growth = per_cu * 10_000
                    flat = "OK" if abs(growth) < 1 * 2**20 else "GROWS"
                    print(f"  pilot ({args.slots} slots) took {taken:,} CUs in {d['seconds']:.0f} s "
                          f"({taken / float(d['seconds']):,.0f} CU/s); agent RSS at 10% / 50% / 90%: "  # type: ignore[arg-type]
                          f"{' / '.join(mb(p) for p in points)}; slope {growth / 2**10:+,.0f} KB per 10,000 "
                          f"CUs ({flat}: flat = under 1 MB per 10,000)", flush=True)
                    drain_note = (f"{' / '.join(mb(p) for p in points)}, {growth / 2**10:+,.0f} KB/10k {flat}")
                rows.append(f"{backend:<8}{args.n:>11,}{sub['rate']:>10,.0f}{mb(sub['peak']):>12}"
                            f"{(mb(server_mem) if backend == 'redis' else '-'):>12}{mb(total):>12}  {drain_note}")
            finally:
                if redis_server is not None:
                    redis_server.stop()
    print(f"\n{'backend':<8}{'CUs':>11}{'CU/s':>10}{'client':>12}{'redis':>12}{'total':>12}  "
          f"agent RSS at 10/50/90% of {args.drain:,} drained, slope")
    print(f"{'target':<8}{'':>11}{'>=10,000':>10}{'':>12}{'':>12}{'< 4 GB':>12}  flat")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
