"""Benchmark: ``pdata dashboard`` response times at 100,000 ComputeUnits.

Builds the namespace of ``benchmarks/inspect_scale.py`` (N CUs of one run on 8 pilots at 2 sites, 2%
Failed, 10% still Pending, transfer records), drains it into a SQLite history, starts the real
``pdata dashboard`` (a process of its own, refreshing every second) and asks it over HTTP what the page
asks, ``--repeat`` rounds of:

* **cold**: the first request for each address after a new refresh generation (an event is recorded in
  coordination, the dashboard's refresh drains it, the generation changes): the query runs;
* **warm**: the same request again within the generation: served from the generation's cache;
* **page**: every panel and the first table page asked at once over 6 connections (as a browser does),
  cold and warm: the time until the whole page has its data.

Each endpoint's p50 / p95 in milliseconds is printed. The peer is what a dashboard that walks the units
would do on every refresh: read every CU record from coordination and count in Python (as Dask's and
Ray's dashboards hold every task); the ratio column is walk / cold p50. The background refresh's own
cost is timed in this process: a refresh with nothing new (the drain, the live pilots), and the scan of
``--dus`` DataUnit records for copies in flight (spaced out by the refresh: at most a tenth of its time).

Run: ``python benchmarks/dashboard.py [--n 100000] [--dus 10000] [--backend sqlite|redis] [--repeat 20]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: benchmarks, tests.servers

from benchmarks.inspect_scale import build, coordination_url, pct, timed, walk
from pilotdata.coordination import Coordination, connect
from pilotdata.dashboard import LiveState
from pilotdata.history import History
from pilotdata.inspect import CUFilter, Inspector
from pilotdata.records import TRANSFER_EVENT, ByteCategory, ReplicaStatus, replica_patch, transfer_record
from pilotdata.states import Kind


class Client:
    """Keep-alive HTTP/1.1 connections to the dashboard (one per thread)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.base = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self._local = threading.local()

    def get(self, path: str) -> tuple[float, bytes]:
        """``GET base+path``: (milliseconds, body); any status but 200 is an error. A kept-alive connection
        the server closed meanwhile (uvicorn closes idle ones after 5 s) is opened again, as browsers do."""
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            fresh = conn is None
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            start = time.perf_counter()
            try:
                conn.request("GET", self.base + path)
                response = conn.getresponse()
                body = response.read()
            except (http.client.RemoteDisconnected, ConnectionError):
                conn.close()
                self._local.conn = None
                if fresh or attempt == 2:
                    raise
                continue
            elapsed = (time.perf_counter() - start) * 1000
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
            return elapsed, body
        raise AssertionError("unreachable")

    def json(self, path: str) -> Any:
        """The JSON body of ``GET path``."""
        return json.loads(self.get(path)[1])


