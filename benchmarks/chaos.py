"""Fault injection at a larger size: the scenarios of ``tests/chaos`` with more CUs and the product's
default heartbeat TTL and binder lease, printing per scenario and backend how many CUs ended Done
exactly once, were lost, completed twice or re-executed, and how long detection and recovery took.

Everything is real and started here on loopback: redis-server with ``--appendonly yes --appendfsync
always`` (one per scenario), the embedded SQLite file, ``python -m agent`` processes, OpenSSH sshd for
the SFTP scenario, a single-node SLURM cluster for the walltime scenario.

* *detect*: from the fault to the first event showing it was handled (the dead pilot marked lost or
  its work requeued, a stopping agent's hand-back, the first CU moved after Redis came back, the first
  adoption of a dead client's CUs); negative for a walltime, which the agent acts on before it comes.
* *recover*: from the fault to the last CU final.

    python benchmarks/chaos.py [--ttl 15] [--lease 30] [--scale 1] [--only kill9,sigterm,...] [--json out.json]

Scenarios: kill9, sigterm, redis-restart, redis-kill, redis-past-ttl, client-kill, clients, sftp, slurm.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import servers
from tests.chaos import scenarios
from tests.chaos.scenarios import HEADER, Lab, Outcome

ALL = ["kill9", "sigterm", "redis-restart", "redis-kill", "redis-past-ttl", "client-kill", "clients", "sftp", "slurm"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttl", type=float, default=15.0, help="agents' heartbeat TTL in seconds (product default 15)")
    parser.add_argument("--lease", type=float, default=30.0, help="dead client's binder lease (product default 30)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the workload sizes")
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated scenarios")
    parser.add_argument("--backends", default="redis,sqlite")
    parser.add_argument("--json", type=Path, help="also write the outcomes as JSON here")
    args = parser.parse_args(argv)
    chosen = [s for s in args.only.split(",") if s]
    unknown = sorted(set(chosen) - set(ALL))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(ALL)}")
    backends = [b for b in args.backends.split(",") if b]
    root = Path(tempfile.mkdtemp(prefix="pdata-chaos-"))
    outcomes: list[Outcome] = []
    sshd = slurm = None

    def n(base: int) -> int:
        return max(1, int(base * args.scale))

    def lab(backend: str, name: str) -> Lab:
        directory = root / f"{name}-{backend}"
        redis = servers.start_redis(directory / "redis", extra=servers.DURABLE) if backend == "redis" else None
        return Lab.make(backend, directory, redis, ttl=args.ttl)

    def run(name: str, backend: str, body: Callable[[Lab], Outcome]) -> None:
        made = lab(backend, name)
        began = time.monotonic()
        try:
            outcome = body(made)
        except Exception as exc:  # a scenario that broke is a finding, not a reason to stop the others
            outcome = Outcome(name, backend, 0, notes=[f"scenario failed: {type(exc).__name__}: {exc}"])
        finally:
            made.close()
            if made.redis is not None:
                made.redis.stop()
        outcomes.append(outcome)
        print(outcome.row(), f"  ({time.monotonic() - began:.0f} s)", flush=True)

    print(f"heartbeat TTL {args.ttl:g} s, binder lease {args.lease:g} s, scale {args.scale:g}; work in {root}")
    print(HEADER, flush=True)
    try:
        for backend in backends:
            if "kill9" in chosen:
                run("kill9", backend, lambda lb: scenarios.kill9_agent(lb, n=n(400), seconds=0.2, timeout=600))
            if "sigterm" in chosen:
                run("sigterm", backend, lambda lb: scenarios.sigterm_agent(lb, n=n(400), seconds=0.2, timeout=600))
            if "client-kill" in chosen:
                run("client-kill", backend, lambda lb: scenarios.client_killed_mid_submit(
                    lb, n=n(3000), lease=args.lease, timeout=900))
            if "sftp" in chosen:
                if sshd is None:
                    sshd = servers.start_sshd(root / "sshd")
                run("sftp", backend, functools.partial(scenarios.agent_killed_mid_staging, sshd=sshd,
                                                       size=n(256) * 2**20, timeout=600))
        if "redis" in backends:
            for key, down, kill in (("redis-restart", 3.0, False), ("redis-kill", 3.0, True),
                                    ("redis-past-ttl", 3 * args.ttl, True)):
                if key in chosen:
                    run(key, "redis", functools.partial(scenarios.redis_outage, down=down, kill=kill, n=n(400),
                                                        seconds=0.2, timeout=900))
        if "sqlite" in backends and "clients" in chosen:
            run("clients", "sqlite", lambda lb: scenarios.many_sqlite_clients(lb, clients=8, n_each=n(200),
                                                                             timeout=900))
        if "slurm" in chosen:
            from tests.slurm_harness import start_slurm

            slurm = start_slurm(root / "slurm")
            labs = [lab(b, "slurm") for b in backends]
            began = time.monotonic()
            try:
                for outcome in scenarios.slurm_walltime(labs, slurm):
                    outcomes.append(outcome)
                    print(outcome.row(), f"  ({time.monotonic() - began:.0f} s, both backends side by side)")
            finally:
                for made in labs:
                    made.close()
                    if made.redis is not None:
                        made.redis.stop()
    finally:
        if sshd is not None:
            sshd.stop()
        if slurm is not None:
            slurm.stop()
    broken = [o for o in outcomes if o.problems()]
    print(f"\n{len(outcomes)} runs; {sum(o.cus for o in outcomes)} CUs; "
          f"{sum(o.done for o in outcomes)} Done exactly once, {sum(o.lost for o in outcomes)} lost, "
          f"{sum(o.duplicated for o in outcomes)} completed twice, {sum(o.reexecuted for o in outcomes)} re-executed; "
          f"{len(broken)} run(s) with problems")
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    shutil.rmtree(root, ignore_errors=True)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
