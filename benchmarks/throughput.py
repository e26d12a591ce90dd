"""End-to-end ComputeUnit throughput: N tiny CUs on one local pilot with 2 slots, next to its peers.

In one run, the same workload (N x ``/bin/true``) through:

* ``xargs -P2`` (the exec limit of this machine: the reference of every ratio);
* pilot-data on Redis (a redis-server started here on loopback) and on the embedded SQLite default, in two
  client modes: **bulk** (one ``submit_compute_units`` call, the pilot already Running, measured from the
  submit to the last CU final) and **one-by-one** (BigJob's way: a ``submit_compute_unit`` call per CU,
  measured from the ``create_pilot`` call, so the pilot's start-up is included); in both, the history
  writer drains every state change into SQL concurrently (its final drain is inside the measured time,
  and the run checks that all 4 x N CU events were stored);
* the peers that are installed (``pip install 'pilot-data[bench]'``): Dask ``LocalCluster`` (2 worker
  processes, ``subprocess.run``), HyperQueue (its Python package runs the server and a 2-core worker
  in-process: ``hyperqueue.cluster.LocalCluster``; each task's stdout / stderr files in its working
  directory, as pilot-data's), Parsl with the HighThroughputExecutor (2 workers, a ``python_app`` calling
  ``subprocess.run``) and with the ThreadPoolExecutor (2 threads, a ``bash_app``).

Prints tasks/s, the ratio to xargs next to the targets (bulk >= 0.7x, one-by-one >= 0.5x, sandboxes on
disk), and **where the time goes per CU**: CPU microseconds of the agent, of the CU processes (the agent's
reaped children), of redis-server, of the client (submit and wait) and of the history writer thread
(both in this process), from ``/proc`` and ``getrusage``. The machine has 2 cores, so the sum bounds the
rate (2 / CPU per CU); a missed target is printed with that bound.

Where the sandboxes go: every CU gets a sandbox directory and two output files. ``--workdir`` holds the
pilots' working directories (default ``/var/tmp``, on disk; coordination and history always stay on disk).
On an ext4 without a journal (these VMs) a file create costs 10-30 us normally but 0.3-3 ms for about 30 s
after many files were deleted in the same inode group (the kernel skips, reading each one, the inodes
deleted in the last 30 s when it allocates one: ``recently_deleted``). On a shared machine ``/tmp`` is
such a group most of the time (every test suite's temporary directories come and go there): sandboxes in
``/tmp`` measure the other suites' clean-up, not pilot-data. The run therefore deletes nothing until it is
over, measures the cost of one sandbox (mkdir + 2 files) before and after the runs, waits (up to
``--settle`` seconds, 120 by default) for it to be low again when a previous run's clean-up made it high,
and warns when it stays high.

``--fresh-fs`` (root) gives each pilot-data and HyperQueue run a new ext4 of its own, made in an image file
under ``--workdir`` and loop-mounted (``benchmarks/_freshfs.py``): every run then meets a file system with
no deletions in its past, whatever ran before it on this machine, and the figure is the code's, not the
disk's history. The sandbox probe runs in a new one too.

``--phases`` also times each span of an agent slot's cycle (from its worker thread taking a CU to the
next one: preparing, Popen's vfork until the child's exec, the process, recording), with
``benchmarks/phases/sitecustomize.py`` loaded into the agents; it prints the medians and means per CU.

    python benchmarks/throughput.py [--n 2000] [--backends redis,sqlite] [--modes bulk,one-by-one]
                                    [--peers xargs,dask,hyperqueue,parsl] [--workdir DIR] [--repeat 3]
                                    [--phases] [--fresh-fs]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._freshfs import FreshExt4, FreshFsError, mount_of
from benchmarks._host import host_line
from pilotdata import ComputeDataService, PilotComputeService
from pilotdata.descriptions import PilotComputeDescription
from pilotdata.history import History, HistoryWriter
from pilotdata.services import FailurePolicy
from pilotdata.session import Session
from pilotdata.states import Kind
from tests import servers

TARGETS = {"bulk": 0.7, "one-by-one": 0.5}
"""Least ratio to xargs per client mode, sandboxes on disk."""

SLOW_SANDBOX = 300.0
"""Microseconds per sandbox above which the file system, not pilot-data, sets the pace (see the docstring)."""

SETTLE_STEP = 5.0
"""Seconds between two probes of the sandbox cost while waiting for the file system to settle."""

FRESH_FS_SIZE = 2 * 2**30
"""Bytes of each ``--fresh-fs`` image (sparse: a run's sandboxes use a few MB of it)."""

CORES = len(os.sched_getaffinity(0))
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    """One runner's outcome: seconds for the N tasks, and the CPU seconds it cost by component."""

    name: str
    seconds: list[float] = field(default_factory=list)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""
    mode: str = ""
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    """``--phases``: the agent's slot cycle of the last round (span -> n, mean, p50 in us)."""

    def add(self, seconds: float, cpu: dict[str, float] | None = None) -> None:
        """Record one repetition."""
        self.seconds.append(seconds)
        for part, value in (cpu or {}).items():
            self.cpu.setdefault(part, []).append(value)

    @property
    def median(self) -> float:
        """Median seconds over the repetitions."""
        return statistics.median(self.seconds)


# ------------------------------------------------------------------ CPU accounting
def proc_cpu(pid: int) -> tuple[float, float]:
    """(own CPU seconds, CPU seconds of its reaped children) of a process, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) / _TICK for x in fields[11:15])
    return utime + stime, cutime + cstime


def thread_cpu(tid: int) -> float:
    """CPU seconds of one thread of this process."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def self_cpu() -> float:
    """CPU seconds of this process (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    """CPU seconds of this process's reaped children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """CPU of the agent, its CU processes, the coordination server, this client and its history writer."""

    def __init__(self, agent_pid: int | None, server_pid: int | None, stack: Stack) -> None:
        self.agent_pid, self.server_pid, self.stack = agent_pid, server_pid, stack
        self._start = self._read()
        tid = stack.drainer.native_id
        self._start["history writer"] = thread_cpu(tid) if tid is not None else 0.0

    def _read(self) -> dict[str, float]:
        # no agent yet (one-by-one: the pilot starts during the measurement): counted from its start
        agent, kids = proc_cpu(self.agent_pid) if self.agent_pid is not None else (0.0, 0.0)
        out = {"agent": agent, "CU processes": kids, "client": self_cpu()}
        if self.server_pid is not None:
            out["redis-server"] = proc_cpu(self.server_pid)[0]
        return out

    def stop(self) -> dict[str, float]:
        """CPU seconds per component since the meter started (the client without its history thread)."""
        end = self._read()
        end["history writer"] = sum(self.stack.history_cpu)  # the thread's total and the last drain
        used = {k: end[k] - self._start[k] for k in end}
        used["client"] -= used.get("history writer", 0.0)
        return used


# ------------------------------------------------------------------ pilot-data
@dataclass
class Stack:
    """A session, its pilot and the history writer draining it, for one pilot-data measurement."""

    session: Session
    pcs: PilotComputeService
    cds: ComputeDataService
    history: History
    writer: HistoryWriter
    stop: threading.Event
    drainer: threading.Thread
    history_cpu: list[float] = field(default_factory=list)
    """CPU seconds of the history writer's thread (written by the thread when it ends) and of the last drain."""


def open_stack(url: str, statedir: Path) -> Stack:
    """A fresh namespace with its history writer running in a thread (started here)."""
    statedir.mkdir(parents=True, exist_ok=True)
    session = Session(url, namespace=f"bench{time.time_ns()}", history_url=f"sqlite:///{statedir / 'history.sqlite'}")
    pcs = PilotComputeService(session=session, policy=FailurePolicy())
    history = History(session.history_url)
    writer = HistoryWriter(session.coord, history)
    stop = threading.Event()
    cpu: list[float] = []

    def drain() -> None:
        try:
            writer.run(stop, interval=0.2)
        finally:
            cpu.append(time.thread_time())

    drainer = threading.Thread(target=drain, daemon=True)
    cds = ComputeDataService(session=session)
    cds.add_pilot_compute_service(pcs)
    drainer.start()
    return Stack(session, pcs, cds, history, writer, stop, drainer, cpu)


def close_stack(stack: Stack, n: int) -> int:
    """Stop everything; check every CU is Done; return the CU events stored in the history."""
    stack.stop.set()
    stack.pcs.cancel()
    ids = [cu.id for cu in stack.cds.list_compute_units()]
    records = [r for r in stack.session.coord.get_many(Kind.CU, ids) if r is not None]
    failed = [r for r in records if r.state != "Done"]
    from pilotdata.history import queries

    stored = len(queries.events(stack.history, entity="cu", limit=None))
    stack.cds.close()
    stack.session.close()
    if failed or len(records) != n:
        example = f", e.g. {failed[0].state}: {failed[0].data.get('reason')}" if failed else ""
        raise SystemExit(f"{len(failed)} of {n} CUs not Done ({len(records)} found){example}")
    return stored


def finish(stack: Stack) -> None:
    """Wait for every CU, then store what the history writer has not stored yet (inside the measured time).

    The drain here runs beside the writer's thread: stores are serialised by the history's lock and skip
    what is stored already. The thread is stopped after the measurement (:func:`stop_writer`): stopping
    it first waited for its blocking read (up to its 0.2 s interval), which is not the workload's time.
    """
    stack.cds.wait(timeout=900)
    before = time.thread_time()
    stack.writer.drain()
    stack.history_cpu.append(time.thread_time() - before)


def stop_writer(stack: Stack) -> None:
    """Stop the history writer's thread (its CPU is counted when it ends)."""
    stack.stop.set()
    stack.drainer.join()


def run_pilotdata(url: str, server_pid: int | None, n: int, mode: str, statedir: Path,
                  sandboxes: Path, cpu_binding: str = "auto") -> tuple[float, dict[str, float], int, int | None]:
    """Seconds for N CUs end to end, CPU seconds per component, the CU events stored in the history, and
    the agent's pid."""
    stack = open_stack(url, statedir)
    descs = [{"executable": "/bin/true", "shell": False} for _ in range(n)]
    pilot_desc = {"service_url": "fork://localhost", "number_of_processes": 2, "working_directory": str(sandboxes),
                  "cpu_binding": cpu_binding}
    try:
        if mode == "bulk":
            pilot = stack.pcs.create_pilot(pilot_desc)
            pilot.wait(timeout=60, state="Running")
            meter = Meter(agent_pid(stack, pilot.id), server_pid, stack)
            start = time.perf_counter()
            stack.cds.submit_compute_units(descs)
            finish(stack)
        else:  # one-by-one: BigJob's loop, from the pilot's creation on
            meter = Meter(None, server_pid, stack)
            start = time.perf_counter()
            pilot = stack.pcs.create_pilot(pilot_desc)
            for desc in descs:
                stack.cds.submit_compute_unit(desc)
            meter.agent_pid = agent_pid(stack, pilot.id, wait=True)
            finish(stack)
        elapsed = time.perf_counter() - start
        stop_writer(stack)
        used = meter.stop()
    except BaseException:
        stack.stop.set()
        stack.pcs.cancel()
        raise
    stored = close_stack(stack, n)
    return elapsed, used, stored, meter.agent_pid


def read_phases(path: Path) -> dict[str, dict[str, float]]:
    """The slot-cycle spans an agent wrote when it stopped (``--phases``); empty, with a warning, if none came."""
    try:
        servers.wait_until(path.exists, 60, f"the agent's phases in {path}")
    except AssertionError as exc:
        print(f"  warning: {exc} (the agent did not stop cleanly?)", flush=True)
        return {}
    phases: dict[str, dict[str, float]] = json.loads(path.read_text())
    return phases


def agent_pid(stack: Stack, pilot_id: str, *, wait: bool = False) -> int:
    """The pid of a pilot's agent (from its registration), waiting for it if asked."""
    def read() -> int | None:
        pid = stack.session.coord.get(Kind.PILOT, pilot_id).data.get("pid")
        return int(pid) if pid else None

    pid = servers.wait_until(read, 60, f"pilot {pilot_id} to register") if wait else read()
    if pid is None:
        raise SystemExit(f"pilot {pilot_id} has no agent pid")
    return int(pid)


# ------------------------------------------------------------------ peers
def run_xargs(n: int) -> tuple[float, dict[str, float]]:
    """Seconds for ``xargs -P2`` to run N x /bin/true, and the CPU of the processes."""
    before = children_cpu()
    start = time.perf_counter()
    subprocess.run(["xargs", "-P2", "-n1", "/bin/true"], input="x\n" * n, text=True, check=True)
    elapsed = time.perf_counter() - start
    return elapsed, {"xargs and the processes": children_cpu() - before}


def _optional(module: str) -> Any:
    """The module, or None when it is not installed (``pip install 'pilot-data[bench]'``)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _true() -> int:
    import subprocess  # imported here: Parsl ships the function by value to its workers

    return subprocess.run(["/bin/true"], check=True).returncode


def run_dask(n: int) -> float | None:
    """Seconds for Dask LocalCluster (2 processes) to run N x subprocess.run(/bin/true), or None."""
    distributed = _optional("dask.distributed")
    if distributed is None:
        return None
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        start = time.perf_counter()
        client.gather(client.map(lambda i: _true(), range(n), pure=False))
        return time.perf_counter() - start


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow a peer's banners and progress bars (written to sys.stderr, or to fds 1 and 2 by native code)."""
    sys.stdout.flush()
    saved, fds = sys.stderr, [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    sys.stderr = io.StringIO()
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (*fds, null):
            os.close(fd)
        sys.stderr = saved


def run_hyperqueue(n: int, workdir: Path) -> float | None:
    """Seconds for HyperQueue (server and a 2-core worker in-process) to run N x /bin/true, or None."""
    hq = _optional("hyperqueue")
    cluster_mod = _optional("hyperqueue.cluster")
    if hq is None or cluster_mod is None:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    with _quiet(), cluster_mod.LocalCluster(server_dir=str(workdir / "server"),
                                            worker_config=cluster_mod.WorkerConfig(cores=2)) as cluster:
        client = cluster.client()
        job = hq.Job(default_workdir=str(workdir / "tasks"))
        for _ in range(n):
            job.program(["/bin/true"])  # default stdout / stderr: a file each, as a CU's
        start = time.perf_counter()
        submitted = client.submit(job)
        client.wait_for_jobs([submitted])
        return time.perf_counter() - start


def run_parsl(n: int, workdir: Path, executor: str) -> float | None:
    """Seconds for Parsl to run N x /bin/true: ``htex`` (2 workers, python_app) or ``threads`` (bash_app)."""
    parsl = _optional("parsl")
    if parsl is None:
        return None
    from_config = importlib.import_module("parsl.config")
    executors = importlib.import_module("parsl.executors")
    apps = importlib.import_module("parsl.app.app")
    rundir = str(workdir / f"parsl-{executor}")
    if executor == "htex":
        providers = importlib.import_module("parsl.providers")
        ex = executors.HighThroughputExecutor(label="htex", max_workers_per_node=2, cores_per_worker=1,
                                              provider=providers.LocalProvider(init_blocks=1, max_blocks=1))
        app = apps.python_app(_true)
    else:
        ex = executors.ThreadPoolExecutor(label="threads", max_threads=2)

        def true_line() -> str:
            return "/bin/true"

        app = apps.bash_app(true_line)
    # HTEX starts its interchange and workers as commands found on PATH (interchange.py,
    # process_worker_pool.py): installed next to this interpreter, which need not be on PATH when the
    # script is run as .venv/bin/python without activating the environment
    scripts = os.path.dirname(sys.executable)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join(filter(None, [scripts, os.environ.get("PATH")]))
    dfk = parsl.load(from_config.Config(executors=[ex], run_dir=rundir, usage_tracking=0))
    try:
        app().result()  # the workers are up
        start = time.perf_counter()
        for future in [app() for _ in range(n)]:
            future.result()
        return time.perf_counter() - start
    finally:
        dfk.cleanup()
        parsl.clear()


# ------------------------------------------------------------------ the sandbox probe
def sandbox_cost(directory: Path, fresh: FreshExt4 | None = None, n: int = 300) -> float:
    """Microseconds to create one sandbox-like directory with two empty files in ``directory`` (kept), or in
    a new file system of ``fresh``."""
    if fresh is not None:
        with fresh.mounted() as mount_point:
            return sandbox_cost(mount_point, None, n)
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=directory))
    start = time.perf_counter()
    for i in range(n):
        sandbox = probe / str(i)
        sandbox.mkdir()
        for name in ("stdout", "stderr"):
            os.close(os.open(sandbox / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    return (time.perf_counter() - start) / n * 1e6


@contextlib.contextmanager
def sandbox_place(directory: Path, fresh: FreshExt4 | None) -> Iterator[Path]:
    """Where one run's sandboxes go: ``directory``, or the root of a new file system of ``fresh`` (released
    when the run is over)."""
    if fresh is None:
        yield directory
        return
    with fresh.mounted() as mount_point:
        yield mount_point


def in_place(run: Callable[[int, Path], float | None], n: int, directory: Path,
             fresh: FreshExt4 | None) -> float | None:
    """``run(n, place)`` with the place of :func:`sandbox_place`."""
    with sandbox_place(directory, fresh) as place:
        return run(n, place)


def file_system(path: Path) -> str:
    """The type of the file system holding ``path``."""
    return mount_of(path)[1]


# ------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--backends", default="redis,sqlite")
    parser.add_argument("--modes", default="bulk,one-by-one")
    parser.add_argument("--peers", default="xargs,dask,hyperqueue,parsl",
                        help="peers to run beside pilot-data (xargs always runs: it is the reference)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; each runner once per round, medians shown")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    parser.add_argument("--settle", type=float, default=120.0,
                        help="seconds to wait, at most, for sandbox creation to be cheap again before the runs "
                             "(after a clean-up of many files near --workdir)")
    parser.add_argument("--cpu-binding", default="auto",
                        help="the pilot's cpu_binding (auto, cores, none); several, comma-separated, run "
                        "pilot-data once with each in every round (auto binds here: 2 slots on 2 CPUs)")
    parser.add_argument("--phases", action="store_true",
                        help="time each phase of the agent's slot cycle (benchmarks/phases/sitecustomize.py)")
    default_workdir = Path("/var/tmp") if os.access("/var/tmp", os.W_OK) else Path(tempfile.gettempdir())
    parser.add_argument("--workdir", type=Path, default=default_workdir,
                        help=f"where the pilots' working directories (the sandboxes) go (default: {default_workdir})")
    parser.add_argument("--fresh-fs", action="store_true",
                        help="run each pilot-data and HyperQueue measurement in a new ext4 made under --workdir "
                             "(root; see benchmarks/_freshfs.py)")
    args = parser.parse_args()
    n = args.n
    fresh: FreshExt4 | None = None
    if args.fresh_fs:
        try:
            fresh = FreshExt4(args.workdir, FRESH_FS_SIZE, inodes=4 * n)  # a sandbox is three inodes
        except FreshFsError as exc:
            parser.error(str(exc))
    peers = set(args.peers.split(",")) | {"xargs"}
    bindings = args.cpu_binding.split(",")
    modes = PilotComputeDescription.CPU_BINDINGS
    if bad := [b for b in bindings if b not in modes]:
        parser.error(f"--cpu-binding: {bad[0]!r} is not {', '.join(modes)}")
    rows: dict[str, Row] = {}

    def row(name: str, mode: str = "", note: str = "") -> Row:
        return rows.setdefault(name, Row(name, note=note, mode=mode))

    host = host_line()
    print(f"{n} x /bin/true, one pilot with 2 slots; {CORES} cores; load average {os.getloadavg()[0]:.2f} "
          f"at the start\n{host}", flush=True)
    load: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pdata-bench-") as tmp, \
            tempfile.TemporaryDirectory(prefix="pdata-bench-pilots-", dir=args.workdir) as pilots:
        tmpdir = Path(tmp)
        phase_dir = tmpdir / "phases"
        if args.phases:  # the agents inherit this environment (fork launcher): each writes <pid>.json as it stops
            phase_dir.mkdir()
            os.environ["PDATA_BENCH_PHASES"] = str(phase_dir)
            here = str(Path(__file__).resolve().parent / "phases")
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
        if fresh is not None:
            print(fresh.describe(), flush=True)
        before_sandbox = sandbox_cost(Path(pilots), fresh)
        settle_until = time.monotonic() + args.settle
        while before_sandbox > SLOW_SANDBOX and time.monotonic() < settle_until:
            print(f"a sandbox costs {before_sandbox:.0f} us in {args.workdir} now (files were deleted near it "
                  f"recently): waiting for the file system to settle (--settle {args.settle:g})", flush=True)
            time.sleep(SETTLE_STEP)  # what is waited for is the kernel forgetting the deletions: a probe is the poll
            before_sandbox = sandbox_cost(Path(pilots), fresh)
        if before_sandbox > SLOW_SANDBOX:
            print(f"warning: a sandbox costs {before_sandbox:.0f} us in {args.workdir} now (files were deleted near "
                  "it recently): the figures will measure the file system; wait, or use another --workdir",
                  flush=True)
        redis_server = None
        urls: dict[str, tuple[str, int | None]] = {}
        for backend in args.backends.split(","):
            if backend == "redis":
                if args.redis_url is None:
                    redis_server = servers.start_redis(tmpdir / "redis")
                    servers.wait_until(lambda: (tmpdir / "redis" / "redis.pid").exists(), 10, "redis pid file")
                    urls[backend] = (redis_server.url, redis_server.pid)
                else:
                    urls[backend] = (args.redis_url, None)
            else:
                urls[backend] = (f"sqlite:///{tmpdir / 'coord.sqlite'}", None)
        try:
            for rnd in range(args.repeat):
                load.append(os.getloadavg()[0])
                seconds, cpu = run_xargs(n)
                row("xargs -P2", note="exec limit: the reference").add(seconds, cpu)
                for backend, (url, pid) in urls.items():
                    for mode, binding in itertools.product(args.modes.split(","), bindings):
                        tag = f"{backend}-{mode}-{binding}-{rnd}"
                        with sandbox_place(Path(pilots) / tag, fresh) as place:
                            seconds, cpu, stored, agent = run_pilotdata(url, pid, n, mode, tmpdir / tag, place,
                                                                        binding)
                        name = f"pilot-data {backend} {mode}" + (f" ({binding})" if len(bindings) > 1 else "")
                        r = row(name, mode)
                        r.add(seconds, cpu)
                        if args.phases and agent is not None:
                            r.phases = read_phases(phase_dir / f"{agent}.json")
                        r.note = f"{stored} CU events in history" if stored == 4 * n else f"{stored} CU events (!)"
                        print(f"  round {rnd + 1}: {r.name}: {n / seconds:.0f}/s", flush=True)
                peer_runs: list[tuple[str, Callable[[], float | None], str]] = []
                if "dask" in peers:
                    peer_runs.append(("dask LocalCluster(2)", lambda: run_dask(n), "subprocess.run"))
                if "hyperqueue" in peers:
                    peer_runs.append(("hyperqueue LocalCluster",
                                      partial(in_place, run_hyperqueue, n, Path(pilots) / f"hq-{rnd}", fresh),
                                      "server + 2-core worker in-process; stdout/stderr files"))
                if "parsl" in peers:
                    peer_runs.append(("parsl HTEX(2)", lambda: run_parsl(n, tmpdir, "htex"), "python_app"))
                    peer_runs.append(("parsl ThreadPool(2)", lambda: run_parsl(n, tmpdir, "threads"), "bash_app"))
                for name, run, note in peer_runs:
                    took = run()
                    if took is None:
                        print(f"  {name}: not installed (pip install 'pilot-data[bench]')", flush=True)
                        continue
                    row(name, note=note).add(took)
        finally:
            if redis_server is not None:
                redis_server.stop()
        per_sandbox = sandbox_cost(Path(pilots), fresh)
        fs = "a new ext4 for each run" if fresh is not None else file_system(Path(pilots).resolve())
    report(rows, n, (before_sandbox, per_sandbox), fs, args.workdir, load, host)
    return 0


PHASES = ("start -> spawn", "spawn -> vfork", "vfork -> exec", "exec -> spawned", "spawned -> exited",
          "exited -> end", "end -> start")
"""The spans of ``--phases`` in a slot's cycle (see benchmarks/phases/sitecustomize.py)."""


def report(rows: dict[str, Row], n: int, per_sandbox: tuple[float, float], fs: str, workdir: Path,
           load: list[float], host: str) -> None:
    """Print the table, the targets and the per-CU profile."""
    xargs = rows["xargs -P2"]
    xargs_rate = n / xargs.median
    rounds = len(xargs.seconds)
    print(f"\n{n} x /bin/true, one pilot with 2 slots; medians of {rounds} round(s); load average "
          f"{statistics.median(load):.2f} (1 min, median at the round starts)\n{host}")
    print(f"sandboxes in {workdir} ({fs}): {per_sandbox[0]:.0f} us per mkdir + 2 file creates before the runs, "
          f"{per_sandbox[1]:.0f} us after them\n")
    print(f"{'runner':<34}{'tasks/s':>9}{'vs xargs':>10}  notes")
    for r in rows.values():
        rate = n / r.median
        note = r.note
        if r.mode:
            target = TARGETS[r.mode]
            ok = "met" if rate / xargs_rate >= target else "MISSED"
            note = f"target >= {target:.1f}x: {ok}; {note}"
        spread = f" ({n / max(r.seconds):.0f}-{n / min(r.seconds):.0f})" if len(r.seconds) > 1 else ""
        print(f"{r.name:<34}{rate:>9.0f}{rate / xargs_rate:>10.2f}  {note}{spread}")
    print(f"\nwhere the time goes: CPU microseconds per CU (medians), {CORES} cores; bound = {CORES} / CPU per CU")
    parts = ["agent", "CU processes", "redis-server", "client", "history writer"]
    print(f"{'runner':<34}" + "".join(f"{p:>15}" for p in parts) + f"{'total':>9}{'bound/s':>9}")
    xcpu = statistics.median(xargs.cpu["xargs and the processes"]) / n * 1e6
    print(f"{'xargs -P2':<34}{'':>15}{xcpu:>15.0f}" + " " * 45 + f"{xcpu:>9.0f}{CORES / xcpu * 1e6:>9.0f}")
    for r in rows.values():
        if not r.cpu:
            continue
        if r.name.startswith("xargs"):
            continue
        per = {p: statistics.median(v) / n * 1e6 for p, v in r.cpu.items()}
        total = sum(per.values())
        print(f"{r.name:<34}" + "".join(f"{per[p]:>15.0f}" if p in per else f"{'-':>15}" for p in parts)
              + f"{total:>9.0f}{CORES / total * 1e6:>9.0f}")
        target = TARGETS.get(r.mode, 0.0)
        if target and n / r.median / xargs_rate < target:
            need = CORES / (target * xargs_rate) * 1e6
            print(f"  {r.name}: the target needs at most {need:.0f} us of CPU per CU on {CORES} cores; "
                  f"it used {total:.0f} ({total - per.get('CU processes', 0):.0f} besides the CU processes)")
    phased = [r for r in rows.values() if r.phases]
    if phased:
        print(f"\nan agent slot's cycle, wall microseconds per CU, median / mean (last round; {CORES} slots "
              f"cycle at once: rate = {CORES} / mean cycle)")
        spans = [s for s in PHASES if any(s in r.phases for r in phased)]
        print(f"{'runner':<34}" + "".join(f"{s:>19}" for s in spans) + f"{'cycle':>13}")
        for r in phased:
            cells = [f"{r.phases[s]['p50']:.0f} / {r.phases[s]['mean']:.0f}" if s in r.phases else "-" for s in spans]
            cycle = sum(r.phases[s]["mean"] for s in spans if s in r.phases)
            print(f"{r.name:<34}" + "".join(f"{c:>19}" for c in cells) + f"{cycle:>13.0f}")


if __name__ == "__main__":
    raise SystemExit(main())