def start_dashboard(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """``pdata dashboard --port 0 --interval 1`` in a process of its own; its printed URL."""
    proc = subprocess.Popen([sys.executable, "-m", "pilotdata.cli", "dashboard", "--port", "0", "--interval", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"pdata dashboard printed {url!r} and exited {proc.wait()}")
    return proc, url


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def add_data_units(coord: Coordination, run: str, n: int) -> None:
    """``n`` DataUnit records of ``run`` with one complete replica each; 1 in 100 also being copied."""
    for start in range(0, n, 1000):
        coord.create_many(Kind.DU, [(f"du-bench{i}", {
            "description": {"name": f"data-{i}"}, "run": run, "file:a.txt": {"size": 1000, "sha256": "0" * 64},
            **replica_patch("pd-a", ReplicaStatus.COMPLETE),
            **(replica_patch("pd-b", ReplicaStatus.PENDING) if i % 100 == 0 else {})})
            for i in range(start, min(n, start + 1000))])


def bump(coord: Coordination, client: Client, i: int) -> None:
    """Record one event and wait until the dashboard's refresh has made a new generation of it."""
    before = client.json("api/meta")["generation"]
    coord.record_event(TRANSFER_EVENT, "du-bench", transfer_record(
        "du-bench", 1, 0.0, category=ByteCategory.UPLOADED, source="bench", destination=f"bench-{i}"))
    wait_for(lambda: client.json("api/meta")["generation"] > before, 30, "a new generation")


def main(argv: list[str] | None = None) -> int:
    """Build, serve, measure, print."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--warm", type=int, default=5, help="warm requests per endpoint and round")
    parser.add_argument("--dus", type=int, default=10_000, help="DataUnit records (1 in 100 being copied)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pd-dashboard-") as tmp, coordination_url(args.backend, tmp) as url:
        proc = None
        try:
            coord = connect(url, "bench")
            t0 = time.perf_counter()
            run, ids, _pilots = build(coord, args.n)
            add_data_units(coord, run, args.dus)
            built = time.perf_counter() - t0
            history_url = f"sqlite:///{tmp}/history.sqlite"
            history = History(history_url)
            ins = Inspector(coord, history)
            t0 = time.perf_counter()
            events = ins.refresh()
            drained = time.perf_counter() - t0
            print(f"{args.n:,} CUs and {args.dus:,} DataUnits on {args.backend}: built in {built:.1f} s; "
                  f"{events:,} events drained into the history in {drained:.1f} s")
            state = LiveState(ins, interval=1.0)
            state.tick()
            tick = timed(state.tick, max(5, args.repeat // 2))  # the DataUnit scan is spaced out: most skip it
            scan = timed(state.scan_data_units, 5)
            print(f"background refresh with nothing new (drain, live pilots): p50 {pct(tick, 0.5):.1f} ms, "
                  f"p95 {pct(tick, 0.95):.1f} ms; DataUnit scan ({args.dus:,} records, "
                  f"{len(state.snapshot.in_flight)} copies in flight): p50 {pct(scan, 0.5):.0f} ms")
            peer = statistics.median(timed(lambda: walk(coord), 3))
            print(f"peer: walk every CU record and count in Python (per refresh): {peer:,.0f} ms\n")

            env = {**os.environ, "PDATA_URL": url, "PDATA_NAMESPACE": "bench", "PDATA_HISTORY_URL": history_url,
                   "PDATA_HOME": tmp}
            proc, page_url = start_dashboard(env)
            client = Client(page_url)
            wait_for(lambda: client.json("api/meta")["refreshed"], 120, "the dashboard's first refresh")
            first = client.json("api/cus?limit=50")
            middle = ins.list_cus(CUFilter(run=run), offset=args.n // 2 - 1, limit=1).cursor or ""
            one = ids[args.n // 2]
            endpoints = [
                ("meta (polled)", "api/meta"),
                ("pilots", "api/pilots"),
                ("counts", "api/counts"),
                ("throughput", "api/throughput"),
                ("bytes", "api/bytes"),
                ("transfers", "api/transfers"),
                ("failures", "api/failures"),
                ("cus page 1 (50)", "api/cus?limit=50"),
                ("cus page 2 (cursor)", f"api/cus?limit=50&after={quote(first['cursor'])}"),
                ("cus page at N/2 (cursor)", f"api/cus?limit=50&after={quote(middle)}"),
                ("cus state=Failed", "api/cus?limit=50&state=Failed"),
                ("cus site=site-a", "api/cus?limit=50&site=site-a"),
                ("cus name=task-99*", f"api/cus?limit=50&name={quote('task-99*')}"),
                ("cu (details)", f"api/cu/{one}"),
                ("page (index.html)", ""),
                ("chart.umd.min.js", "static/vendor/chart.umd.min.js"),
            ]
            page = [p for name, p in endpoints if name in (
                "pilots", "counts", "throughput", "bytes", "transfers", "failures", "cus page 1 (50)")]
            cold: dict[str, list[float]] = {name: [] for name, _ in endpoints}
            warm: dict[str, list[float]] = {name: [] for name, _ in endpoints}
            sizes: dict[str, int] = {}
            page_cold: list[float] = []
            page_warm: list[float] = []
            with ThreadPoolExecutor(6) as pool:
                for r in range(args.repeat):
                    bump(coord, client, 2 * r)
                    for name, path in endpoints:
                        ms, body = client.get(path)
                        cold[name].append(ms)
                        sizes[name] = len(body)
                        for _ in range(args.warm):
                            warm[name].append(client.get(path)[0])
                    bump(coord, client, 2 * r + 1)
                    t0 = time.perf_counter()
                    list(pool.map(client.get, page))
                    page_cold.append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    list(pool.map(client.get, page))
                    page_warm.append((time.perf_counter() - t0) * 1000)
            counts = client.json("api/counts")
            assert counts["all"] == args.n, counts["all"]
            print(f"{'endpoint':<28}{'cold p50':>10}{'cold p95':>10}{'warm p50':>10}{'warm p95':>10}"
                  f"{'kB':>8}{'walk / cold p50':>17}")
            for name, path in endpoints:
                c50 = pct(cold[name], 0.5)
                ratio = f"{peer / c50:>16.0f}x" if path.startswith("api/") and path != "api/meta" else ""
                print(f"{name:<28}{c50:>10.1f}{pct(cold[name], 0.95):>10.1f}{pct(warm[name], 0.5):>10.1f}"
                      f"{pct(warm[name], 0.95):>10.1f}{sizes[name] / 1000:>8.1f}{ratio}")
            print(f"{'whole page (7 in parallel)':<28}{pct(page_cold, 0.5):>10.1f}{pct(page_cold, 0.95):>10.1f}"
                  f"{pct(page_warm, 0.5):>10.1f}{pct(page_warm, 0.95):>10.1f}")
            print(f"\n(ms; {args.repeat} rounds; cold: the first request after a new generation, warm: "
                  f"{args.warm} more within it; one keep-alive connection, the page over 6)")
            ins.close()
            history.close()
            coord.close()
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
