"""DataUnit lifecycle: register, upload, replicate, move, export, verify, remove; output publishing.

The boundary between ``pilotdata`` and the ``transfer`` engine: transfer errors are converted here
into :mod:`pilotdata.errors`. A DataUnit's record (kind ``du``) holds, as separate top-level keys so
concurrent writers (several agents publishing outputs into one DU) never overwrite each other:

* ``file:<relative path>`` -> ``{"size": int, "sha256": hex}``: the manifest, one key per file;
* ``replica:<pd id>`` -> ``{"status": "pending" | "complete" | "failed", "time": float, "reason"?}``.

Replica layout in a store: ``<pd root>/<du id>/<relative path>``. A DU whose every replica attempt
failed ends Failed with the reason, so nobody's ``wait()`` hangs.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

import transfer
from pilotdata.coordination import Coordination, EntityRecord, TransitionRequest
from pilotdata.descriptions import DataUnitDescription
from pilotdata.errors import (
    ChecksumMismatchError,
    DescriptionError,
    IllegalTransitionError,
    NotFoundError,
    PilotDataError,
    StoreError,
    TransferError,
    UnsafePathError,
)
from pilotdata.session import Session
from pilotdata.states import FINAL_STATES, DataUnitState, Kind
from pilotdata.stores import Store, open_store

log = logging.getLogger(__name__)

FILE_PREFIX = "file:"
REPLICA_PREFIX = "replica:"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DUFile:
    """One manifest entry of a DataUnit."""

    path: str
    size: int
    sha256: str


# ------------------------------------------------------------------ record helpers
def du_entries(record: EntityRecord) -> list[DUFile]:
    """The DataUnit's manifest, sorted by path."""
    out = [DUFile(k[len(FILE_PREFIX):], int(v["size"]), str(v["sha256"]))
           for k, v in record.data.items() if k.startswith(FILE_PREFIX) and v]
    return sorted(out, key=lambda e: e.path)


def replicas(record: EntityRecord) -> dict[str, dict[str, Any]]:
    """``{pd id: replica info}`` of a DataUnit record."""
    return {k[len(REPLICA_PREFIX):]: dict(v) for k, v in record.data.items()
            if k.startswith(REPLICA_PREFIX) and v}


def complete_replicas(record: EntityRecord) -> list[str]:
    """PD ids holding a complete, verified replica."""
    return sorted(pd for pd, info in replicas(record).items() if info.get("status") == "complete")


def du_size(record: EntityRecord) -> int:
    """Total bytes of the manifest."""
    return sum(e.size for e in du_entries(record))


def _entries_patch(entries: Iterable[transfer.FileEntry]) -> dict[str, Any]:
    return {f"{FILE_PREFIX}{e.path}": {"size": e.size, "sha256": e.sha256} for e in entries}


def to_transfer_entries(entries: Iterable[DUFile]) -> list[transfer.FileEntry]:
    """The manifest as the transfer engine's entries."""
    return [transfer.FileEntry(e.path, e.size, e.sha256) for e in entries]


