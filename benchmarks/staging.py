"""Staging throughput: the transfer engine against the plain tools, on the same data, in one run.

Data sets: one big file (``--big-size``, default 1 GiB) and many small files (``--small-count``,
default 10,000, of ``--small-size`` bytes, default 4 KiB), made on ``--src-dir`` (default
``/dev/shm``, a tmpfs) and copied to fresh directories under ``--workdir`` (default the temp dir, on
disk): two file systems, as when a node stages a database from shared storage to local scratch.
The sftp and s3 routes take the first ``--remote-small-count`` (default 2,000) small files: with a
round trip per file, 10,000 would take minutes per round.

=============  ==========================================  ==========================================
route          plain tool                                  engine (``transfer.copy_files``)
=============  ==========================================  ==========================================
local          ``cp`` / ``cp -r``                          ``link=False``: a streamed copy, every byte
                                                           hashed and checked against the manifest,
                                                           one row per checksum algorithm
link           (the local ``cp`` figure)                   ``link=True``, same file system: the first
                                                           link hashes the source, a relink of a
                                                           verified file reads no byte (stat records)
sftp up/down   ``scp`` / ``scp -r`` (OpenSSH, loopback)    fsspec SFTPFileSystem on the same sshd
s3 up/down     boto3 ``upload_file``/``download_file``      s3fs on the same ``moto_server``
               (one call per file for the small set)
fetch          ``cp``                                      an agent's staged fetch of a 1 GiB DataUnit:
                                                           uploaded through the DataUnit layer to a
                                                           file:// PilotData on the source file system
                                                           (its default algorithm, then each other),
                                                           fetched into a pilot cache on disk by
                                                           ``PilotCache.ensure`` with the manifest read
                                                           back from its record, as the agent does
=============  ==========================================  ==========================================

The engine gets a manifest (size + checksum, computed beforehand, as a DataUnit has one) and
verifies every file; the plain tools verify nothing. Plain and engine runs alternate, in a rotating
order, ``--repeat`` rounds each; every run writes into a fresh directory (deleting 10,000 files
slows the next creates on ext4 for minutes, so those deletions wait until a measurement is over;
a big file is deleted before the next run, so that the runs do not fill the page cache) after an
``os.sync()``. Figures are medians, with the spread of the rounds; ``cpu`` is the CPU time of the
process doing the copy (engine: this process, every thread; cp: the child; boto3: this process), a
steadier figure than wall time on a machine whose other users come and go. With ``--fresh-fs`` (root),
every local run writes into a new ext4 of its own instead, made in an image file under ``--workdir`` and
loop-mounted (``benchmarks/_freshfs.py``), so that no run meets the deletions of another, or of anybody
else on the machine.

Targets (issue 14): local 1 GiB >= 0.8x cp with an xxh128 manifest (and the agent's fetch of a 1 GiB
DataUnit recorded with the DataUnit layer's default, blake3); 10,000 small files >= 0.5x
cp -r; a relink of a verified DataUnit reads no byte; S3 upload of 1 GiB >= 0.9x boto3, download
>= 1x, small files > 1x both ways. Where one is missed the run prints what limits it.

    python benchmarks/staging.py [--big-size 1G] [--small-count 10000] [--routes local,link,fetch,sftp,s3]
    python benchmarks/staging.py --routes local --repeat 9          # more rounds on a busy machine
    python benchmarks/staging.py --routes local --fresh-fs          # each local run on a new ext4
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsspec.implementations.local import LocalFileSystem

from benchmarks._freshfs import FreshExt4, FreshFsError, mount_of
from benchmarks._host import host_line
from tests import servers
from transfer import FileEntry, VerifiedStats, copy_files
from transfer.digests import available, new_hash

BLOCK = 16 * 2**20
ALGORITHMS = [a for a in ("xxh128", "blake3", "sha256") if available(a)]


def parse_size(text: str) -> int:
    """``1G``, ``300M``, ``64K`` or bytes."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def median(values: list[float]) -> float:
    """The median (the mean of the middle two for an even count)."""
    return statistics.median(values)


@dataclass
class Run:
    """One timed call: wall seconds and the copying process's CPU seconds (and a server's, if any)."""

    wall: float
    cpu: float
    server_cpu: float = 0.0


