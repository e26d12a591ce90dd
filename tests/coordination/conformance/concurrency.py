"""Conformance under real concurrency: 4 processes claim from 10,000 queued ids, each exactly once."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from pilotdata.coordination import Coordination
from tests.coordination import workers
from tests.coordination.conformance.base import ConformanceBase

N_IDS = 10_000
N_PROCS = 4


class ConcurrencyConformance(ConformanceBase):
    """Conformance under real concurrency: 4 processes claim from 10,000 queued ids, each exactly once."""

    def test_four_processes_claim_every_id_exactly_once(
        self, coord: Coordination, backend_url: str, namespace: str, tmp_path: Path
    ) -> None:
        ids = [f"cu-{i:05d}" for i in range(N_IDS)]
        for start in range(0, N_IDS, 2000):
            coord.enqueue(ids[start : start + 2000])
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(N_PROCS)
        outs = [tmp_path / f"worker{n}.json" for n in range(N_PROCS)]
        procs = [
            ctx.Process(
                target=workers.claim_until_empty,
                args=(backend_url, namespace, f"p{n}", 1 + n % 2, barrier, str(outs[n])),
            )
            for n in range(N_PROCS)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(240)
        assert [proc.exitcode for proc in procs] == [0] * N_PROCS
        results = [json.loads(out.read_text()) for out in outs]
        claimed = [cu for r in results for cu in r["claimed"]]
        assert len(claimed) == N_IDS, "an id was claimed twice or lost"
        assert set(claimed) == set(ids)
        assert sum(1 for r in results if r["claimed"]) >= 2, "no contention: one worker took everything"
        for n, r in enumerate(results):
            assert r["in_progress"] == r["claimed"]  # each claim landed in the claimer's in-progress list
            assert coord.claimed(f"p{n}") == r["claimed"]
        assert coord.queued() == []
