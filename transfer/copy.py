"""The copy engine: many files in parallel, streamed, hashed on the way, published atomically.

:func:`copy_files` copies a list of DU-relative files from one fsspec filesystem root to another:

1. Every name is checked first (:mod:`transfer.paths`); an unsafe one raises
   :class:`~transfer.errors.UnsafePathError` before anything is written.
2. Each file takes the cheapest route (:mod:`transfer.fastpath`): a hard link (or symlink) on one
   local machine, a server-side copy inside one S3 endpoint, otherwise a stream. A linked source
   is still checked against the manifest: by its stat, if this process has hashed or written that
   very file since it last changed (:mod:`transfer.verified`), otherwise by reading it.
3. A stream reads chunks from the source and hashes each one -- in the manifest entry's algorithm,
   or ``algorithm`` (default sha256) for a file the manifest has no checksum for
   (:mod:`transfer.digests`) -- while the previous chunk is being written: one pass over the
   source, the read, the hash and the write overlapping. Between two local paths the chunks are
   small (:data:`LOCAL_CHUNK`, still in the CPU cache when hashed and written) and, with a hash
   cheaper than the copy (xxh128), read, hash and write run in one thread like ``cp``; a file of
   one chunk is read whole and checked before its destination is even created. Bytes go to an
   unnamed file (``O_TMPFILE``) or a part file beside the final name (``.<name>.part-<token>``)
   or, on an object store, to an upload that is not visible yet (:mod:`transfer.objectstore`).
   Larger files run on ``workers`` threads; files of one read between two local paths run on one
   thread, as ``cp -r`` does, unless that thread is found blocked in the file systems (:func:`_run_all`).
4. When the source is exhausted the size and checksum are compared with the manifest (when it has
   them) and the stored size with the bytes sent; a mismatch raises
   :class:`~transfer.errors.ChecksumMismatchError` and the unpublished data is removed, so
   nothing is visible. Otherwise the file is published by a link or rename (or the upload's commit).
5. Transient errors (:func:`~transfer.errors.is_transient`) are retried ``retries`` times with
   exponential back-off (``backoff * 2**attempt``, jittered); then, or on any other error, the
   copy stops: queued files are skipped, running ones abort at their next chunk, and a
   :class:`~transfer.errors.TransferError` names the file and URL (``errors`` lists every failure).

Files already published stay published when a later file fails (each one is whole and
verified); retrying the copy overwrites them atomically. Publishing does not ``fsync``: a killed
process never exposes a partial file, but a power cut may lose recently renamed ones.
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from transfer import fastpath
from transfer.digests import DEFAULT_ALGORITHM, cheap, check_algorithm, hash_bytes, new_hash
from transfer.endpoints import Chunk, Endpoint, LocalEndpoint, LocalWriter, Writer
from transfer.errors import ChecksumMismatchError, TransferError, TransientError, UnsafePathError, is_transient
from transfer.factory import endpoint_for
from transfer.manifest import FileEntry, StreamHasher, checked_entry, to_entries
from transfer.objectstore import ObjectEndpoint, same_s3_endpoint
from transfer.verified import VERIFIED, VerifiedStats, fs_clock_ns

__all__ = ["DEFAULT_CHUNK", "Progress", "TransferReport", "Verify", "copy_files"]

DEFAULT_CHUNK = 8 * 2**20
LOCAL_CHUNK = 256 * 2**10
"""Read size between two local paths: small enough that each chunk is still in the CPU cache when it
is hashed and written (8 MiB chunks made a local copy about 30% slower), large enough that the
per-chunk Python work stays under 2% of the time."""
RECORD_MIN = 2**20
"""Streamed local sources at least this large have their stat recorded with their checksum
(:mod:`transfer.verified`); smaller ones cost about as much to hash again as to look up."""
Progress = Callable[[int, int], None]
"""``progress(bytes_delta, files_done)``: bytes since the last call (negative when a failed attempt's
bytes are taken back before a retry, so the deltas always sum to the bytes delivered) and the number
of files completed so far. Calls are serialised; the callback need not be thread-safe."""
Verify = bool | Literal["full"]
LinkOption = bool | Literal["hard"]


@dataclass
class TransferReport:
    """What :func:`copy_files` did."""

    files: int
    """Files published."""
    bytes: int
    """Bytes of those files (linked and server-copied ones included)."""
    seconds: float
    """Wall time of the whole call."""
    entries: list[FileEntry] = field(default_factory=list)
    """Every file's (path, size, checksum, algorithm), in the order they were given."""
    methods: dict[str, int] = field(default_factory=dict)
    """Files per route: ``stream``, ``hardlink``, ``symlink``, ``server-copy``."""
    retries: int = 0
    """Attempts that failed transiently and were retried."""

    @property
    def fast_path(self) -> str | None:
        """The fast path(s) used (``"hardlink"``, ``"symlink"``, ``"server-copy"``, comma-joined), or None."""
        used = sorted(m for m in self.methods if m != "stream")
        return ",".join(used) or None

    @property
    def mb_per_s(self) -> float:
        """Throughput in MB/s (10**6 bytes)."""
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