@dataclass
class Result:
    """One engine variant measured against the plain tool."""

    route: str
    data: str
    plain: str
    engine: str
    nbytes: int
    plain_runs: list[Run]
    engine_runs: list[Run]
    target: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """plain median time / engine median time (= engine MB/s / plain MB/s)."""
        if not self.plain_runs:
            return None
        return median([r.wall for r in self.plain_runs]) / median([r.wall for r in self.engine_runs])

    @property
    def cpu_ratio(self) -> float | None:
        """plain median CPU / engine median CPU."""
        if not self.plain_runs:
            return None
        engine = median([r.cpu for r in self.engine_runs])
        return median([r.cpu for r in self.plain_runs]) / engine if engine > 0 else None

    @property
    def met(self) -> bool | None:
        """Whether the ratio meets the target (None: no target)."""
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target

    def row(self) -> str:
        """A table row."""
        mb = self.nbytes / 1e6

        def rate(runs: list[Run]) -> str:
            if not runs:
                return f"{'-':>22}"
            walls = [r.wall for r in runs]
            spec = ".0f" if mb / median(walls) >= 100 else ".1f"
            return f"{mb / median(walls):8{spec}} ({mb / max(walls):5{spec}}-{mb / min(walls):5{spec}})"

        ratio = f"{self.ratio:5.2f}x" if self.ratio is not None else f"{'-':>6}"
        cpu = f"{self.cpu_ratio:5.2f}x" if self.cpu_ratio is not None else f"{'-':>6}"
        target = f">= {self.target:.1f}x {'OK' if self.met else 'MISS'}" if self.target is not None else ""
        return (f"{self.route:<10} {self.data:<14} {self.plain:<20} {rate(self.plain_runs)} {self.engine:<24} "
                f"{rate(self.engine_runs)} {ratio} {cpu}  {target}")


def header() -> str:
    """The table header."""
    return (f"{'route':<10} {'data':<14} {'plain tool':<20} {'MB/s median (range)':>22} {'engine':<24} "
            f"{'MB/s median (range)':>22} {'ratio':>6} {'cpu':>6}  target\n" + "-" * 150)


class Clock:
    """Wall and CPU time of one call; CPU of this process, of its children, or of a server process."""

    def __init__(self, child: bool = False, server_pid: int | None = None) -> None:
        self.child = child
        self.server_pid = server_pid

    def _cpu(self) -> float:
        who = resource.RUSAGE_CHILDREN if self.child else resource.RUSAGE_SELF
        r = resource.getrusage(who)
        return r.ru_utime + r.ru_stime

    def __call__(self, fn: Callable[[], Any]) -> Run:
        s0 = process_cpu(self.server_pid) if self.server_pid else 0.0
        c0, t0 = self._cpu(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - t0, self._cpu() - c0
        s1 = process_cpu(self.server_pid) if self.server_pid else 0.0
        return Run(wall, cpu, s1 - s0)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) that process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Destinations:
    """Fresh directories under one parent.

    Many small files are removed together when a measurement is over (removing 10,000 files slows
    the next creates on ext4 for minutes); a big file is removed before the next run starts, so that
    the runs do not fill the page cache and make later ones pay for reclaiming it.
    """

    def __init__(self, parent: Path) -> None:
        self.parent = parent
        self.n = 0
        self.big = False

    def __call__(self) -> Path:
        if self.big:
            self.clear()
        self.n += 1
        path = self.parent / f"run-{self.n}"
        path.mkdir(parents=True)
        return path

    def clear(self) -> None:
        shutil.rmtree(self.parent, ignore_errors=True)


class FreshDestinations(Destinations):
    """The root of a new file system for each run (``--fresh-fs``); the previous one is released first."""

    def __init__(self, fresh: FreshExt4) -> None:
        super().__init__(fresh.under)
        self.fresh = fresh

    def __call__(self) -> Path:
        self.fresh.close()
        self.n += 1
        return self.fresh.make()

    def clear(self) -> None:
        self.fresh.close()


