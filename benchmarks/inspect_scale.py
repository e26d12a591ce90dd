"""Benchmark: the query layer (``pilotdata.inspect``) at 100,000 ComputeUnits.

Builds one namespace of N CUs (default 100,000) in one run on real coordination (the embedded SQLite
file, or Redis with ``--backend redis``), moved through their states as agents would (bound to 8
pilots at 2 sites or to the shared queue, staged, run, most Done, 1 in 50 Failed with one of five
reasons, some still Pending or Running), with one transfer record per CU input. Then drains the
events into a SQLite history (timed: the index is folded during the drain) and times every query a
refreshing view makes, each repeated ``--repeat`` times (p50 / p95 in milliseconds):

* ``list_cus`` first page, a deep page, filtered by state / site / name glob; ``cu`` (one CU's details);
  ``counts`` (by state per pilot and queue, with the live in-progress lists); ``run`` (one run's
  aggregates); ``runs``; ``failures``; ``throughput``; ``bytes``; ``pilots``; ``refresh`` with nothing new.

The peer is what ``pdata status`` did before the index: read every CU record from coordination and
count in Python (``walk``). The ratio column is walk time / query time.

Run: ``python benchmarks/inspect_scale.py [--n 100000] [--backend sqlite|redis] [--repeat 20]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: tests.servers

from pilotdata.coordination import Coordination, TransitionRequest, connect
from pilotdata.history import History
from pilotdata.inspect import CUFilter, Inspector
from pilotdata.records import TRANSFER_EVENT, ByteCategory, transfer_record
from pilotdata.runs import Origin, start_run
from pilotdata.states import ComputeUnitState as S
from pilotdata.states import Kind, PilotState

PILOTS = 8
REASONS = ["exit code 1", "exit code 2", "timeout", "input staging failed: no such file", "killed by signal SIGKILL"]
BATCH = 1000


def build(coord: Coordination, n: int) -> tuple[str, list[str], list[str]]:
    """Record N CUs of one run and move them through their lives; return the run id, CU ids, pilot ids."""
    run = start_run(coord, None, origin=Origin.CDS).id
    pilots = [f"pilot-bench{i}" for i in range(PILOTS)]
    coord.create_many(Kind.PILOT, [(p, {"labels": {"datacenter": f"site-{'ab'[i % 2]}", "machine": f"node-{i}"},
                                        "slots": 16, "description": {"service_url": "fork://localhost"}})
                                   for i, p in enumerate(pilots)])
    for p in pilots:
        coord.transition(Kind.PILOT, p, PilotState.PENDING)
        coord.transition(Kind.PILOT, p, PilotState.RUNNING, pilot=p)
        coord.heartbeat(p, 3600)
    ids = [f"cu-{uuid.uuid4().hex[:16]}" for _ in range(n)]
    for start in range(0, n, BATCH):
        chunk = ids[start:start + BATCH]
        coord.create_many(Kind.CU, [(c, {"description": {"executable": "/bin/true", "name": f"task-{start + j}"},
                                         "run": run}) for j, c in enumerate(chunk)])
        binds = [TransitionRequest(c, S.PENDING.value, S.NEW.value,
                                   detail={"pilot": pilots[(start + j) % PILOTS] if (start + j) % 3 else None})
                 for j, c in enumerate(chunk)]
        coord.transition_many(Kind.CU, binds)
        finished = chunk[: int(len(chunk) * 0.9)]  # 10% stay Pending (the tail of the run)
        runner = {c: pilots[(start + j) % PILOTS] for j, c in enumerate(chunk)}
        for to in (S.STAGING_INPUT, S.RUNNING):
            coord.transition_many(Kind.CU, [TransitionRequest(c, to.value, pilot=runner[c]) for c in finished])
        ending = []
        for j, c in enumerate(finished[:-20]):  # 20 per chunk keep running
            k = start + j
            if k % 50 == 7:
                ending.append(TransitionRequest(c, S.FAILED.value, pilot=runner[c],
                                                detail={"reason": REASONS[k % len(REASONS)], "exit_code": 1}))
            else:
                ending.append(TransitionRequest(c, S.DONE.value, pilot=runner[c], detail={"exit_code": 0}))
        coord.transition_many(Kind.CU, ending)
        for j, c in enumerate(finished[:200]):  # transfer records for some of each chunk's inputs
            category = ByteCategory.STAGED if j < 8 else ByteCategory.CACHE_HIT
            coord.record_event(TRANSFER_EVENT, "du-db", transfer_record(
                "du-db", 10_000_000, 0.5 if j < 8 else 0.0, category=category, source="file:///pd/a",
                destination=f"pilot-cache:{runner[c]}", cu=c), pilot=runner[c])
    return run, ids, pilots


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Wall times (ms) of ``repeat`` calls."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def walk(coord: Coordination) -> Counter[tuple[str, str]]:
    """The peer: every CU record read from coordination and counted by (pilot, state) in Python."""
    out: Counter[tuple[str, str]] = Counter()
    ids = coord.list_ids(Kind.CU)
    for start in range(0, len(ids), 5000):
        for rec in coord.get_many(Kind.CU, ids[start:start + 5000]):
            if rec is not None:
                out[(rec.pilot or "-", rec.state)] += 1
    return out


@contextmanager
def coordination_url(backend: str, directory: str) -> Iterator[str]:
    """The URL of a fresh coordination backend in ``directory``: a redis-server started on loopback (stopped
    on exit) or an SQLite file."""
    if backend != "redis":
        yield f"sqlite:///{directory}/coordination.sqlite"
        return
    from tests import servers

    server = servers.start_redis(Path(directory) / "redis")
    try:
        yield server.url
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """Build, drain, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pd-inspect-") as tmp, coordination_url(args.backend, tmp) as url:
        coord = connect(url, "bench")
        t0 = time.perf_counter()
        run, ids, pilots = build(coord, args.n)
        built = time.perf_counter() - t0
        history = History(f"sqlite:///{tmp}/history.sqlite")
        ins = Inspector(coord, history)
        t0 = time.perf_counter()
        events = ins.refresh()
        drained = time.perf_counter() - t0
        print(f"{args.n:,} CUs on {args.backend}: built in {built:.1f} s; drained {events:,} events into the "
              f"history and its index in {drained:.1f} s ({events / drained:,.0f} events/s)")
        one = ids[args.n // 2]
        middle = ins.list_cus(CUFilter(run=run), offset=args.n // 2 - 1, limit=1).cursor
        cases: list[tuple[str, Callable[[], Any]]] = [
            ("refresh (nothing new)", ins.refresh),
            ("list_cus page 1 (100, run)", lambda: ins.list_cus(CUFilter(run=run), limit=100)),
            ("list_cus page at N/2 (offset)", lambda: ins.list_cus(CUFilter(run=run), offset=args.n // 2,
                                                                    limit=100)),
            ("list_cus page at N/2 (cursor)", lambda: ins.list_cus(CUFilter(run=run), after=middle, limit=100)),
            ("list_cus newest first", lambda: ins.list_cus(CUFilter(run=run), limit=100, newest_first=True)),
            ("list_cus state=Failed", lambda: ins.list_cus(CUFilter(run=run, states=(S.FAILED.value,)))),
            ("list_cus site=site-a", lambda: ins.list_cus(CUFilter(run=run, site="site-a"))),
            ("list_cus name=task-99*", lambda: ins.list_cus(CUFilter(run=run, name="task-99*"))),
            ("cu (one CU's details)", lambda: ins.cu(one)),
            ("counts (run)", lambda: ins.counts(run)),
            ("counts (all runs)", lambda: ins.counts()),
            ("run (aggregates)", lambda: ins.run(run)),
            ("runs", lambda: ins.runs()),
            ("failures", lambda: ins.failures(run)),
            ("throughput (60 s buckets)", lambda: ins.throughput(run)),
            ("bytes by site", lambda: ins.bytes_by("site", run)),
            ("pilots", lambda: ins.pilots()),
        ]
        peer = statistics.median(timed(lambda: walk(coord), max(3, args.repeat // 5)))
        counts = ins.counts(run)
        assert sum(counts.total.values()) == args.n, counts.total
        print(f"peer (walk every CU record, count in Python): {peer:,.0f} ms\n")
        print(f"{'query':<32}{'p50 ms':>10}{'p95 ms':>10}{'walk / p50':>12}")
        for name, fn in cases:
            times = timed(fn, args.repeat)
            p50 = pct(times, 0.5)
            print(f"{name:<32}{p50:>10.1f}{pct(times, 0.95):>10.1f}{peer / p50:>11.0f}x")
        ins.close()
        history.close()
        coord.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
