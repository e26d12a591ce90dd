"""Benchmark: batch placement of 10,000 CUs on 100 pilots (target: under 1 s in total).

A BLAST-shaped workload: every CU reads one shared 10 GB database DU plus its own 1 MB query chunk.
The database has replicas in two of five datacenters; some pilots already cache it; some pilots are
still queued in a batch system. Prints the time of :func:`placement.assign` and of one
:func:`placement.rank` (with its explanation) for scale. Run: ``python benchmarks/placement_speed.py``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

from placement import BandwidthModel, Candidate, DataRef, Demand, assign, rank

TARGET_S = 1.0


def workload(
    n_cus: int, n_pilots: int, seed: int = 7, *, warm: bool = True
) -> tuple[list[Demand], list[Candidate]]:
    """Demands and candidates of the BLAST-shaped benchmark (``warm``: every 7th pilot caches the DB)."""
    rng = random.Random(seed)
    datacenters = [f"dc{i}" for i in range(5)]
    db = DataRef(
        "du-blastdb", 10 * 10**9,
        replica_sites=(("dc0", "store0"), ("dc3", "store3")), replica_pds=("pd-dc0", "pd-dc3"),
    )
    candidates = []
    for i in range(n_pilots):
        dc = datacenters[i % len(datacenters)]
        queued = i % 10 == 9
        candidates.append(
            Candidate(
                pilot_id=f"pilot-{i:03d}",
                site=(dc, f"node{i}"),
                total_slots=16,
                free_slots=0 if queued else rng.randint(0, 16),
                queued_slots=rng.randint(0, 8),
                cached_dus=frozenset({"du-blastdb"}) if warm and i % 7 == 0 else frozenset(),
                state="queued" if queued else "running",
                expected_start_s=rng.uniform(30, 600) if queued else 0.0,
                mean_task_seconds=rng.uniform(20, 120),
            )
        )
    demands = []
    for j in range(n_cus):
        dc = datacenters[j % len(datacenters)]
        query = DataRef(f"du-query-{j:05d}", 10**6, replica_sites=((dc, "store"),))
        demands.append(Demand(f"cu-{j:05d}", slots=1, inputs=(db, query)))
    return demands, candidates


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cus", type=int, default=10_000)
    parser.add_argument("--pilots", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model = BandwidthModel()
    for warm in (True, False):
        demands, candidates = workload(args.cus, args.pilots, warm=warm)
        timings = []
        result: dict[str, str] = {}
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = assign(demands, candidates, model)
            timings.append(time.perf_counter() - started)
        best = min(timings)
        load = Counter(result.values())
        label = "DB cached on every 7th pilot" if warm else "DB cached nowhere"
        print(f"assign ({label}): {len(demands)} CUs x {len(candidates)} pilots in {best:.3f} s "
              f"(best of {args.repeat}; target < {TARGET_S:.1f} s: {'OK' if best < TARGET_S else 'SLOW'})")
        print(f"  placed {len(result)} CUs on {len(load)} pilots; per-pilot load min {min(load.values())}, "
              f"max {max(load.values())}")
    started = time.perf_counter()
    ranking = rank(demands[0], candidates, model)
    text = ranking.explain()
    print(f"rank + explain of one CU over {len(candidates)} pilots: {time.perf_counter() - started:.4f} s "
          f"({len(text.splitlines())} lines)")


if __name__ == "__main__":
    main()
