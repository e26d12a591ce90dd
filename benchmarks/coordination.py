"""Benchmark: coordination throughput of the Redis and embedded SQLite backends.

For each backend: ``create_many`` of N CUs, batched ``transition_many`` New -> Pending -> Running ->
Done (3 N transitions), ``enqueue`` of N ids, then claims until the queue is empty (one client with
``limit=1``, one with ``limit=16``, and 4 processes with ``limit=1``). Prints a table with the targets:

* batched CU transitions: >= 20,000/s on Redis, >= 3,000/s on SQLite.

Redis: starts its own ``redis-server`` on loopback (``tests/servers.py``) unless ``--redis-url`` is
given. SQLite: a file in a temporary directory. Exits 1 if a target is missed.
Run: ``python benchmarks/coordination.py [--n 10000] [--batch 1000] [--backends redis,sqlite]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: tests.servers

from pilotdata.coordination import Coordination, TransitionRequest, connect

TARGETS = {("redis", "transitions"): 20_000.0, ("sqlite", "transitions"): 3_000.0}
CLAIM_PROCS = 4


def _claim_worker(url: str, namespace: str, pilot: str, barrier: Any, counts: Any, slot: int) -> None:
    """Claim one id at a time until the shared queue is empty (runs in a spawned process)."""
    with connect(url, namespace) as coord:
        coord.ping()
        barrier.wait(60)
        n = 0
        while coord.claim(pilot):
            n += 1
    counts[slot] = n


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _claim_all(coord: Coordination, pilot: str, limit: int) -> int:
    n = 0
    while batch := coord.claim(pilot, limit=limit):
        n += len(batch)
    return n


def _claims_in_processes(url: str, namespace: str, n: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(CLAIM_PROCS + 1)
    counts = ctx.Array("l", CLAIM_PROCS)
    procs = [
        ctx.Process(target=_claim_worker, args=(url, namespace, f"mp{i}", barrier, counts, i))
        for i in range(CLAIM_PROCS)
    ]
    for proc in procs:
        proc.start()
    barrier.wait(60)
    start = time.perf_counter()
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - start
    taken = sum(int(c) for c in counts[:])
    if taken != n:
        raise SystemExit(f"multi-process claim took {taken} ids, expected {n}")
    return elapsed


def run(url: str, n: int, batch: int) -> dict[str, float]:
    """All measurements on one backend, in a fresh namespace; returns rate per metric."""
    namespace = "bench" + uuid.uuid4().hex[:8]
    ids = [f"cu-{i:06d}" for i in range(n)]
    rates: dict[str, float] = {}
    with connect(url, namespace) as coord:
        coord.ping()
        desc = {"description": {"executable": "/bin/true", "arguments": ["x"], "number_of_processes": 1}}
        rates["create_many"] = n / _timed(lambda: coord.create_many("cu", [(i, desc) for i in ids]))

        def move_all() -> None:
            for target in ("Pending", "Running", "Done"):
                for start in range(0, n, batch):
                    reqs = [TransitionRequest(i, target, pilot="p0") for i in ids[start : start + batch]]
                    if not all(r.ok for r in coord.transition_many("cu", reqs)):
                        raise SystemExit(f"a transition to {target} failed on {url}")

        rates["transitions"] = 3 * n / _timed(move_all)

        def enqueue_all() -> None:
            for start in range(0, n, batch):
                coord.enqueue(ids[start : start + batch])

        for label, limit in (("claim limit=1", 1), ("claim limit=16", 16)):
            rates["enqueue"] = n / _timed(enqueue_all)
            start = time.perf_counter()
            if _claim_all(coord, f"p-{limit}", limit) != n:
                raise SystemExit(f"{label} did not get every id on {url}")
            rates[label] = n / (time.perf_counter() - start)
        enqueue_all()
        rates[f"claim {CLAIM_PROCS} procs limit=1"] = n / _claims_in_processes(url, namespace, n)
    return rates


@contextmanager
def _redis(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests import servers

    with tempfile.TemporaryDirectory(prefix="pd-bench-redis-") as tmp:
        server = servers.start_redis(Path(tmp))
        try:
            yield server.url
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; 0 when every target is met."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="CUs per backend (default 10000)")
    parser.add_argument("--batch", type=int, default=1_000, help="transition / enqueue batch size")
    parser.add_argument("--backends", default="redis,sqlite", help="comma-separated: redis,sqlite")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one (a fresh namespace)")
    args = parser.parse_args(argv)

    results: dict[str, dict[str, float]] = {}
    for backend in args.backends.split(","):
        if backend == "redis":
            with _redis(args.redis_url) as url:
                results[backend] = run(url, args.n, args.batch)
        elif backend == "sqlite":
            with tempfile.TemporaryDirectory(prefix="pd-bench-sqlite-") as tmp:
                results[backend] = run(f"sqlite:///{tmp}/coordination.sqlite", args.n, args.batch)
        else:
            parser.error(f"unknown backend {backend!r}; expected redis or sqlite")

    missed = 0
    print(f"\ncoordination throughput, n={args.n}, batch={args.batch}")
    print(f"{'backend':8} {'measure':26} {'per second':>12} {'target':>10}  ok")
    for backend, rates in results.items():
        for metric, rate in rates.items():
            target = TARGETS.get((backend, metric))
            ok = "" if target is None else ("yes" if rate >= target else "NO")
            missed += ok == "NO"
            label = "CU transitions (batched)" if metric == "transitions" else metric
            shown = f">= {target:,.0f}" if target else ""
            print(f"{backend:8} {label:26} {rate:12,.0f} {shown:>10}  {ok}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