class _Cancelled(Exception):
    """Another file failed; this one stops."""


@dataclass
class _Outcome:
    entry: FileEntry
    method: str
    retries: int


class _Copier:
    """State shared by the workers of one :func:`copy_files` call."""

    def __init__(self, src: Endpoint, dst: Endpoint, *, chunk_size: int, retries: int, backoff: float,
                 verify: Verify, progress: Progress | None, link: LinkOption, read_only: bool,
                 io_pool: ThreadPoolExecutor, algorithm: str = DEFAULT_ALGORITHM,
                 stat_cache: VerifiedStats | None = None) -> None:
        self.src, self.dst = src, dst
        self.chunk_size = chunk_size
        self.algorithm = algorithm
        self.stat_cache = stat_cache
        self.local_src = isinstance(src, LocalEndpoint)
        self.local_dst = isinstance(dst, LocalEndpoint)
        self.local = self.local_src and self.local_dst
        if isinstance(dst, LocalEndpoint):
            dst.stamp_writes = stat_cache is not None  # nothing records the files: no stamp, no stat to keep
        self.read_chunk = min(chunk_size, LOCAL_CHUNK) if self.local else chunk_size
        self.retries = retries
        self.backoff = backoff
        self.verify = verify
        self.user_progress = progress
        self.read_only = read_only
        self.io_pool = io_pool
        self.cancel = threading.Event()
        self._progress_lock = threading.Lock()
        self.files_done = 0
        self.link = bool(link) and self.local
        self.allow_symlink = link is True
        self._dst_dev: int | None = None
        self.server_copy = (
            isinstance(src, ObjectEndpoint) and isinstance(dst, ObjectEndpoint) and same_s3_endpoint(src.fs, dst.fs)
        )

    # ----------------------------------------------------------------- progress
    def progress(self, nbytes: int, file_done: bool = False) -> None:
        if self.user_progress is None:
            return  # the count is only ever handed to the callback
        with self._progress_lock:
            if file_done:
                self.files_done += 1
            self.user_progress(nbytes, self.files_done)

    # ----------------------------------------------------------------- one file
    def run(self, entry: FileEntry) -> _Outcome:
        """Copy one file with retries; raise TransferError (or a subclass) when it cannot be done."""
        attempt = 0
        while True:
            if self.cancel.is_set():
                raise _Cancelled()
            reported = [0]
            try:
                done, method = self._attempt(entry, reported)
                self.progress(0, file_done=True)
                return _Outcome(done, method, attempt)
            except (_Cancelled, ChecksumMismatchError, UnsafePathError):
                self._take_back(reported)
                raise
            except Exception as exc:
                self._take_back(reported)
                if self.cancel.is_set():
                    raise _Cancelled() from exc
                if not is_transient(exc) or attempt >= self.retries:
                    kind = "transient " if is_transient(exc) else ""
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise TransferError(
                        f"copy of {entry.path!r} from {self.src.url(entry.path)} to {self.dst.url(entry.path)} "
                        f"failed{tries}: {kind}{type(exc).__name__}: {exc}",
                        path=entry.path, url=self.src.url(entry.path), attempts=attempt + 1,
                    ) from exc
                self.src.on_transient_error()
                self.dst.on_transient_error()
                delay = self.backoff * (2**attempt) * random.uniform(0.5, 1.5)
                attempt += 1
                if self.cancel.wait(delay):
                    raise _Cancelled() from exc

    def _take_back(self, reported: list[int]) -> None:
        if reported[0]:
            self.progress(-reported[0])
            reported[0] = 0

    def _attempt(self, entry: FileEntry, reported: list[int]) -> tuple[FileEntry, str]:
        if self.link:
            linked = self._try_link(entry, reported)
            if linked is not None:
                return linked
        if self.server_copy:
            copied = self._try_server_copy(entry, reported)
            if copied is not None:
                return copied
        return self._stream(entry, reported), "stream"

    # ----------------------------------------------------------------- fast paths
    def _try_link(self, entry: FileEntry, reported: list[int]) -> tuple[FileEntry, str] | None:
        assert isinstance(self.src, LocalEndpoint) and isinstance(self.dst, LocalEndpoint)
        before = self.src.stat(entry.path)
        if not self.allow_symlink and before.st_dev != self._destination_device():
            return None  # no hard link across file systems: stream, and hash the bytes only there
        size = before.st_size
        self._check_size(entry, size)
        algorithm = self._algorithm(entry)
        digest = entry.digest
        if digest is None or self.verify:  # no bytes move, but the source must still be what was verified
            digest = self._local_digest(entry, before, algorithm)
        mode = fastpath.local_link(self.src, self.dst, entry.path, allow_symlink=self.allow_symlink,
                                   read_only=self.read_only)
        if mode is None:
            return None
        if self.verify or self.stat_cache is not None:
            after = self.src.stat(entry.path)
            if (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns) != (
                    before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns):
                if self.dst.path(entry.path) != self.src.path(entry.path):
                    self.dst.remove(entry.path)  # unverified: do not leave it published
                raise TransientError(f"{self.src.url(entry.path)} changed while it was linked", path=entry.path)
            if self.stat_cache is not None:
                self.stat_cache.carry(before, after)  # the link (and chmod) changed only its ctime
        self.progress(size)
        reported[0] += size
        return checked_entry(entry.path, size, digest, algorithm), mode

    def _destination_device(self) -> int:
        """The device of the local destination root (of its nearest existing ancestor), looked up once."""
        if self._dst_dev is None:
            probe = self.dst.path("")
            while not os.path.exists(probe) and os.path.dirname(probe) != probe:
                probe = os.path.dirname(probe)
            self._dst_dev = os.stat(probe).st_dev
        return self._dst_dev

    def _local_digest(self, entry: FileEntry, st: os.stat_result, algorithm: str) -> str:
        """The checksum of local source ``entry`` (stat ``st``): remembered if ``st`` is unchanged, else read."""
        assert isinstance(self.src, LocalEndpoint)
        if self.stat_cache is not None:
            known = self.stat_cache.lookup(st, algorithm)
            if known is not None:
                return self._check_digest(entry, algorithm, known)
        hasher = StreamHasher(algorithm)
        since = fs_clock_ns()
        for chunk in self.src.iter_read(entry.path, entry.size, self.read_chunk):
            self._check_cancel()
            hasher.update(chunk)
        self._check_size(entry, hasher.size)
        digest = self._check_digest(entry, algorithm, hasher.hexdigest())
        if self.stat_cache is not None and _same_stamps(st, self.src.stat(entry.path)):
            self.stat_cache.record(st, algorithm, digest, since)
        return digest

    def _try_server_copy(self, entry: FileEntry, reported: list[int]) -> tuple[FileEntry, str] | None:
        assert isinstance(self.src, ObjectEndpoint) and isinstance(self.dst, ObjectEndpoint)
        if entry.size is not None:
            self._check_size(entry, self.src.size(entry.path))
        try:
            size = fastpath.server_side_copy(self.src, self.dst, entry.path)
        except PermissionError:
            return None  # e.g. the credentials may not read the source bucket directly: stream instead
        algorithm = self._algorithm(entry)
        digest = entry.digest
        try:
            self._check_size(entry, size)
            if digest is None or self.verify == "full":
                hasher = StreamHasher(algorithm)
                for chunk in self.dst.iter_read(entry.path, size, self.chunk_size):
                    self._check_cancel()
                    hasher.update(chunk)
                if hasher.size != size:
                    self._mismatch(entry, "size", size, hasher.size)
                digest = self._check_digest(entry, algorithm, hasher.hexdigest())
        except BaseException:
            self.dst.remove(entry.path)
            raise
        self.progress(size)
        reported[0] += size
        return checked_entry(entry.path, size, digest, algorithm), "server-copy"

    # ----------------------------------------------------------------- stream
    def _stream(self, entry: FileEntry, reported: list[int]) -> FileEntry:
        size_hint = entry.size
        algorithm = self._algorithm(entry)
        if self.local and size_hint is not None and size_hint <= self.read_chunk:
            return self._copy_small_local(entry, algorithm, reported)
        # a cheap hash between two local files: read, hash, write in this thread, as cp does; handing
        # chunks to another thread costs more than it overlaps. A costly one (sha256, blake3) hashes
        # here while another thread writes the previous chunk, in chunks large enough to pay the handoff.
        inline = self.local and cheap(algorithm)
        chunk_size = self.read_chunk if inline or not self.local else min(self.chunk_size, 4 * LOCAL_CHUNK)
        record_src = (self.stat_cache is not None and self.local_src and size_hint is not None
                      and size_hint >= RECORD_MIN)
        src_stat = self.src.stat(entry.path) if record_src else None  # type: ignore[attr-defined]
        since = fs_clock_ns()
        writer: Writer = self.dst.writer(entry.path, size_hint)
        pending: Future[None] | None = None
        hasher = StreamHasher(algorithm)
        try:
            for chunk in self.src.iter_read(entry.path, size_hint, chunk_size):
                self._check_cancel()
                if pending is not None:
                    pending.result()
                    pending = None
                if inline or len(chunk) < chunk_size:
                    writer.write(chunk)
                else:  # a big file: write this chunk while hashing it and reading the next
                    pending = self.io_pool.submit(writer.write, chunk)
                hasher.update(chunk)
                self.progress(len(chunk))
                reported[0] += len(chunk)
            if pending is not None:
                pending.result()
                pending = None
            writer.finish()
            self._check_size(entry, hasher.size)
            digest = self._check_digest(entry, algorithm, hasher.hexdigest())
            self._check_stored(entry, writer, hasher.size, digest)
            writer.publish()
        except BaseException:
            if pending is not None:
                try:
                    pending.result()
                except BaseException:  # the first error is the one raised below
                    pass
            writer.abort()
            raise
        if self.verify == "full" and not self.dst.renames:
            try:
                self._check_read_back(entry, digest, algorithm,
                                      self.dst.iter_read(entry.path, hasher.size, self.chunk_size))
            except BaseException:
                self.dst.remove(entry.path)
                raise
        if self.stat_cache is not None:
            if src_stat is not None and _same_stamps(src_stat, self.src.stat(entry.path)):  # type: ignore[attr-defined]
                self.stat_cache.record(src_stat, algorithm, digest, since)
            self._record_written(writer, algorithm, digest)
        return checked_entry(entry.path, hasher.size, digest, algorithm)

    def _copy_small_local(self, entry: FileEntry, algorithm: str, reported: list[int]) -> FileEntry:
        """A file of at most one chunk between two local paths: one read, checked before anything is created.

        The copy of a many-small-files DataUnit runs this once per file in one thread, so it is written to
        make few calls: the Python around a 4 KiB file's system calls was half of its cost before this
        path was shortened, a third after (``docs/benchmarks.md``, staging).
        """
        src, dst = self.src, self.dst
        assert isinstance(src, LocalEndpoint) and isinstance(dst, LocalEndpoint)
        data = src.read_small(entry.path, entry.size or 0)
        if self.cancel.is_set():
            raise _Cancelled()
        size = len(data)
        if entry.size is not None and entry.size != size:
            self._mismatch(entry, "size", entry.size, size)
        digest = hash_bytes(algorithm)(data)
        if self.verify and entry.digest is not None and entry.digest != digest:
            self._mismatch(entry, algorithm, entry.digest, digest)
        writer = dst.writer(entry.path, entry.size)
        try:
            if data:
                writer.write(data)  # a LocalWriter's finish() does nothing: not called
            self._check_stored(entry, writer, size, digest)
            writer.publish()
        except BaseException:
            writer.abort()
            raise
        self.progress(size)
        reported[0] += size
        if self.stat_cache is not None:
            self._record_written(writer, algorithm, digest)
        if entry.digest == digest and entry.size == size and entry.algorithm == algorithm:
            return entry  # the manifest's entry, verified: the report can carry it as it is
        return checked_entry(entry.path, size, digest, algorithm)

    def _check_stored(self, entry: FileEntry, writer: Writer, size: int, digest: str) -> None:
        """Before publishing: the stored size (``verify``) and the stored bytes (``verify="full"``)."""
        if self.verify:
            stored = writer.stored_size()
            if stored is not None and stored != size:
                self._mismatch(entry, "stored size", size, stored)
        if self.verify == "full":
            back = writer.read_back(self.chunk_size)
            if back is not None:
                self._check_read_back(entry, digest, self._algorithm(entry), back)

    def _record_written(self, writer: Writer, algorithm: str, digest: str) -> None:
        """Remember the checksum of a local file this copy wrote (its stat as published)."""
        if self.stat_cache is not None and isinstance(writer, LocalWriter) and writer.published is not None:
            self.stat_cache.record(writer.published, algorithm, digest, writer.published_since)

    def _check_read_back(self, entry: FileEntry, digest: str, algorithm: str, chunks: Iterable[Chunk]) -> None:
        hasher = StreamHasher(algorithm)
        for chunk in chunks:
            hasher.update(chunk)
        if hasher.hexdigest() != digest:
            self._mismatch(entry, f"{algorithm} of the written copy", digest, hasher.hexdigest())

    # ----------------------------------------------------------------- checks
    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise _Cancelled()

    def _check_size(self, entry: FileEntry, actual: int) -> None:
        if entry.size is not None and entry.size != actual:
            self._mismatch(entry, "size", entry.size, actual)

    def _algorithm(self, entry: FileEntry) -> str:
        """The manifest's algorithm for a file whose checksum it knows, else the copy's."""
        return entry.algorithm if entry.digest is not None else self.algorithm

    def _check_digest(self, entry: FileEntry, algorithm: str, actual: str) -> str:
        if self.verify and entry.digest is not None and entry.digest != actual:
            self._mismatch(entry, algorithm, entry.digest, actual)
        return actual

    def _mismatch(self, entry: FileEntry, what: str, expected: str | int, actual: str | int) -> None:
        raise ChecksumMismatchError(
            f"{what} of {entry.path!r} copied from {self.src.url(entry.path)} is {actual}, the manifest says "
            f"{expected}; nothing was published",
            path=entry.path, url=self.src.url(entry.path), expected=expected, actual=actual,
        )


