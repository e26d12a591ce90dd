"""Typed views of what entity records hold: a DataUnit's manifest and replicas, a ComputeUnit's description.

The one module that spells the keys inside an entity's data and the replica status strings (as
:mod:`pilotdata.coordination.keys` spells the Redis keys); everything else reads and writes them
through the types and functions here.

A DataUnit's record (kind ``du``) holds, as separate top-level keys so concurrent writers (several
agents publishing outputs into one DU) never overwrite each other:

* ``file:<relative path>`` -> ``{"size": int, "<algorithm>": hex}``: the manifest, one key per file
  (:class:`DUFile`). The checksum's key names its algorithm (``sha256``, ``blake3`` or ``xxh128``,
  :mod:`transfer.digests`; chosen per file when it is added, :mod:`pilotdata.data.checksums`), so a
  record written before algorithms could be chosen (``"sha256": hex``) reads unchanged;
* ``replica:<pd id>`` -> ``{"status": "pending" | "complete" | "failed", "time": float, "reason"?}``
  (:class:`Replica`, :class:`ReplicaStatus`).

A ComputeUnit's record holds its normalised description under ``description``; :func:`cu_description`
reads it back as the typed :class:`~pilotdata.descriptions.ComputeUnitDescription`. CUs and DUs carry
the id of their run under ``run`` (:data:`RUN`, see :mod:`pilotdata.runs`).

A **transfer record** is a coordination event of entity :data:`TRANSFER_EVENT` (``"transfer"``) whose
detail is built by :func:`transfer_record`: the one accounting of bytes, drained into the history's
``history_transfers`` table. Every byte the system moves or avoids moving is recorded once, in one of
the :class:`ByteCategory` categories, where it happens (the data operations and the agent's staging).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from pilotdata.coordination import EntityRecord
from pilotdata.descriptions import ComputeUnitDescription
from pilotdata.errors import DescriptionError
from transfer.digests import ALGORITHMS

FILE_PREFIX = "file:"
"""Prefix of a DataUnit record's manifest keys (``file:<relative path>``)."""
REPLICA_PREFIX = "replica:"
"""Prefix of a DataUnit record's replica keys (``replica:<pd id>``)."""
DESCRIPTION = "description"
"""Key of an entity's normalised description."""
PLACEMENT = "placement"
"""Key of a CU's data (and of its bind event's detail) saying why it was bound where it was."""
RUN = "run"
"""Key of a CU's or DU's data holding the id of the run it belongs to."""
TRANSFER_EVENT = "transfer"
"""The ``entity`` of transfer records in the event stream (see :func:`transfer_record`)."""


class ByteCategory(str, Enum):
    """What happened to the bytes of one transfer record: the one byte accounting of pilot-data.

    Every figure that adds up bytes (``pdata report``, ``pdata cu show``, ``pdata run ls``, the trace
    export, the BLAST summary, the dashboard) adds up these categories and nothing else. Three of them
    copy bytes (:attr:`UPLOADED`, :attr:`REPLICATED`, :attr:`STAGED`) and one writes results
    (:attr:`OUTPUT`); two move nothing (:attr:`LINKED`, :attr:`CACHE_HIT`). A ComputeUnit's inputs are
    counted once per CU and input, in exactly one of :attr:`STAGED`, :attr:`LINKED` or :attr:`CACHE_HIT`,
    so what per-CU copying would have moved is their sum over the CUs' records, and what the cache and
    links saved is the CUs' ``linked + cache_hit`` (a replica made as a link is *linked* without a CU).
    """

    UPLOADED = "uploaded"
    """A client put files into a store (``pdata put``, ``submit_data_unit``): bytes copied."""
    REPLICATED = "replicated"
    """A DataUnit was copied from one store to another (``pdata replicate``/``mv``, CDS replication)."""
    STAGED = "staged"
    """A pilot copied an input DataUnit from a store into its cache (for the CU named in the record)."""
    LINKED = "linked"
    """A copy made as a hard or symbolic link (same filesystem): store to store, or store to pilot cache.
    No bytes moved."""
    CACHE_HIT = "cache_hit"
    """A CU's input was already in its pilot's cache: linked into the sandbox, nothing moved."""
    OUTPUT = "output"
    """A CU's output files were uploaded from its sandbox into a DataUnit."""

    def __str__(self) -> str:
        return self.value

    @property
    def moves_bytes(self) -> bool:
        """Whether bytes travelled (uploaded, replicated, staged, output); not for linked and cache hits."""
        return self not in (ByteCategory.LINKED, ByteCategory.CACHE_HIT)


