"""End-to-end ComputeUnit throughput: N tiny CUs on one local pilot with 2 slots.

In one run, the same workload (N x ``/bin/true``) through:

* pilot-data on Redis (a redis-server started here on loopback) and on the embedded SQLite default,
  submitted in bulk, measured from submit to the last CU final, with the history writer draining
  every state change into SQL concurrently (the final drain is inside the measured time);
* ``xargs -P2`` (the exec limit of this machine);
* Dask ``LocalCluster`` (2 worker processes, ``subprocess.run``) when dask.distributed is installed.

Prints tasks/s and the ratios. Targets: >= 1,000 CU/s on Redis, >= 500 CU/s on SQLite.

Where the sandboxes go: every CU gets a sandbox directory and two output files, which xargs and Dask
do not create. The pilot's working directory is on tmpfs (``/dev/shm``, node-local scratch, as pilots
are usually run) unless ``--workdir`` says otherwise, because on these VMs' ext4 a file create
costs 10-30 us normally but 0.1-1 ms when many files were deleted in the last minutes (the kernel's
``recently_deleted`` inode scan, seen with ``perf``): that would measure the previous run's cleanup.
The run prints the measured cost of one sandbox (mkdir + 2 files) in the directory used.

    python benchmarks/throughput.py [--n 2000] [--backends redis,sqlite] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pilotdata import ComputeDataService, PilotComputeService
from pilotdata.history import History, HistoryWriter
from pilotdata.services import FailurePolicy
from pilotdata.session import Session
from pilotdata.states import Kind
from tests import servers

TARGETS = {"redis": 1000.0, "sqlite": 500.0}


def run_pilotdata(url: str, n: int, statedir: Path, sandboxes: Path) -> tuple[float, int]:
    """Seconds for N CUs end to end and the number of history events stored."""
    statedir.mkdir(parents=True, exist_ok=True)
    session = Session(url, namespace=f"bench{int(time.time() * 1000)}",
                      history_url=f"sqlite:///{statedir / 'history.sqlite'}")
    pcs = PilotComputeService(session=session, policy=FailurePolicy())
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2,
                              "working_directory": str(sandboxes)})
    pilot.wait(timeout=60)
    history = History(session.history_url)
    writer = HistoryWriter(session.coord, history)
    stop = threading.Event()
    drainer = threading.Thread(target=writer.run, args=(stop,), kwargs={"interval": 0.2}, daemon=True)
    cds = ComputeDataService(session=session)
    cds.add_pilot_compute_service(pcs)
    descs = [{"executable": "/bin/true"} for _ in range(n)]
    drainer.start()
    try:
        start = time.perf_counter()
        cus = cds.submit_compute_units(descs)
        cds.wait(timeout=600)
        stop.set()
        drainer.join()
        writer.drain()
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        pcs.cancel()
    records = [r for r in session.coord.get_many(Kind.CU, [c.id for c in cus]) if r is not None]
    failed = [r for r in records if r.state != "Done"]
    if failed or len(records) != n:
        raise SystemExit(f"{len(failed)} CUs not Done, e.g. {failed[0].state}: {failed[0].data.get('reason')}")
    from pilotdata.history import queries

    stored = len(queries.events(history, entity="cu", limit=None))
    cds.close()
    session.close()
    return elapsed, stored


def sandbox_cost(directory: Path, n: int = 300) -> float:
    """Microseconds to create one sandbox-like directory with two empty files in ``directory``."""
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=directory))
    try:
        start = time.perf_counter()
        for i in range(n):
            sandbox = probe / str(i)
            sandbox.mkdir()
            for name in ("stdout", "stderr"):
                os.close(os.open(sandbox / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        return (time.perf_counter() - start) / n * 1e6
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def run_xargs(n: int) -> float:
    """Seconds for ``xargs -P2`` to run N x /bin/true."""
    start = time.perf_counter()
    subprocess.run(["xargs", "-P2", "-n1", "/bin/true"], input="x\n" * n, text=True, check=True)
    return time.perf_counter() - start


def run_dask(n: int) -> float | None:
    """Seconds for Dask LocalCluster (2 processes) to run N x subprocess.run(/bin/true), or None."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        return None
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        start = time.perf_counter()
        futures = client.map(lambda i: subprocess.run(["/bin/true"], check=True).returncode, range(n), pure=False)
        client.gather(futures)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--backends", default="redis,sqlite")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    parser.add_argument("--no-dask", action="store_true")
    shm = Path("/dev/shm")
    parser.add_argument("--workdir", type=Path, default=shm if shm.is_dir() and os.access(shm, os.W_OK) else None,
                        help="where the pilots' working directories (the sandboxes) go (default: /dev/shm)")
    args = parser.parse_args()
    n = args.n
    rows: list[tuple[str, float, str]] = []
    # coordination and history stay on disk; only the pilots' working directories go to --workdir
    with tempfile.TemporaryDirectory(prefix="pdata-bench-") as tmp, \
            tempfile.TemporaryDirectory(prefix="pdata-bench-pilots-", dir=args.workdir) as pilots:
        tmpdir = Path(tmp)
        per_sandbox = sandbox_cost(Path(pilots))
        xargs_rate = n / run_xargs(n)
        rows.append(("xargs -P2", xargs_rate, "exec limit"))
        if not args.no_dask:
            dask_s = run_dask(n)
            if dask_s is not None:
                rows.append(("dask LocalCluster(2)", n / dask_s, ""))
        redis_server = None
        for backend in args.backends.split(","):
            if backend == "redis":
                url = args.redis_url
                if url is None:
                    redis_server = servers.start_redis(tmpdir / "redis")
                    url = redis_server.url
            else:
                url = f"sqlite:///{tmpdir / 'coord.sqlite'}"
            seconds, stored = run_pilotdata(url, n, tmpdir / backend, Path(pilots) / backend)
            rate = n / seconds
            ok = "OK" if rate >= TARGETS[backend] else "MISSED"
            rows.append((f"pilot-data on {backend}", rate,
                         f"target >= {TARGETS[backend]:.0f}/s {ok}; {stored} CU events in history"))
        if redis_server is not None:
            redis_server.stop()
    print(f"\n{n} x /bin/true, one pilot with 2 slots, bulk submit, end to end")
    print(f"sandboxes in {args.workdir or tempfile.gettempdir()}: {per_sandbox:.0f} us per mkdir + 2 file creates\n")
    print(f"{'runner':<26}{'tasks/s':>10}{'vs xargs':>10}  notes")
    for name, rate, note in rows:
        print(f"{name:<26}{rate:>10.0f}{rate / xargs_rate:>10.2f}  {note}")
    dask_rate = next((r for name, r, _ in rows if name.startswith("dask")), None)
    if dask_rate:
        for name, rate, _ in rows:
            if name.startswith("pilot-data"):
                print(f"{name} / dask: {rate / dask_rate:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