def interleaved(repeat: int, budget: float, plain: tuple[Callable[[Path], Any], Clock] | None,
                engines: list[tuple[Callable[[Path], Any], Clock]],
                dests: Destinations) -> tuple[list[Run], list[list[Run]]]:
    """``repeat`` rounds of the plain tool and every engine variant, the order rotating each round.

    Each call gets a fresh destination and starts after an ``os.sync()``. No new round starts after
    ``budget`` seconds once three rounds are done.
    """
    calls: list[tuple[Callable[[Path], Any], Clock]] = ([plain] if plain else []) + engines
    runs: list[list[Run]] = [[] for _ in calls]
    started = time.monotonic()
    for round_no in range(repeat):
        if round_no >= 3 and time.monotonic() - started > budget:
            break
        shift = round_no % len(calls)
        for i in list(range(shift, len(calls))) + list(range(shift)):
            fn, clock = calls[i]
            dest = dests()
            os.sync()
            runs[i].append(clock(partial(fn, dest)))
    dests.clear()
    os.sync()
    return (runs[0] if plain else []), (runs[1:] if plain else runs)


# ====================================================================== data
def make_data(root: Path, big_size: int, small_count: int, small_size: int) -> dict[str, dict[str, list[FileEntry]]]:
    """The big file and the small files under ``root``; their manifests in every available algorithm."""
    big_dir, small_dir = root / "big", root / "small"
    big_dir.mkdir(parents=True)
    block = os.urandom(BLOCK)
    hashers = {a: new_hash(a) for a in ALGORITHMS}
    with open(big_dir / "big.bin", "wb") as f:
        left = big_size
        while left:
            piece = block[: min(left, BLOCK)]
            f.write(piece)
            for h in hashers.values():
                h.update(piece)
            left -= len(piece)
    manifests: dict[str, dict[str, list[FileEntry]]] = {
        "big": {a: [FileEntry("big.bin", big_size, h.hexdigest(), a)] for a, h in hashers.items()},
        "small": {a: [] for a in ALGORITHMS},
    }
    for i in range(small_count):
        rel = f"d{i // 1000:02d}/f{i:05d}.dat"
        data = os.urandom(small_size)
        (small_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (small_dir / rel).write_bytes(data)
        for a in ALGORITHMS:
            h = new_hash(a)
            h.update(data)
            manifests["small"][a].append(FileEntry(rel, small_size, h.hexdigest(), a))
    return manifests


def fs_type(path: Path) -> str:
    """The file system type ``path`` is on."""
    return mount_of(path)[1]


# ====================================================================== limits
def hash_speed(algorithm: str, seconds: float = 0.5) -> float:
    """MB/s of one thread hashing an in-memory 256 KiB buffer (the engine's local chunk) over and over."""
    buf = os.urandom(256 * 2**10)
    h = new_hash(algorithm)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(64):
            h.update(buf)
        n += 64
    return n * len(buf) / 1e6 / (time.perf_counter() - start)


def syscall_floor(src: Path, names: list[str], dest: Path) -> float:
    """Seconds per file of the engine's system calls alone, in a tight loop (no checks, no threads):
    open/read/close the source, O_TMPFILE + write + linkat the destination. The paths are joined before
    the clock starts (a pathlib join per file cost as much as the calls on a slow host)."""
    paths = [(os.path.join(src, name), os.path.join(dest, name)) for name in names]
    start = time.perf_counter()
    made: set[str] = set()
    for source, target in paths:
        fd = os.open(source, os.O_RDONLY)
        data = os.read(fd, 1 << 20)
        os.close(fd)
        parent = os.path.dirname(target)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        out = os.open(parent, os.O_RDWR | os.O_TMPFILE, 0o666)
        os.write(out, data)
        os.link(f"/proc/self/fd/{out}", target, src_dir_fd=out)
        os.close(out)
    return (time.perf_counter() - start) / len(names)


def explain_local_big(result: Result, speeds: dict[str, float]) -> None:
    """Why a verified copy of one big file cannot beat cp by more than its hash allows."""
    algorithm = result.engine.split()[0]
    plain_mb = result.nbytes / 1e6 / median([r.wall for r in result.plain_runs])
    hash_mb = speeds[algorithm]
    serial = 1 / (1 / plain_mb + 1 / hash_mb)
    result.notes.append(
        f"{algorithm} hashes {hash_mb:,.0f} MB/s on one core (cp copied {plain_mb:,.0f} MB/s): one thread doing both "
        f"reaches {serial:,.0f} MB/s ({serial / plain_mb:.2f}x cp); hashing in a second thread can reach "
        f"min(cp, hash) = {min(plain_mb, hash_mb):,.0f} MB/s ({min(plain_mb, hash_mb) / plain_mb:.2f}x) only while "
        f"the second core is free (load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


def explain_small(result: Result, floor: float, count: int) -> None:
    """Where a small file's time goes: the kernel's share (the syscall floor) and the rest."""
    engine_cpu = median([r.cpu for r in result.engine_runs]) / count * 1e6
    plain_cpu = median([r.cpu for r in result.plain_runs]) / count * 1e6
    result.notes.append(
        f"per file: cp -r {plain_cpu:.0f} us CPU, engine {engine_cpu:.0f} us CPU, of which the engine's system "
        f"calls alone (read the source, O_TMPFILE + write + linkat) take {floor * 1e6:.0f} us in a tight loop; the "
        f"rest is the Python around them (manifest checks, hashing, threads)")


def explain_s3(result: Result) -> None:
    """How the client's and moto_server's CPU compare."""
    gib = result.nbytes / 2**30
    p_cli = median([r.cpu for r in result.plain_runs]) / gib
    e_cli = median([r.cpu for r in result.engine_runs]) / gib
    p_srv = median([r.server_cpu for r in result.plain_runs]) / gib
    e_srv = median([r.server_cpu for r in result.engine_runs]) / gib
    why = (f"moto_server (one Python process) spends {e_srv / e_cli:.0f}x the engine's CPU on every byte, so on "
           f"{os.cpu_count()} shared cores the server, not the client, sets the pace" if e_srv > 2 * e_cli else
           f"the client's CPU decides here: engine/boto3 = {e_cli / p_cli:.2f}")
    result.notes.append(
        f"CPU per GiB: boto3 {p_cli:.2f} s + moto_server {p_srv:.2f} s; engine {e_cli:.2f} s + moto_server "
        f"{e_srv:.2f} s. {why}; each round's figure moves with whatever else runs (load average now "
        f"{os.getloadavg()[0]:.1f})")


# ====================================================================== routes
def measure_links(kind: str, s: Path, manifest: dict[str, list[FileEntry]], nbytes: int, dests: Destinations,
                  measure: Callable[..., list[Result]], kw: dict[str, Any]) -> None:
    """First links (each with empty stat records: the source is hashed) against relinks of a verified copy.

    The relinks use their own copy of the source, and their links stay until the measurement is over:
    making or removing a hard link anywhere else changes the inode's ctime, which invalidates a
    record (the engine carries its records only across its own links).
    """
    local = LocalFileSystem()
    a = "xxh128" if "xxh128" in ALGORITHMS else "sha256"
    verified = s.with_name(f"{s.name}-verified")
    shutil.copytree(s, verified)
    records = VerifiedStats()
    copy_files(local, str(verified), local, str(dests()), manifest[a], stat_cache=records, **kw)  # verifies once

    def first(dest: Path) -> None:
        copy_files(local, str(s), local, str(dest), manifest[a], stat_cache=VerifiedStats(), **kw)

    def again(dest: Path) -> None:
        copy_files(local, str(verified), local, str(dest), manifest[a], stat_cache=records, **kw)

    hits = records.hits
    try:
        rows = measure("link", kind, "-", None, [(f"{a} first link (hash)", first, Clock()),
                                                 (f"{a} relink (stat only)", again, Clock())], dests)
    finally:
        shutil.rmtree(verified, ignore_errors=True)
    n_files, relinks = len(manifest[a]), len(rows[1].engine_runs)
    answered = records.hits - hits
    read = (relinks * n_files - answered) * (nbytes // n_files)
    rate = n_files / median([r.wall for r in rows[1].engine_runs])
    rows[1].notes.append(
        f"{answered} of {relinks * n_files} relinked files answered from stat records, {read:,} bytes read "
        f"(a first link reads all {nbytes:,}); {rate:,.0f} files/s: O(files)")
    if read:
        rows[1].notes.append("MISS: a relink read bytes")


def measure_fetch(s: Path, pd_root: Path, work: Path, dests: Destinations,
                  measure: Callable[..., list[Result]], kw: dict[str, Any]) -> None:
    """An agent's staged fetch of the big DataUnit, per algorithm the DataUnit layer can record, against cp.

    The DataUnit is uploaded through :class:`pilotdata.data.ReplicaManager` (so its record holds what the
    layer writes) to a file:// PilotData on the source file system, and fetched the way
    ``agent/staging.py`` does: manifest from the record (``to_transfer_entries(du_entries(...))``), cache
    key, ``PilotCache.ensure`` into a cache on disk (another file system: no link, every byte copied and
    checked). The verified-stat records are dropped before each fetch (an agent is a new process).

    ``PilotCache``'s default ``link=True`` -- what the agent's node cache uses today -- does not copy
    across file systems: it makes a symlink into the store after reading the file once to check it.
    That is measured too (one row, the default algorithm), but the target is for the copy
    (``link="hard"``: a hard link on one file system, else every byte copied), which is what filling a
    node-local cache from shared storage means.
    """
    from pilotdata.data import ReplicaManager, default_checksum, to_transfer_entries
    from pilotdata.descriptions import DataUnitDescription
    from pilotdata.records import du_entries
    from pilotdata.services.pilot_data import PilotDataService
    from pilotdata.session import Session
    from transfer import VERIFIED, PilotCache, cache_key
    from transfer.copy import LinkOption

    default = default_checksum()
    session = Session(f"sqlite:///{work / 'fetch.sqlite'}", namespace="bench")
    try:
        pd = PilotDataService(session=session).create_pilot({"service_url": f"file://{pd_root}"}).get_url()
        store = ReplicaManager(session.coord).store(pd)
        for a in [default, *(x for x in ALGORITHMS if x != default)]:
            ops = ReplicaManager(session.coord, checksum=a, workers=kw["workers"])
            du = ops.register(DataUnitDescription(file_urls=(str(s / "big.bin"),)))
            ops.upload(du, pd)
            entries = to_transfer_entries(du_entries(ops.record(du)))
            key = cache_key(du, entries)

            def fetch(dest: Path, du: str = du, entries: list[FileEntry] = entries, key: str = key,
                      link: LinkOption = "hard") -> None:
                VERIFIED.clear()
                cache = PilotCache(dest, workers=kw["workers"], link=link)
                cache.ensure(key, store.fs, store.path(du), entries)

            variants: list[tuple[str, Callable[[Path], Any], Clock]] = [
                (f"{a} copy" + (" (default)" if a == default else ""), fetch, Clock())]
            if a == default:  # what PilotCache's default (link=True) does across file systems: a symlink
                variants.append((f"{a} symlink (link=True)", partial(fetch, link=True), Clock()))
            for row in measure("fetch", "big", "cp", (partial(cp_file, src=s / "big.bin"), Clock(child=True)),
                               variants, dests):
                if (row.met is False or a == "sha256") and "copy" in row.engine:
                    explain_local_big(row, {x: hash_speed(x) for x in ALGORITHMS})
            ops.remove(du)
    finally:
        session.close()


def cp_file(dest: Path, *, src: Path) -> None:
    """``cp`` of one file into ``dest``."""
    subprocess.run(["cp", str(src), str(dest)], check=True)


def run(args: argparse.Namespace) -> list[Result]:
    """Every selected measurement."""
    src_parent = Path(args.src_dir) if args.src_dir else Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="pd-staging-", dir=args.workdir))
    src = Path(tempfile.mkdtemp(prefix="pd-staging-src-", dir=src_parent))
    results: list[Result] = []
    started: list[Any] = []
    local = LocalFileSystem()
    routes = set(args.routes.split(","))
    kw = {"workers": args.workers}
    try:
        where = f"{work} ({fs_type(work)})" + ("; local copies each to a new ext4" if args.fresh else "")
        print(f"making data in {src} ({fs_type(src)}); copies go to {where} ...", flush=True)
        manifests = make_data(src, args.big_size, args.small_count, args.small_size)
        remote_small = "small"
        if args.remote_small_count < args.small_count:  # a round trip per file: a subset keeps rounds short
            remote_small = "small-remote"
            manifests[remote_small] = {a: m[: args.remote_small_count] for a, m in manifests["small"].items()}
            for e in manifests[remote_small][ALGORITHMS[0]]:
                (src / remote_small / e.path).parent.mkdir(parents=True, exist_ok=True)
                os.link(src / "small" / e.path, src / remote_small / e.path)
        sizes = {k: sum(e.size or 0 for e in v[ALGORITHMS[0]]) for k, v in manifests.items()}
        labels = {k: f"{len(v[ALGORITHMS[0]])} x {args.small_size / 1024:.0f} KiB" for k, v in manifests.items()}
        labels["big"] = f"1 x {args.big_size / 2**20:.0f} MiB"
        targets = {("local", "big", "xxh128"): 0.8, ("local", "small", "xxh128"): 0.5, ("fetch", "big", "blake3"): 0.8,
                   ("s3 up", "big", "xxh128"): 0.9, ("s3 down", "big", "xxh128"): 1.0,
                   ("s3 up", "small", "xxh128"): 1.0, ("s3 down", "small", "xxh128"): 1.0}
        host = host_line()
        print(f"(cpus: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}; algorithms: "
              f"{', '.join(ALGORITHMS)})\n{host}", flush=True)
        print(header(), flush=True)

        def measure(route: str, kind: str, plain_name: str, plain: tuple[Callable[[Path], Any], Clock] | None,
                    variants: list[tuple[str, Callable[[Path], Any], Clock]], dests: Destinations) -> list[Result]:
            dests.big = kind == "big" and route != "link"  # removing a link changes the source's ctime
            plain_runs, engine_runs = interleaved(args.repeat, args.budget, plain,
                                                  [(fn, clock) for _, fn, clock in variants], dests)
            out = []
            for (label, _, _), runs in zip(variants, engine_runs):
                algorithm = label.split()[0]
                out.append(Result(route, labels[kind], plain_name, label, sizes[kind], plain_runs, runs,
                                  targets.get((route, kind.split("-")[0], algorithm))))
                print(out[-1].row(), flush=True)
            results.extend(out)
            return out

        algorithms = ALGORITHMS if args.all_algorithms else [a for a in ALGORITHMS if a in ("xxh128", "sha256")]
        if routes & {"local", "link"}:
            dests = FreshDestinations(args.fresh) if args.fresh else Destinations(work / "local")
            for kind in ("big", "small"):
                s = src / kind

                def cp(dest: Path, s: Path = s) -> None:
                    subprocess.run(["cp", "-r", f"{s}/.", str(dest)], check=True)

                def engine(dest: Path, s: Path = s, kind: str = kind, a: str = "") -> None:
                    copy_files(local, str(s), local, str(dest), manifests[kind][a], link=False, stat_cache=None,
                               **kw)

                variants: list[tuple[str, Callable[[Path], Any], Clock]] = [
                    (f"{a} stream", partial(engine, a=a), Clock()) for a in algorithms]
                if "local" in routes:
                    rows = measure("local", kind, "cp" if kind == "big" else "cp -r", (cp, Clock(child=True)),
                                   variants, dests)
                    for r in rows:
                        if r.met is False or (kind == "big" and r.engine.startswith("sha256")):
                            if kind == "big":
                                explain_local_big(r, {a: hash_speed(a) for a in ALGORITHMS})
                            else:
                                names = [e.path for e in manifests[kind][ALGORITHMS[0]]][:1000]
                                explain_small(r, syscall_floor(s, names, dests()), len(manifests[kind]["sha256"]))
                                dests.clear()
                if "link" in routes:
                    measure_links(kind, s, manifests[kind], sizes[kind], Destinations(src_parent / f"{src.name}-links"),
                                  measure, kw)
        if "fetch" in routes:
            measure_fetch(src / "big", src_parent / f"{src.name}-pd", work, Destinations(work / "fetch"), measure, kw)
        if "sftp" in routes:
            sshd = servers.start_sshd(work / "sshd")
            started.append(sshd)
            fs = sftp_fs(sshd)
            copy_files(local, str(src / "big"), fs, str(work / "sftp-warm"), [], **kw)  # pool + rekey, untimed
            transport = fs.client.get_transport()
            print(f"(engine SSH cipher: {transport.remote_cipher}, scp: OpenSSH default)", flush=True)
            scp = ["scp", "-q", "-r", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={sshd.known_hosts}",
                   "-o", "StrictHostKeyChecking=yes", "-i", str(sshd.key_file), "-P", str(sshd.port)]
            remote = f"{sshd.user}@127.0.0.1"
            dests = Destinations(work / "sftp")
            for kind in ("big", remote_small):
                s = src / kind
                name = "scp" if kind == "big" else "scp -r"
                entries = manifests[kind]["sha256"]
                measure("sftp up", kind, name,
                        (partial(scp_up, scp=scp, src=s, remote=remote), Clock(child=True)),
                        [("sha256 stream", partial(copy_into, src_fs=local, src=str(s), dst_fs=fs, entries=entries,
                                                   kw=kw), Clock())],
                        dests)
                up = work / "sftp-remote"
                copy_files(local, str(s), fs, str(up), entries, **kw)  # the remote copy to download
                measure("sftp down", kind, name,
                        (partial(scp_down, scp=scp, remote_dir=up, remote=remote), Clock(child=True)),
                        [("sha256 stream", partial(copy_into, src_fs=fs, src=str(up), dst_fs=local, entries=entries,
                                                   kw=kw), Clock())],
                        dests)
                shutil.rmtree(up, ignore_errors=True)
            fs.client.close()
        if "s3" in routes:
            moto = servers.start_moto(work / "moto")
            started.append(moto)
            s3, client = s3_clients(moto)
            pid = moto.process.pid
            dests = Destinations(work / "s3")
            for kind in ("big", remote_small):
                s = src / kind
                bucket = f"bench-{kind.split('-')[0]}"
                client.create_bucket(Bucket=bucket)
                names = [e.path for e in manifests[kind]["sha256"]]
                plain_name = "boto3 upload_file" if kind == "big" else "boto3 upload_file xN"
                up_rows = measure(
                    "s3 up", kind, plain_name,
                    (partial(boto_up, client=client, src=s, bucket=bucket, names=names), Clock(server_pid=pid)),
                    [(f"{a} stream", partial(copy_to, src_fs=local, src=str(s), dst_fs=s3,
                                             target=f"{bucket}/engine-{a}", entries=manifests[kind][a], kw=kw),
                      Clock(server_pid=pid))
                     for a in algorithms], dests)
                plain_name = plain_name.replace("upload", "download")
                down_rows = measure(
                    "s3 down", kind, plain_name,
                    (partial(boto_down, client=client, bucket=bucket, names=names), Clock(server_pid=pid)),
                    [(f"{a} stream", partial(copy_into, src_fs=s3, src=f"{bucket}/engine-{a}", dst_fs=local,
                                             entries=manifests[kind][a], kw=kw), Clock(server_pid=pid))
                     for a in algorithms], dests)
                for r in up_rows + down_rows:
                    if kind == "big" and (r.met is False or r.engine.startswith("xxh128")):
                        explain_s3(r)
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(src_parent / f"{src.name}-links", ignore_errors=True)
        shutil.rmtree(src_parent / f"{src.name}-pd", ignore_errors=True)
    return results


def download(client: Any, bucket: str, key: str, dest: Path) -> None:
    """boto3 download_file, parents created."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    client.download_file(bucket, key, str(dest))


def sftp_fs(sshd: servers.SshServer) -> Any:
    """A host-key-checking fsspec SFTP filesystem on the benchmark's sshd."""
    from tests.transfer.conftest import sftp_fs as make

    return make(sshd)


def s3_clients(moto: servers.MotoServer) -> tuple[Any, Any]:
    """(s3fs filesystem, boto3 client) on the benchmark's moto_server."""
    import boto3
    import s3fs

    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **moto.storage_options())
    client = boto3.client("s3", endpoint_url=moto.endpoint_url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    return fs, client


def default_src_dir(need: int) -> str | None:
    """/dev/shm if it is a tmpfs with room for the data (plus a copy for the link route), else None."""
    shm = Path("/dev/shm")
    if shm.is_dir() and fs_type(shm) == "tmpfs":
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize > 2.2 * need:
            return str(shm)
    return None



def copy_into(dest: Path, *, src_fs: Any, src: str, dst_fs: Any, entries: list[FileEntry], kw: dict[str, Any]) -> None:
    """The engine's copy of ``entries`` from ``src`` into ``dest``."""
    copy_files(src_fs, src, dst_fs, str(dest), entries, **kw)


def copy_to(dest: Path, *, src_fs: Any, src: str, dst_fs: Any, target: str, entries: list[FileEntry],
            kw: dict[str, Any]) -> None:
    """The engine's copy of ``entries`` from ``src`` to ``target`` (an object-store prefix; ``dest`` unused)."""
    copy_files(src_fs, src, dst_fs, target, entries, **kw)


def scp_up(dest: Path, *, scp: list[str], src: Path, remote: str) -> None:
    """scp of every file of ``src`` into ``dest`` on the remote host."""
    subprocess.run([*scp, *sorted(str(p) for p in src.iterdir()), f"{remote}:{dest}/"], check=True)


def scp_down(dest: Path, *, scp: list[str], remote_dir: Path, remote: str) -> None:
    """scp of every file of ``remote_dir`` on the remote host into ``dest``."""
    subprocess.run([*scp, *[f"{remote}:{p}" for p in sorted(remote_dir.iterdir())], f"{dest}/"], check=True)


def boto_up(dest: Path, *, client: Any, src: Path, bucket: str, names: list[str]) -> None:
    """boto3 upload_file of every name (``dest`` unused)."""
    for n in names:
        client.upload_file(str(src / n), bucket, f"plain/{n}")


def boto_down(dest: Path, *, client: Any, bucket: str, names: list[str]) -> None:
    """boto3 download of every name into ``dest``."""
    for n in names:
        download(client, bucket, f"plain/{n}", dest / n)

def main() -> None:
    """Parse arguments, run, print the table again with the targets and the limits found."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-size", type=parse_size, default=2**30, help="size of the big file (default 1G)")
    parser.add_argument("--small-count", type=int, default=10_000, help="number of small files (default 10000)")
    parser.add_argument("--small-size", type=parse_size, default=4096, help="size of each small file (default 4K)")
    parser.add_argument("--remote-small-count", type=int, default=2_000,
                        help="small files for the sftp and s3 routes (a subset; default 2000)")
    parser.add_argument("--routes", default="local,link,fetch,sftp,s3",
                        help="comma-separated: local, link, fetch, sftp, s3")
    parser.add_argument("--workers", type=int, default=8, help="engine workers (default 8)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds per measurement, medians reported (default 5); no new round after --budget")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per measurement (default 120)")
    parser.add_argument("--all-algorithms", action="store_true", help="also measure blake3 (default: xxh128, sha256)")
    parser.add_argument("--src-dir", default=None,
                        help="where the data is made (default /dev/shm if a tmpfs with room, else the temp dir)")
    parser.add_argument("--workdir", default=None, help="where copies go (default: the temp dir)")
    parser.add_argument("--fresh-fs", action="store_true",
                        help="write each local run into a new ext4 made under --workdir (root; benchmarks/_freshfs.py)")
    args = parser.parse_args()
    if args.src_dir is None:
        args.src_dir = default_src_dir(args.big_size + args.small_count * args.small_size)
    args.fresh = None
    if args.fresh_fs:
        try:
            args.fresh = FreshExt4(Path(args.workdir or tempfile.gettempdir()),
                                   max(2 * 2**30, 2 * args.big_size + 2 * args.small_count * args.small_size),
                                   inodes=2 * args.small_count)
        except FreshFsError as exc:
            parser.error(str(exc))
        print(args.fresh.describe())
    if "xxh128" not in ALGORITHMS:
        print("note: xxhash is not installed (pip install 'pilot-data[fast-hash]'); the targets are for xxh128")
    threading.excepthook = lambda a: print(f"thread failed: {a.exc_value!r}", file=sys.stderr)
    try:
        results = run(args)
    finally:
        if args.fresh is not None:
            args.fresh.close()
    print(f"\n(load average at the end: {os.getloadavg()[0]:.1f}; ratio = engine MB/s / plain MB/s of the medians, "
          f"cpu = plain CPU / engine CPU)\n{host_line()}")
    print(header())
    for r in results:
        print(r.row())
    for r in results:
        for note in r.notes:
            print(f"- {r.route} {r.data} {r.engine}: {note}")
    misses = [r for r in results if r.met is False or "MISS: a relink read bytes" in r.notes]
    if misses:
        print("below target: " + ", ".join(f"{r.route} {r.data} {r.engine}" + (f" ({r.ratio:.2f}x)" if r.ratio else "")
                                           for r in misses))
    else:
        print("every target met")


if __name__ == "__main__":
    main()
