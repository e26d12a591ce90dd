"""DataUnit replicas on PilotData stores: register, upload, replicate, move, export, verify, remove;
output publishing.

:class:`ReplicaManager` works on one coordination connection: the services', the CLI's, or an
agent's own. It is the boundary between ``pilotdata`` and the ``transfer`` engine: transfer errors are
converted here into :mod:`pilotdata.errors` (:func:`convert_transfer_error`). The record keys it
writes (manifest, replica status) are spelled in :mod:`pilotdata.records`.

Replica layout in a store: ``<pd root>/<du id>/<relative path>``. A DU whose every replica attempt
failed ends Failed with the reason, so nobody's ``wait()`` hangs.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import transfer
from pilotdata.coordination import Coordination, EntityRecord, TransitionRequest
from pilotdata.data.checksums import check_checksum, default_checksum
from pilotdata.data.nearest import replica_order
from pilotdata.data.pd_stores import open_pd_store
from pilotdata.data.sources import resolve_sources
from pilotdata.descriptions import DataUnitDescription, site_of
from pilotdata.errors import (
    ChecksumMismatchError,
    IllegalTransitionError,
    NotFoundError,
    PilotDataError,
    StoreError,
    TransferError,
    UnsafePathError,
)
from pilotdata.records import (
    DESCRIPTION,
    RUN,
    TRANSFER_EVENT,
    ByteCategory,
    DUFile,
    ReplicaStatus,
    complete_replicas,
    du_entries,
    manifest_patch,
    manifest_removal,
    replica_patch,
    replica_removal,
    replicas,
    transfer_record,
)
from pilotdata.states import DataUnitState, Kind, is_final
from pilotdata.stores import Store, open_store

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def to_transfer_entries(entries: Iterable[DUFile]) -> list[transfer.FileEntry]:
    """The manifest as the transfer engine's entries, each checked in the algorithm its record names.

    An algorithm this version does not know is a :class:`TransferError` naming the file (its bytes
    could not be checked), never an unchecked copy.
    """
    out: list[transfer.FileEntry] = []
    for e in entries:
        try:
            out.append(transfer.FileEntry(e.path, e.size, e.digest, e.algorithm))
        except ValueError as exc:
            raise TransferError(f"DataUnit file {e.path!r}: {exc}; upgrade pilot-data to read it") from exc
    return out


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


# ------------------------------------------------------------------ the lifecycle
class ReplicaManager:
    """The DataUnit operations on one coordination connection (used by the services, the CLI and agents).

    Cheap to make: it holds no state beyond the connection (stores are cached per process by
    :func:`~pilotdata.data.open_pd_store`).
    """

    def __init__(self, coord: Coordination, *, workers: int = 8, checksum: str | None = None) -> None:
        self.coord = coord
        self.workers = workers
        """Files copied in parallel per transfer."""
        self._checksum = None if checksum is None else check_checksum(checksum)

    @property
    def checksum(self) -> str:
        """The algorithm files added by this manager are recorded with: ``checksum=`` if given, else
        ``PDATA_CHECKSUM``, else blake3 where installed, else sha256 (:mod:`pilotdata.data.checksums`).
        Files already in a manifest keep their own algorithm."""
        if self._checksum is None:
            self._checksum = default_checksum()
        return self._checksum

    def store(self, pd_id: str) -> Store:
        """The (cached) store of PilotData ``pd_id``."""
        return open_pd_store(self.coord, pd_id)

    def record(self, du_id: str) -> EntityRecord:
        """The DU's record; :class:`NotFoundError` naming it when it does not exist."""
        try:
            return self.coord.get(Kind.DU, du_id)
        except NotFoundError:
            raise NotFoundError(f"DataUnit {du_id!r} does not exist") from None

    # --------------------------------------------------------------- create
    def register(self, desc: DataUnitDescription, *, du_id: str | None = None, run: str | None = None) -> str:
        """Record a new DataUnit in state New and return its id (files are uploaded by :meth:`upload`).

        ``run``: the id of the run it belongs to (:mod:`pilotdata.runs`).
        """
        du_id = du_id or f"du-{uuid.uuid4().hex[:12]}"
        data: dict[str, Any] = {"name": desc.name or du_id, DESCRIPTION: desc.to_dict()}
        if run is not None:
            data[RUN] = run
        self.coord.create(Kind.DU, du_id, data)
        return du_id

    def upload(self, du_id: str, pd_id: str, file_urls: Sequence[str] | None = None, *,
               progress: Progress | None = None, storage_options: Mapping[str, Any] | None = None) -> None:
        """Upload the DU's ``file_urls`` into PilotData ``pd_id``: New -> Pending -> Running (or Failed)."""
        rec = self.record(du_id)
        urls = list(file_urls) if file_urls is not None else list(
            DataUnitDescription.coerce(rec.data.get(DESCRIPTION) or {}).file_urls)
        _ = self.checksum  # a bad or uninstalled algorithm fails here, before anything changes
        self._transition(du_id, DataUnitState.PENDING)
        self.coord.update_data(Kind.DU, du_id, replica_patch(pd_id, ReplicaStatus.PENDING))
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
            self._record_transfer(rec, ByteCategory.UPLOADED, urls[0] if urls else "local", dst,
                                  report_bytes(entries), time.monotonic() - started, destination_pd=pd_id)
        except Exception as exc:
            self._fail_replica(du_id, pd_id, exc)
            raise _converted(exc, f"DataUnit {du_id} upload to {pd_id}") from exc
        # manifest, complete replica and Running in one atomic step, and only if nobody removed the DU
        done = self.coord.transition_many(Kind.DU, [TransitionRequest(
            du_id, DataUnitState.RUNNING.value, expected=DataUnitState.PENDING.value,
            data={**manifest_patch(entries), **replica_patch(pd_id, ReplicaStatus.COMPLETE)},
        )])[0]
        if not done.ok:
            self.store(pd_id).rm(du_id, recursive=True)
            raise StoreError(f"DataUnit {du_id} became {done.previous} during its upload; the upload was discarded")

    def open_empty(self, du_id: str, pd_id: str) -> None:
        """Make a DU with no files usable at ``pd_id`` (an output DU that CUs will fill)."""
        self._transition(du_id, DataUnitState.PENDING)
        self.store(pd_id).makedirs(du_id)
        self.coord.update_data(Kind.DU, du_id, replica_patch(pd_id, ReplicaStatus.COMPLETE))
        self._transition(du_id, DataUnitState.RUNNING)

    def fill(self, du_id: str, pd_id: str, file_urls: Sequence[str]) -> None:
        """Upload ``file_urls`` into the new DU on ``pd_id`` (none: open it empty, for outputs).

        Never raises: a failure ends the DU Failed with the reason (logged), so every ``wait()`` on it
        returns; this is the body of a DataUnit submission, often on a background thread.
        """
        try:
            if file_urls:
                self.upload(du_id, pd_id, file_urls)
            else:
                self.open_empty(du_id, pd_id)
        except Exception as exc:  # the DU must end Failed with the reason, so wait() returns
            log.warning("DataUnit %s: %s", du_id, exc)
            self.fail(du_id, f"upload to {pd_id} failed: {exc}")

    # --------------------------------------------------------------- replicas
    def best_source(self, du_id: str, *, near: str | None = None, dst: Store | None = None) -> str:
        """The PD id of the complete replica to read: ``near`` if it has one, else the nearest to ``dst``
        (the store the bytes go to; None: this host) by :func:`~pilotdata.data.nearest.replica_order` --
        affinity-tree distance, then a copy without bytes through here (a hard link, a server-side copy),
        then local file systems first, as the agent chooses its inputs."""
        complete = complete_replicas(self.record(du_id))
        if not complete:
            raise StoreError(f"DataUnit {du_id} has no complete replica")
        if near in complete:
            return near
        stores: dict[str, Store | None] = {}
        for pd in complete:
            try:
                stores[pd] = self.store(pd)
            except PilotDataError as exc:  # a PilotData this process cannot open: the others first
                log.info("DataUnit %s: replica on %s cannot be opened here: %s", du_id, pd, exc)
                stores[pd] = None
        return replica_order(stores, site_of(dst.labels) if dst is not None else (), dst)[0]

    def replicate(self, du_id: str, pd_id: str, *, source: str | None = None,
                  progress: Progress | None = None) -> None:
        """Copy the DU store-to-store onto ``pd_id`` (streamed, verified, published atomically)."""
        rec = self.record(du_id)
        if is_final(rec.state) and rec.state != DataUnitState.DONE:
            raise StoreError(f"DataUnit {du_id} is {rec.state}; cannot replicate it")
        if pd_id in complete_replicas(rec):
            return
        src_pd = source or self.best_source(du_id, dst=self.store(pd_id))
        entries = du_entries(rec)
        self.coord.update_data(Kind.DU, du_id, replica_patch(pd_id, ReplicaStatus.PENDING))
        started = time.monotonic()
        try:
            src, dst = self.store(src_pd), self.store(pd_id)
            dst.check_quota(sum(e.size for e in entries))
            report = self._copy(src.fs, src.path(du_id), dst, du_id, to_transfer_entries(entries),
                                progress=progress, link=True)
        except Exception as exc:
            self.coord.update_data(Kind.DU, du_id, replica_patch(pd_id, ReplicaStatus.FAILED, str(exc)))
            raise _converted(exc, f"DataUnit {du_id} replication {src_pd} -> {pd_id}") from exc
        self.coord.update_data(Kind.DU, du_id, replica_patch(pd_id, ReplicaStatus.COMPLETE))
        self._record_transfer(rec, _copy_category(report, ByteCategory.REPLICATED), src.url, dst,
                              sum(e.size for e in entries), time.monotonic() - started, source_pd=src_pd,
                              destination_pd=pd_id)

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
        if complete == [pd_id] and not is_final(rec.state):
            raise StoreError(f"{pd_id} holds the last replica of DataUnit {du_id}; use remove() for the whole DU")
        self.coord.update_data(Kind.DU, du_id, replica_removal(pd_id))
        store = self.store(pd_id)
        if store.exists(du_id):
            store.rm(du_id, recursive=True)

    def remove(self, du_id: str) -> None:
        """Cancel the DU and delete all its replicas."""
        rec = self.record(du_id)
        if not is_final(rec.state):
            self._transition(du_id, DataUnitState.CANCELED, reason="removed by user")
        for pd_id in replicas(rec):
            self.coord.update_data(Kind.DU, du_id, replica_removal(pd_id))
            try:
                store = self.store(pd_id)
                if store.exists(du_id):
                    store.rm(du_id, recursive=True)
            except (NotFoundError, StoreError) as exc:
                log.warning("could not delete replica of %s on %s: %s", du_id, pd_id, exc)

    def close(self, du_id: str) -> str:
        """BigJob's ``du.cancel()``: no more files or replicas; the replicas stay readable. Return the state.

        A usable DU becomes Done; one that never got a replica becomes Canceled. A final DU is left as is.
        """
        rec = self.record(du_id)
        if is_final(rec.state):
            return rec.state
        target = DataUnitState.DONE if rec.state == DataUnitState.RUNNING else DataUnitState.CANCELED
        self._transition(du_id, target, reason="closed by user")
        return self.record(du_id).state

    # --------------------------------------------------------------- files of a live DU
    def add_local_files(self, du_id: str, file_urls: Sequence[str],
                        storage_options: Mapping[str, Any] | None = None) -> list[str]:
        """BigJob's ``du.add_files``: add local files (or store URLs) to a DU; return the names added.

        A DU with replicas gets the files in every complete replica; one not yet on any PilotData keeps
        them in its description, so the upload that places it takes them too. A name the DU already has
        is an error (its files do not change), as is a final DU; nothing is changed then.
        """
        rec = self.record(du_id)
        if is_final(rec.state):
            raise StoreError(f"DataUnit {du_id} is {rec.state}; it takes no more files")
        sources = resolve_sources(file_urls, storage_options)
        names = [n for s in sources for n in s.names]
        desc = DataUnitDescription.coerce(rec.data.get(DESCRIPTION) or {})
        have = {e.path for e in du_entries(rec)} | {u.rstrip("/").rsplit("/", 1)[-1] for u in desc.file_urls}
        clash = sorted(have.intersection(names))
        if clash:
            raise StoreError(f"DataUnit {du_id} already has a file {clash[0]!r}; its files do not change")
        targets = complete_replicas(rec)
        if not targets:
            if rec.state != DataUnitState.NEW:
                raise StoreError(f"DataUnit {du_id} is {rec.state} without a complete replica; add files "
                                 "once it is usable")
            grown = DataUnitDescription.coerce({**desc.to_dict(), "file_urls": [*desc.file_urls, *file_urls]})
            self.coord.update_data(Kind.DU, du_id, {DESCRIPTION: grown.to_dict()})
            return names
        for pd_id in targets:
            for src in sources:
                self.add_files(du_id, pd_id, src.fs, src.root, src.names)
        return names

    def remove_files(self, du_id: str, names: Sequence[str]) -> None:
        """BigJob's ``du.remove_files``: take files out of the manifest and delete them from every replica.

        A name the DU does not have is a :class:`NotFoundError`, and nothing is removed.
        """
        rec = self.record(du_id)
        have = {e.path for e in du_entries(rec)}
        wanted = [n.rstrip("/").rsplit("/", 1)[-1] if n not in have else n for n in names]
        missing = sorted(set(wanted) - have)
        if missing:
            raise NotFoundError(f"DataUnit {du_id} has no file {missing[0]!r}")
        self.coord.update_data(Kind.DU, du_id, manifest_removal(wanted))
        for pd_id in replicas(rec):
            store = self.store(pd_id)
            for name in wanted:
                rel = f"{du_id}/{name}"
                if store.exists(rel):
                    store.rm(rel)

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
        dst = open_store(target, storage_options=storage_options)
        src = self.store(pd_id or self.best_source(du_id, dst=dst))
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
                  pilot: str | None = None, cu: str | None = None) -> list[DUFile]:
        """Upload files into an open DU's replica on ``pd_id`` and add them to its manifest.

        Recorded as :attr:`~pilotdata.records.ByteCategory.OUTPUT` bytes of ComputeUnit ``cu``.
        """
        rec = self.record(du_id)
        if is_final(rec.state):
            raise StoreError(f"DataUnit {du_id} is {rec.state}; it takes no more files")
        _ = self.checksum  # a bad or uninstalled algorithm fails here, before anything is copied
        dst = self.store(pd_id)
        started = time.monotonic()
        try:
            report = self._copy(src_fs, src_root, dst, du_id, list(names))
        except Exception as exc:
            raise _converted(exc, f"output upload into DataUnit {du_id} on {pd_id}") from exc
        self.coord.update_data(Kind.DU, du_id, manifest_patch(report.entries))
        self._record_transfer(rec, ByteCategory.OUTPUT, "sandbox", dst, report_bytes(report.entries),
                              time.monotonic() - started, pilot=pilot, cu=cu, destination_pd=pd_id, run=False)
        return [DUFile(e.path, int(e.size or 0), e.digest, e.algorithm) for e in report.entries]

    # --------------------------------------------------------------- internals
    def _copy(self, src_fs: Any, src_root: str, dst: Store, du_id: str, items: Sequence[Any], *,
              progress: Progress | None = None, link: bool = False) -> transfer.TransferReport:
        """Copy into ``<dst>/<du_id>/``. ``link`` only between replicas: a user's file is never linked
        (editing it later would change an immutable DataUnit). The link is a hard link (same file system;
        the inode made read-only), never a symlink: a replica must outlive the one it was made from (a
        ``move`` removes that one), so between file systems the bytes are copied."""
        for item in items:
            dst.path(f"{du_id}/{item if isinstance(item, str) else item.path}")  # reject unsafe names first
        dst.makedirs(du_id)
        fresh = any(isinstance(item, str) for item in items)  # new files: hashed in this manager's algorithm
        return transfer.copy_files(src_fs, src_root, dst.fs, dst.path(du_id), items, workers=self.workers,
                                   progress=progress, link="hard" if link else False, read_only=link,
                                   algorithm=self.checksum if fresh else None)

    def fail(self, du_id: str, reason: str) -> None:
        """Mark the DU Failed with ``reason`` unless it is already final or has a complete replica."""
        rec = self.record(du_id)
        if is_final(rec.state) or complete_replicas(rec):
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
        self.coord.update_data(Kind.DU, du_id, replica_patch(pd_id, ReplicaStatus.FAILED, reason))
        self.fail(du_id, reason)

    def _record_transfer(self, rec: EntityRecord, category: ByteCategory, source: str, dst: Store, nbytes: int,
                         seconds: float, *, pilot: str | None = None, cu: str | None = None,
                         source_pd: str | None = None, destination_pd: str | None = None,
                         run: bool = True) -> None:
        """One transfer record of the byte accounting (``run``: attribute it to the DU's run; an output
        belongs to its CU's run instead, which the history fills in)."""
        detail = transfer_record(rec.id, nbytes, seconds, category=category, source=source, destination=dst.url,
                                 cu=cu, run=rec.data.get(RUN) if run else None, source_pd=source_pd,
                                 destination_pd=destination_pd)
        self.coord.record_event(TRANSFER_EVENT, rec.id, detail, pilot=pilot)


def _copy_category(report: transfer.TransferReport, copied: ByteCategory) -> ByteCategory:
    """``copied``, or :attr:`~ByteCategory.LINKED` when the engine linked every file (same filesystem)."""
    linked = sum(n for method, n in report.methods.items() if method in ("hardlink", "symlink"))
    return ByteCategory.LINKED if report.methods and linked == sum(report.methods.values()) else copied


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