def convert_transfer_error(exc: Exception, what: str) -> PilotDataError:
    """The project error for a transfer-layer exception (raise it ``from exc``)."""
    if isinstance(exc, PilotDataError):
        return exc
    if isinstance(exc, transfer.ChecksumMismatchError):
        return ChecksumMismatchError(f"{what}: {exc}")
    if isinstance(exc, transfer.UnsafePathError):
        return UnsafePathError(f"{what}: {exc}")
    if isinstance(exc, transfer.TransferError):
        return TransferError(f"{what}: {exc}")
    if isinstance(exc, FileNotFoundError):
        return StoreError(f"{what}: file not found: {exc}")
    if isinstance(exc, PermissionError):
        return StoreError(f"{what}: permission denied: {exc}")
    return TransferError(f"{what}: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------ sources
@dataclass
class _Source:
    fs: Any
    root: str
    names: list[str]


def resolve_sources(file_urls: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> list[_Source]:
    """Group ``file_urls`` (local files/directories or store URLs) into (fs, root, names) sources.

    A file keeps its base name; a directory keeps its own name as a prefix of its files' paths.
    Missing local paths raise :class:`DescriptionError` naming them; nothing is read yet.
    """
    sources: list[_Source] = []
    seen: dict[str, str] = {}
    for url in file_urls:
        if "://" in url and not url.startswith("file://"):
            parent, _, leaf = url.rstrip("/").rpartition("/")
            store = open_store(parent, storage_options=storage_options)
            fs, root = store.fs, store.root
            if not leaf:
                raise DescriptionError(f"file_urls: {url!r} names no file", field="file_urls", value=url)
            full = f"{root.rstrip('/')}/{leaf}"
            try:
                is_dir = fs.isdir(full)
                names = (sorted(store.files(leaf)) if is_dir
                         else [leaf] if fs.exists(full) else [])
            except Exception as exc:
                raise StoreError(f"file_urls: cannot read {store.url}/{leaf}: {exc}") from exc
            if not names:
                raise DescriptionError(f"file_urls: {store.url}/{leaf} does not exist", field="file_urls", value=url)
        else:
            path = Path(url[len("file://"):] if url.startswith("file://") else url).expanduser().absolute()
            if not path.exists():
                raise DescriptionError(f"file_urls: {str(path)!r} does not exist", field="file_urls", value=url)
            fs, root, leaf = fsspec.filesystem("file"), str(path.parent), path.name
            if path.is_dir():
                names = sorted(str(p.relative_to(path.parent)) for p in path.rglob("*") if p.is_file())
            else:
                names = [leaf]
        for name in names:
            if name in seen:
                raise DescriptionError(f"file_urls: {name!r} comes from both {seen[name]!r} and {url!r}",
                                       field="file_urls", value=url)
            seen[name] = url
        sources.append(_Source(fs, root, names))
    return sources


# ------------------------------------------------------------------ the lifecycle
class DataUnits:
    """DataUnit operations of one session (used by the services, the CLI and the agent)."""

    def __init__(self, session: Session, *, workers: int = 8) -> None:
        self.session = session
        self.workers = workers
        self._stores: dict[str, Store] = {}

    @property
    def coord(self) -> Coordination:
        """The session's coordination backend."""
        return self.session.coord

    def store(self, pd_id: str) -> Store:
        """The (cached) store of PilotData ``pd_id``."""
        from pilotdata.services.pilot_data import open_pd_store

        return open_pd_store(self.session, pd_id)

    def record(self, du_id: str) -> EntityRecord:
        """The DU's record; :class:`NotFoundError` naming it when it does not exist."""
        try:
            return self.coord.get(Kind.DU, du_id)
        except NotFoundError:
            raise NotFoundError(f"DataUnit {du_id!r} does not exist") from None

    # --------------------------------------------------------------- create
    def register(self, desc: DataUnitDescription, *, du_id: str | None = None) -> str:
        """Record a new DataUnit in state New and return its id (files are uploaded by :meth:`upload`)."""
        du_id = du_id or f"du-{uuid.uuid4().hex[:12]}"
        self.coord.create(Kind.DU, du_id, {"name": desc.name or du_id, "description": desc.to_dict()})
        return du_id

    def upload(self, du_id: str, pd_id: str, file_urls: Sequence[str] | None = None, *,
               progress: Progress | None = None, storage_options: Mapping[str, Any] | None = None) -> None:
        """Upload the DU's ``file_urls`` into PilotData ``pd_id``: New -> Pending -> Running (or Failed)."""
        rec = self.record(du_id)
        urls = list(file_urls if file_urls is not None else (rec.data.get("description") or {}).get("file_urls", []))
        self._transition(du_id, DataUnitState.PENDING)
        key = f"{REPLICA_PREFIX}{pd_id}"
        self.coord.update_data(Kind.DU, du_id, {key: {"status": "pending", "time": time.time()}})
        started = time.monotonic()
        try:
            dst = self.store(pd_id)
            sources = resolve_sources(urls, storage_options)
            total = sum(_size(s.fs, f"{s.root.rstrip('/')}/{n}") for s in sources for n in s.names)
            dst.check_quota(total)
            entries: list[transfer.FileEntry] = []
            for src in sources:
                report = self._copy(src.fs, src.root, dst, du_id, src.names, progress=progress)
                entries.extend(report.entries)
            self._record_transfer(du_id, urls[0] if urls else "local", dst, report_bytes(entries),
                                  time.monotonic() - started)
        except Exception as exc:
            self._fail_replica(du_id, pd_id, exc)
            raise _converted(exc, f"DataUnit {du_id} upload to {pd_id}") from exc
        # manifest, complete replica and Running in one atomic step, and only if nobody removed the DU
        done = self.coord.transition_many(Kind.DU, [TransitionRequest(
            du_id, DataUnitState.RUNNING.value, expected=DataUnitState.PENDING.value,
            data={**_entries_patch(entries), key: {"status": "complete", "time": time.time()}},
        )])[0]
        if not done.ok:
            self.store(pd_id).rm(du_id, recursive=True)
            raise StoreError(f"DataUnit {du_id} became {done.previous} during its upload; the upload was discarded")

    def open_empty(self, du_id: str, pd_id: str) -> None:
        """Make a DU with no files usable at ``pd_id`` (an output DU that CUs will fill)."""
        self._transition(du_id, DataUnitState.PENDING)
        self.store(pd_id).makedirs(du_id)
        self.coord.update_data(Kind.DU, du_id, {f"{REPLICA_PREFIX}{pd_id}": {"status": "complete",
                                                                              "time": time.time()}})
        self._transition(du_id, DataUnitState.RUNNING)

    # --------------------------------------------------------------- replicas
    def best_source(self, du_id: str, *, near: str | None = None) -> str:
        """A PD id with a complete replica (``near`` if it has one)."""
        complete = complete_replicas(self.record(du_id))
        if not complete:
            raise StoreError(f"DataUnit {du_id} has no complete replica")
        return near if near in complete else complete[0]

    def replicate(self, du_id: str, pd_id: str, *, source: str | None = None,
                  progress: Progress | None = None) -> None:
        """Copy the DU store-to-store onto ``pd_id`` (streamed, verified, published atomically)."""
        rec = self.record(du_id)
        if rec.state in FINAL_STATES - {"Done"}:
            raise StoreError(f"DataUnit {du_id} is {rec.state}; cannot replicate it")
        key = f"{REPLICA_PREFIX}{pd_id}"
        if (rec.data.get(key) or {}).get("status") == "complete":
            return
        src_pd = source or self.best_source(du_id)
        entries = du_entries(rec)
        self.coord.update_data(Kind.DU, du_id, {key: {"status": "pending", "time": time.time()}})
        started = time.monotonic()
        try:
            src, dst = self.store(src_pd), self.store(pd_id)
            dst.check_quota(sum(e.size for e in entries))
            self._copy(src.fs, src.path(du_id), dst, du_id, to_transfer_entries(entries), progress=progress,
                       link=True)
        except Exception as exc:
            self.coord.update_data(Kind.DU, du_id, {key: {"status": "failed", "time": time.time(),
                                                          "reason": str(exc)}})
            raise _converted(exc, f"DataUnit {du_id} replication {src_pd} -> {pd_id}") from exc
        self.coord.update_data(Kind.DU, du_id, {key: {"status": "complete", "time": time.time()}})
        self._record_transfer(du_id, src.url, dst, sum(e.size for e in entries), time.monotonic() - started)

    def move(self, du_id: str, pd_id: str, *, progress: Progress | None = None) -> None:
        """Replicate onto ``pd_id``, then remove every other replica."""
        self.replicate(du_id, pd_id, progress=progress)
        for other in complete_replicas(self.record(du_id)):
            if other != pd_id:
                self.remove_replica(du_id, other)

    def remove_replica(self, du_id: str, pd_id: str) -> None:
        """Delete the replica on ``pd_id``; refuses to delete the last complete replica of a live DU."""
        rec = self.record(du_id)
        complete = complete_replicas(rec)
        if complete == [pd_id] and rec.state not in FINAL_STATES:
            raise StoreError(f"{pd_id} holds the last replica of DataUnit {du_id}; use remove() for the whole DU")
        self.coord.update_data(Kind.DU, du_id, {f"{REPLICA_PREFIX}{pd_id}": None})
        store = self.store(pd_id)
        if store.exists(du_id):
            store.rm(du_id, recursive=True)

    def remove(self, du_id: str) -> None:
        """Cancel the DU and delete all its replicas."""
        rec = self.record(du_id)
        if rec.state not in FINAL_STATES:
            self._transition(du_id, DataUnitState.CANCELED, reason="removed by user")
        for pd_id in replicas(rec):
            self.coord.update_data(Kind.DU, du_id, {f"{REPLICA_PREFIX}{pd_id}": None})
            try:
                store = self.store(pd_id)
                if store.exists(du_id):
                    store.rm(du_id, recursive=True)
            except (NotFoundError, StoreError) as exc:
                log.warning("could not delete replica of %s on %s: %s", du_id, pd_id, exc)

    # --------------------------------------------------------------- export / verify
    def export(self, du_id: str, target: str, *, files: Sequence[str] | None = None, pd_id: str | None = None,
               progress: Progress | None = None, storage_options: Mapping[str, Any] | None = None) -> list[str]:
        """Copy the DU's files (or ``files``) into a local directory or any store URL; return the paths."""
        rec = self.record(du_id)
        entries = du_entries(rec)
        if files is not None:
            wanted = set(files)
            missing = sorted(wanted - {e.path for e in entries})
            if missing:
                raise NotFoundError(f"DataUnit {du_id} has no file {missing[0]!r}")
            entries = [e for e in entries if e.path in wanted]
        src = self.store(pd_id or self.best_source(du_id))
        dst = open_store(target, storage_options=storage_options)
        dst.makedirs("")
        try:
            transfer.copy_files(src.fs, src.path(du_id), dst.fs, dst.root, to_transfer_entries(entries),
                                workers=self.workers, progress=progress, link=False)
        except Exception as exc:
            raise _converted(exc, f"DataUnit {du_id} export to {dst.url}") from exc
        return [f"{dst.root.rstrip('/')}/{e.path}" for e in entries]

    def verify(self, du_id: str, pd_id: str | None = None) -> dict[str, list[str]]:
        """Check each complete replica (or ``pd_id``) against the manifest: ``{pd: [problems]}``."""
        rec = self.record(du_id)
        entries = to_transfer_entries(du_entries(rec))
        out: dict[str, list[str]] = {}
        for pd in [pd_id] if pd_id else complete_replicas(rec):
            store = self.store(pd)
            try:
                out[pd] = [str(m) for m in transfer.verify_files(store.fs, store.path(du_id), entries)]
            except Exception as exc:
                raise _converted(exc, f"verify DataUnit {du_id} on {pd}") from exc
        return out

    # --------------------------------------------------------------- outputs (agents)
    def add_files(self, du_id: str, pd_id: str, src_fs: Any, src_root: str, names: Sequence[str], *,
                  pilot: str | None = None) -> list[DUFile]:
        """Upload files into an open DU's replica on ``pd_id`` and add them to its manifest."""
        rec = self.record(du_id)
        if rec.state in FINAL_STATES:
            raise StoreError(f"DataUnit {du_id} is {rec.state}; it takes no more files")
        dst = self.store(pd_id)
        started = time.monotonic()
        try:
            report = self._copy(src_fs, src_root, dst, du_id, list(names))
        except Exception as exc:
            raise _converted(exc, f"output upload into DataUnit {du_id} on {pd_id}") from exc
        self.coord.update_data(Kind.DU, du_id, _entries_patch(report.entries))
        self._record_transfer(du_id, "sandbox", dst, report_bytes(report.entries), time.monotonic() - started,
                              pilot=pilot)
        return [DUFile(e.path, int(e.size or 0), str(e.sha256 or "")) for e in report.entries]

    # --------------------------------------------------------------- internals
    def _copy(self, src_fs: Any, src_root: str, dst: Store, du_id: str, items: Sequence[Any], *,
              progress: Progress | None = None, link: bool = False) -> transfer.TransferReport:
        """Copy into ``<dst>/<du_id>/``. ``link`` only between replicas: a user's file is never linked
        (editing it later would change an immutable DataUnit)."""
        for item in items:
            dst.path(f"{du_id}/{item if isinstance(item, str) else item.path}")  # reject unsafe names first
        dst.makedirs(du_id)
        return transfer.copy_files(src_fs, src_root, dst.fs, dst.path(du_id), items, workers=self.workers,
                                   progress=progress, link=link, read_only=link)

    def fail(self, du_id: str, reason: str) -> None:
        """Mark the DU Failed with ``reason`` unless it is already final or has a complete replica."""
        rec = self.record(du_id)
        if rec.state in FINAL_STATES or complete_replicas(rec):
            return
        try:
            self.coord.transition(Kind.DU, du_id, DataUnitState.FAILED, detail={"reason": reason})
        except IllegalTransitionError:
            pass  # someone finished it meanwhile

    def _transition(self, du_id: str, to: DataUnitState, reason: str | None = None) -> None:
        try:
            self.coord.transition(Kind.DU, du_id, to, detail={"reason": reason} if reason else None)
        except IllegalTransitionError:
            if self.record(du_id).state != to.value:
                raise

    def _fail_replica(self, du_id: str, pd_id: str, exc: BaseException) -> None:
        reason = str(_converted(exc, "upload")) if isinstance(exc, Exception) else repr(exc)
        self.coord.update_data(Kind.DU, du_id, {f"{REPLICA_PREFIX}{pd_id}": {
            "status": "failed", "time": time.time(), "reason": reason}})
        self.fail(du_id, reason)

    def _record_transfer(self, du_id: str, source: str, dst: Store, nbytes: int, seconds: float,
                         pilot: str | None = None) -> None:
        self.coord.record_event("transfer", du_id, {"du": du_id, "bytes": nbytes, "seconds": seconds,
                                                    "source": source, "destination": dst.url, "ok": True},
                                pilot=pilot)


def report_bytes(entries: Iterable[Any]) -> int:
    """Sum of entry sizes."""
    return sum(int(e.size) for e in entries)


def _size(fs: Any, path: str) -> int:
    try:
        return int(fs.size(path))
    except (OSError, ValueError):
        return os.path.getsize(path) if os.path.exists(path) else 0


def _converted(exc: Exception, what: str) -> PilotDataError:
    return convert_transfer_error(exc, what)