def copy_files(
    src_fs: Any,
    src_root: str,
    dst_fs: Any,
    dst_root: str,
    entries_or_paths: Iterable[FileEntry | str | Mapping[str, Any]],
    *,
    workers: int = 8,
    chunk_size: int = DEFAULT_CHUNK,
    retries: int = 4,
    backoff: float = 0.2,
    verify: Verify = True,
    progress: Progress | None = None,
    link: LinkOption = True,
    read_only: bool = False,
    algorithm: str | None = None,
    stat_cache: VerifiedStats | None = VERIFIED,
) -> TransferReport:
    """Copy files ``src_root/<path>`` to ``dst_root/<path>`` between two fsspec filesystems.

    ``entries_or_paths``: :class:`FileEntry` objects (a manifest: size and checksum are then checked),
    manifest dicts, or plain relative names (nothing to check against; the report carries the
    sizes and checksums computed on the way). ``verify``: ``True`` compares with the manifest and
    checks the stored size before publishing -- linked files are hashed too (a local read), but
    server-side S3 copies only have their size checked, as hashing would mean downloading them --;
    ``"full"`` also reads every copy back (server-side copies included), ``False`` skips the
    comparisons. ``link``: ``True`` allows hard
    links with a symlink fallback between local paths, ``"hard"`` hard links only, ``False`` always
    copies bytes. ``read_only``: published local/SFTP files get mode ``a-w`` (for hard links that is
    the source's inode too). ``algorithm`` (:mod:`transfer.digests`; default sha256): the checksum
    computed for files whose entry has none -- an entry with a checksum is always checked in its own
    algorithm, and the report's entries name the algorithm of each. ``stat_cache``: where the
    checksums of local files are remembered with their stat (:mod:`transfer.verified`; None: never
    trust a stat, read every linked source). See the module docstring for the guarantees.

    Raises :class:`UnsafePathError` (nothing written), :class:`ChecksumMismatchError` (that file not
    published) or :class:`TransferError` (after retries; ``.errors`` lists every failed file).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    if chunk_size < 64 * 1024:
        raise ValueError(f"chunk_size must be at least 64 KiB, not {chunk_size}")
    if retries < 0 or backoff < 0:
        raise ValueError("retries and backoff must not be negative")
    started = time.monotonic()
    entries = to_entries(entries_or_paths)
    algorithm = check_algorithm(algorithm or DEFAULT_ALGORITHM)
    for name in {e.algorithm for e in entries if e.digest is not None} | (
            {algorithm} if any(e.digest is None for e in entries) else set()):
        new_hash(name)  # a missing library is a ValueError with the install hint, before anything is written
    src = endpoint_for(src_fs, src_root, workers=workers)
    dst = endpoint_for(dst_fs, dst_root, read_only=read_only, workers=workers)
    try:
        dst.check_destination([e.path for e in entries])
        if not entries:
            return TransferReport(0, 0, time.monotonic() - started)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="transfer-io") as io_pool:
            copier = _Copier(src, dst, chunk_size=chunk_size, retries=retries, backoff=backoff, verify=verify,
                             progress=progress, link=link, read_only=read_only, io_pool=io_pool,
                             algorithm=algorithm, stat_cache=stat_cache)
            outcomes = _run_all(copier, entries, _parallelism(src, dst, workers))
    finally:
        src.close()
        dst.close()
    methods: dict[str, int] = {}
    for o in outcomes:
        methods[o.method] = methods.get(o.method, 0) + 1
    done = [o.entry for o in outcomes]
    return TransferReport(
        files=len(done), bytes=sum(e.size or 0 for e in done), seconds=time.monotonic() - started,
        entries=done, methods=methods, retries=sum(o.retries for o in outcomes),
    )


def _same_stamps(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two stats of a file show no change in between (identity, size, mtime, ctime)."""
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (
        b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns, b.st_ctime_ns)