MOVED_CATEGORIES: tuple[ByteCategory, ...] = tuple(c for c in ByteCategory if c.moves_bytes)
"""The categories that copy bytes."""
INPUT_CATEGORIES: tuple[ByteCategory, ...] = (ByteCategory.STAGED, ByteCategory.LINKED, ByteCategory.CACHE_HIT)
"""How a CU's input arrived (one record per CU and input DataUnit)."""


class ReplicaStatus(str, Enum):
    """Where the copy of a DataUnit onto one PilotData stands."""

    PENDING = "pending"
    """Being copied (the first upload, or a replication): not readable yet."""
    COMPLETE = "complete"
    """Copied and verified: readable."""
    FAILED = "failed"
    """The copy failed (``reason`` says why); readers use another replica and it is not planned again."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class DUFile:
    """One manifest entry of a DataUnit: ``digest`` is the hex checksum in ``algorithm``.

    A record naming an algorithm this version does not know keeps that name (copying the file then
    fails, naming it, rather than skipping the check); ``digest`` is None only for a record without any.
    """

    path: str
    size: int
    digest: str | None
    algorithm: str = "sha256"

    @property
    def sha256(self) -> str | None:
        """The digest if the algorithm is sha256 (the only one before there was a choice), else None."""
        return self.digest if self.algorithm == "sha256" else None

    @property
    def checksum(self) -> str:
        """``<algorithm>:<hex>`` (``<algorithm>:?`` when unknown), for display."""
        return f"{self.algorithm}:{self.digest or '?'}"

    def to_json(self) -> dict[str, Any]:
        """``{"path", "size", "<algorithm>": hex}``: the manifest layout, with the path."""
        return {"path": self.path, "size": self.size, self.algorithm: self.digest}


class _FileLike(Protocol):
    """What a manifest entry is written from (a :class:`DUFile` or the transfer engine's entry)."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int | None: ...

    @property
    def digest(self) -> str | None: ...

    @property
    def algorithm(self) -> str: ...


@dataclass(frozen=True)
class Replica:
    """The state of one DataUnit's copy on one PilotData."""

    pd_id: str
    status: ReplicaStatus
    time: float
    """When the status was written (epoch seconds)."""
    reason: str | None = None
    """Why the copy failed."""

    @property
    def complete(self) -> bool:
        """Whether the replica is readable."""
        return self.status is ReplicaStatus.COMPLETE

    def to_json(self) -> dict[str, Any]:
        """The value stored under ``replica:<pd id>`` (``reason`` only when there is one)."""
        out: dict[str, Any] = {"status": self.status.value, "time": self.time}
        if self.reason is not None:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_json(cls, pd_id: str, value: Any) -> Replica:
        """Read the value stored under ``replica:<pd id>``."""
        reason = value.get("reason")
        return cls(pd_id, ReplicaStatus(value["status"]), float(value.get("time") or 0.0),
                   None if reason is None else str(reason))


# ------------------------------------------------------------------ DataUnit records: read
def du_entries(record: EntityRecord) -> list[DUFile]:
    """The DataUnit's manifest, sorted by path; each entry in the algorithm its record names."""
    out = [_du_file(k[len(FILE_PREFIX):], v) for k, v in record.data.items() if k.startswith(FILE_PREFIX) and v]
    return sorted(out, key=lambda e: e.path)


def _du_file(path: str, value: Any) -> DUFile:
    size = int(value["size"])
    for algorithm in ALGORITHMS:
        if value.get(algorithm) is not None:
            return DUFile(path, size, str(value[algorithm]), algorithm)
    for key, digest in value.items():  # written by a version that knows more algorithms
        if key != "size" and isinstance(digest, str):
            return DUFile(path, size, digest, str(key))
    return DUFile(path, size, None)


def du_size(record: EntityRecord) -> int:
    """Total bytes of the manifest."""
    return sum(e.size for e in du_entries(record))


def replicas(record: EntityRecord) -> dict[str, Replica]:
    """``{pd id: replica}`` of a DataUnit record, sorted by PD id."""
    found = {k[len(REPLICA_PREFIX):]: v for k, v in record.data.items() if k.startswith(REPLICA_PREFIX) and v}
    return {pd: Replica.from_json(pd, found[pd]) for pd in sorted(found)}


def complete_replicas(record: EntityRecord) -> list[str]:
    """PD ids holding a complete, verified replica, sorted."""
    return [pd for pd, rep in replicas(record).items() if rep.complete]


def pending_replicas(record: EntityRecord) -> list[str]:
    """PD ids whose replica is still being copied, sorted."""
    return [pd for pd, rep in replicas(record).items() if rep.status is ReplicaStatus.PENDING]


# ------------------------------------------------------------------ DataUnit records: write
def replica_patch(pd_id: str, status: ReplicaStatus, reason: str | None = None) -> dict[str, Any]:
    """The data patch that records ``status`` (now) for the replica on ``pd_id``."""
    return {f"{REPLICA_PREFIX}{pd_id}": Replica(pd_id, status, time.time(), reason).to_json()}


def replica_removal(pd_id: str) -> dict[str, Any]:
    """The data patch that forgets the replica on ``pd_id``."""
    return {f"{REPLICA_PREFIX}{pd_id}": None}


def manifest_patch(files: Iterable[_FileLike]) -> dict[str, Any]:
    """The data patch that adds ``files`` to a DataUnit's manifest (one key per file, the checksum under
    its algorithm's name)."""
    return {f"{FILE_PREFIX}{f.path}": {"size": f.size, f.algorithm: f.digest} for f in files}


def manifest_removal(paths: Iterable[str]) -> dict[str, Any]:
    """The data patch that takes ``paths`` out of a DataUnit's manifest."""
    return {f"{FILE_PREFIX}{p}": None for p in paths}


# ------------------------------------------------------------------ transfer records
def transfer_record(
    du_id: str,
    nbytes: int,
    seconds: float,
    *,
    category: ByteCategory,
    source: str,
    destination: str,
    ok: bool = True,
    cu: str | None = None,
    run: str | None = None,
    source_pd: str | None = None,
    destination_pd: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The detail of one transfer record (``record_event(TRANSFER_EVENT, du_id, detail, pilot=...)``).

    ``source`` / ``destination`` are URLs or names (``sandbox``, ``pilot-cache:<pilot>``) without
    credentials; ``source_pd`` / ``destination_pd`` the PilotData ids when a store is involved; ``cu``
    the ComputeUnit the bytes were moved for (inputs, outputs); ``run`` the run they belong to when
    known here (the history fills it from the CU otherwise).
    """
    detail: dict[str, Any] = {"du": du_id, "bytes": int(nbytes), "seconds": float(seconds), "source": source,
                              "destination": destination, "ok": ok, "category": ByteCategory(category).value}
    for key, value in (("cu", cu), ("run", run), ("source_pd", source_pd), ("destination_pd", destination_pd)):
        if value is not None:
            detail[key] = value
    detail.update(extra)
    return detail


_LINK_METHODS = frozenset({"link", "hardlink", "symlink"})
_SCHEMES = ("file://", "ssh://", "sftp://", "s3://", "irods://")


def transfer_category(detail: dict[str, Any], source: str | None = None,
                      destination: str | None = None) -> ByteCategory:
    """The category of a transfer record: its ``category``, else (a record written before categories
    existed) a classification by its other fields: a link method is :attr:`~ByteCategory.LINKED`, a
    pilot cache destination :attr:`~ByteCategory.STAGED`, a sandbox source :attr:`~ByteCategory.OUTPUT`,
    a store URL source :attr:`~ByteCategory.REPLICATED`, anything else :attr:`~ByteCategory.UPLOADED`."""
    category = detail.get("category")
    if category is not None:
        try:
            return ByteCategory(category)
        except ValueError:
            pass
    source = source if source is not None else str(detail.get("source") or "")
    destination = destination if destination is not None else str(detail.get("destination") or "")
    if detail.get("linked") or detail.get("method") in _LINK_METHODS:
        return ByteCategory.LINKED
    if destination.startswith("pilot-cache:"):
        return ByteCategory.STAGED
    if source == "sandbox":
        return ByteCategory.OUTPUT
    if source.startswith(_SCHEMES):
        return ByteCategory.REPLICATED
    return ByteCategory.UPLOADED


# ------------------------------------------------------------------ ComputeUnit records
def cu_description(record: EntityRecord) -> ComputeUnitDescription:
    """The CU's description, typed; :class:`DescriptionError` names the bad (or missing) field."""
    desc = record.data.get(DESCRIPTION)
    if desc is None:
        raise DescriptionError(f"CU {record.id!r} has no description", field=DESCRIPTION)
    return ComputeUnitDescription.coerce(desc)