def _parallelism(src: Endpoint, dst: Endpoint, workers: int) -> int:
    """Workers to run.

    A file between two directories of one SFTP connection holds two of its channels. Local to
    local there is no latency to hide, only the kernel's directory and journal locks to fight
    over: more than two threads per core made 10,000 small files slower, not faster.
    """
    from transfer.sftpio import SFTPEndpoint

    if isinstance(src, SFTPEndpoint) and isinstance(dst, SFTPEndpoint) and src.pool is dst.pool:
        return max(1, min(workers, src.pool.limit // 2))
    if isinstance(src, LocalEndpoint) and isinstance(dst, LocalEndpoint):
        return max(1, min(workers, 2 * (os.cpu_count() or 1)))
    return workers


def _schedule(entries: list[FileEntry], small: Callable[[int], bool]) -> list[int]:
    """Order of work: the files that are not ``small`` first, largest first (they start early, small ones
    fill the gaps), then the small files taking their directories in turn, so parallel creates do not all
    queue on one directory's lock."""
    big = sorted((i for i in range(len(entries)) if not small(i)), key=lambda i: -(entries[i].size or 0))
    by_dir: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        if small(i):
            by_dir.setdefault(e.path.rpartition("/")[0], []).append(i)
    queues = list(by_dir.values())
    little: list[int] = []
    depth = 0
    total = sum(len(q) for q in queues)
    while len(little) < total:
        little.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return big + little


def _run_all(copier: _Copier, entries: list[FileEntry], workers: int) -> list[_Outcome]:
    """Run every copy on ``workers`` threads pulling from one queue; stop all at the first failure.

    Small files between two local paths (at most one read, :attr:`_Copier.read_chunk`) go to one thread
    first. Each costs a few system calls and some Python, and several threads copying them only pass the
    interpreter lock around (10,000 x 4 KiB to a fresh ext4 here: 59 us per file in one thread, 85 in two,
    101-115 in four; ``cp -r`` 43). That thread measures itself over windows of :data:`SERIAL_PROBE`
    files copied while no other file is: when, in two windows running, it spent more than
    :data:`BLOCKED_SHARE` of the time neither on a CPU nor waiting for one (blocked in the file systems:
    a parallel or network file system, where each create is a round trip), the other workers join in.
    """
    limit = copier.read_chunk
    is_small = [e.size is not None and e.size <= limit for e in entries]
    small = is_small.__getitem__

    jobs = collections.deque(_schedule(entries, small))  # the larger files first: all before any small one
    take = threading.Lock()
    errors: list[BaseException] = []
    results: dict[int, _Outcome] = {}
    threads: list[threading.Thread] = []
    probe = _SerialProbe(copier.local and workers > 1)

    def next_job() -> int | None:
        with take:
            if not jobs or (probe.serial and small(jobs[0]) and not probe.owns()):
                return None  # done, or the small files are one thread's (this one ends)
            i = jobs.popleft()
            if not small(i):
                probe.others += 1
            return i

    def work() -> None:
        while not copier.cancel.is_set():
            i = next_job()
            if i is None:
                return
            little = is_small[i]
            if little and probe.serial:
                probe.before(alone=not probe.others)
            try:
                results[i] = copier.run(entries[i])
            except _Cancelled:
                return
            except BaseException as exc:
                errors.append(exc)
                copier.cancel.set()
                return
            finally:
                if not little:
                    with take:
                        probe.others -= 1
            if little and probe.serial and probe.after():
                start(workers - 1)  # the file systems make it wait: copy the rest in parallel

    def start(n: int) -> None:
        for _ in range(n):
            t = threading.Thread(target=work, name=f"transfer-{len(threads)}", daemon=True)
            threads.append(t)
            t.start()

    def join_all() -> None:
        k = 0
        while k < len(threads):  # a thread may start more before it ends: they are appended
            threads[k].join()
            k += 1

    start(min(workers, len(entries)))
    try:
        join_all()
    except BaseException:  # KeyboardInterrupt in the caller: stop the workers, then let it through
        copier.cancel.set()
        join_all()
        raise
    if errors:
        first = errors[0]
        if isinstance(first, TransferError):
            first.errors = errors
            if len(errors) > 1:
                first.args = (f"{first.args[0]} (and {len(errors) - 1} more failed files)",)
        raise first
    return [results[i] for i in range(len(entries))]


SERIAL_PROBE = 64
"""Small local files in one window of the one thread's measurement (:func:`_run_all`)."""
BLOCKED_SHARE = 0.5
"""The share of a window's wall time that thread may spend blocked before a strike (two in a row: parallel)."""
_SCHEDSTAT = "/proc/thread-self/schedstat"


def _runqueue_seconds() -> float:
    """Seconds the calling thread has waited for a CPU (Linux's schedstat; 0 where there is none)."""
    try:
        with open(_SCHEDSTAT, "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class _SerialProbe:
    """Whether small local files are copied by one thread, and the measurement that may end it.

    A window is :data:`SERIAL_PROBE` files the thread copied while no large file was being copied
    (others would share the CPUs and the interpreter lock). Its wall time minus the thread's CPU time
    and its wait for a CPU (a busy machine is not a slow file system) is the time the thread was blocked.
    """

    def __init__(self, serial: bool) -> None:
        self.serial = serial
        self.owner: int | None = None
        self.others = 0
        """Large files being copied now (the lock of :func:`_run_all` guards it)."""
        self.strikes = 0
        self._files = 0
        self._start: tuple[float, float, float] | None = None
        """Wall clock, thread CPU time and CPU wait when the current window began (None: no window)."""

    def owns(self) -> bool:
        """Whether the calling thread is (now) the one copying small files."""
        me = threading.get_ident()
        if self.owner is None:
            self.owner = me
        return self.owner == me

    def before(self, *, alone: bool) -> None:
        """A small file starts; ``alone``: no large file is being copied (else the window starts over)."""
        if not alone:
            self._files, self._start = 0, None
        elif self._start is None:
            self._start = (time.perf_counter(), time.thread_time(), _runqueue_seconds())

    def after(self) -> bool:
        """A small file is done; True once, when the thread was blocked in two windows running."""
        if self._start is None:
            return False
        self._files += 1
        if self._files < SERIAL_PROBE:
            return False
        wall0, cpu0, queue0 = self._start
        wall = time.perf_counter() - wall0
        blocked = wall - (time.thread_time() - cpu0) - (_runqueue_seconds() - queue0)
        return self.window(wall, blocked)

    def window(self, wall: float, blocked: float) -> bool:
        """Judge one window (``blocked`` of ``wall`` seconds); True when the others are to join now."""
        self._files, self._start = 0, None
        self.strikes = self.strikes + 1 if blocked > BLOCKED_SHARE * wall else 0
        if self.strikes >= 2:
            self.serial = False
            return True
        return False
