"""Manifest entries and hashing: what a DataUnit's files are (path, size, checksum and its algorithm).

Each entry names the algorithm of its checksum (:mod:`transfer.digests`: ``sha256``, the default
and what older manifests hold, or the faster ``blake3`` / ``xxh128``); every copy or verification
of the file computes that algorithm. The copy engine hashes *while* streaming
(:class:`StreamHasher`), so a copy reads its source once; :func:`hash_file` is for files that are
not being copied (``pdata verify``, manifests of existing data).

The dict layout (:meth:`FileEntry.to_dict`) names the checksum by its algorithm:
``{"path": rel, "size": n, "sha256": hex}`` -- exactly the layout manifests had before there was a
choice, so old manifests read as sha256 and a sha256 entry writes what old readers expect -- or
``{"path": rel, "size": n, "xxh128": hex}``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from transfer.digests import DEFAULT_ALGORITHM, available, check_algorithm, check_digest, new_hash
from transfer.paths import check_names, is_part_name, join, normalize_relpath

__all__ = ["FileEntry", "StreamHasher", "checked_entry", "hash_file", "manifest_digest", "scan", "to_entries"]

DEFAULT_CHUNK = 8 * 2**20


@dataclass(frozen=True)
class FileEntry:
    """One file of a DataUnit: relative ``path``, ``size`` in bytes, hex ``digest`` of ``algorithm``.

    ``size`` and ``digest`` may be None (unknown). ``FileEntry(path, size, hex)`` is a sha256 entry,
    as before algorithms could be chosen.
    """

    path: str
    size: int | None = None
    digest: str | None = None
    algorithm: str = DEFAULT_ALGORITHM

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", normalize_relpath(self.path))
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0):
            raise ValueError(f"size of {self.path!r} must be a non-negative int, not {self.size!r}")
        try:
            check_algorithm(self.algorithm)
            if self.digest is not None:
                object.__setattr__(self, "digest", check_digest(self.algorithm, self.digest))
        except ValueError as exc:
            raise ValueError(f"checksum of {self.path!r}: {exc}") from None

    @property
    def sha256(self) -> str | None:
        """The digest if the algorithm is sha256, else None."""
        return self.digest if self.algorithm == "sha256" else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileEntry:
        """From ``{"path": rel, "size": int, <algorithm>: hex}``; no checksum key reads as sha256 unknown.

        Where several algorithms are given, the fastest one installed here is taken. One whose library
        is missing here is kept all the same: copying or verifying the file then fails with the install
        hint instead of passing unchecked.
        """
        present = [a for a in ("xxh128", "blake3", "sha256") if data.get(a) is not None]
        for algorithm in present:
            if algorithm == "sha256" or available(algorithm):
                return cls(str(data["path"]), data.get("size"), data[algorithm], algorithm)
        if present:
            return cls(str(data["path"]), data.get("size"), data[present[0]], present[0])
        return cls(str(data["path"]), data.get("size"))

    def to_dict(self) -> dict[str, Any]:
        """``{"path", "size", <algorithm>: hex or None}``: the checksum's key names its algorithm."""
        return {"path": self.path, "size": self.size, self.algorithm: self.digest}


def checked_entry(path: str, size: int, digest: str, algorithm: str) -> FileEntry:
    """A :class:`FileEntry` from values already checked (a normalised name, a computed digest).

    The copy engine makes one per file it copies; skipping the checks is a tenth of a small file's cost.
    """
    entry = object.__new__(FileEntry)
    object.__setattr__(entry, "path", path)
    object.__setattr__(entry, "size", size)
    object.__setattr__(entry, "digest", digest)
    object.__setattr__(entry, "algorithm", algorithm)
    return entry


def to_entries(items: Iterable[FileEntry | str | Mapping[str, Any]]) -> list[FileEntry]:
    """Entries from FileEntry objects, plain relative names or manifest dicts; checks the names.

    Raises :class:`~transfer.errors.UnsafePathError` for unsafe, duplicate or clashing names.
    """
    entries: list[FileEntry] = []
    for item in items:
        if isinstance(item, FileEntry):
            entries.append(item)
        elif isinstance(item, str):
            entries.append(FileEntry(item))
        elif isinstance(item, Mapping):
            entries.append(FileEntry.from_dict(item))
        else:
            raise TypeError(f"a file to copy must be a FileEntry, a name or a dict, not {type(item).__name__}")
    check_names(e.path for e in entries)
    return entries


class StreamHasher:
    """Counts bytes and computes the checksum (``algorithm``, default sha256) of data as it streams past."""

    __slots__ = ("_h", "algorithm", "size")

    def __init__(self, algorithm: str = DEFAULT_ALGORITHM) -> None:
        self._h = new_hash(algorithm)
        self.algorithm = algorithm
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add a chunk (every algorithm's library releases the GIL on large chunks)."""
        self._h.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        """The checksum so far, as lowercase hex."""
        return self._h.hexdigest()


def hash_file(fs: Any, path: str, chunk_size: int = DEFAULT_CHUNK,
              algorithm: str = DEFAULT_ALGORITHM) -> tuple[int, str]:
    """Read ``path`` on fsspec filesystem ``fs`` once; return ``(size, hex checksum of algorithm)``."""
    hasher = StreamHasher(algorithm)
    with fs.open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_size)
            if not chunk:
                break
            hasher.update(chunk)
    return hasher.size, hasher.hexdigest()


def scan(fs: Any, root: str, *, workers: int = 4, chunk_size: int = DEFAULT_CHUNK,
         algorithm: str = DEFAULT_ALGORITHM) -> list[FileEntry]:
    """The manifest of every file under ``root`` (relative names, sizes, checksums), sorted by name.

    Part files of copies in progress or killed (``.<name>.part-<token>``) are not files of the DU
    and are left out.

    Hashes in ``workers`` threads; use one worker for filesystems whose client is not thread-safe
    (fsspec's SFTPFileSystem shares one paramiko SFTP channel).
    """
    check_algorithm(algorithm)
    new_hash(algorithm)  # a missing library fails here, before any listing
    base = fs._strip_protocol(root).rstrip("/")
    names = []
    for found in fs.find(root):
        rel = found[len(base):].lstrip("/") if found.startswith(base) else found
        if not is_part_name(rel):
            names.append(rel)
    names = check_names(names)

    def one(rel: str) -> FileEntry:
        size, digest = hash_file(fs, join(base, rel), chunk_size, algorithm)
        return FileEntry(rel, size, digest, algorithm)

    if workers <= 1:
        return sorted((one(n) for n in names), key=lambda e: e.path)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="transfer-scan") as pool:
        return sorted(pool.map(one, names), key=lambda e: e.path)


def manifest_digest(entries: Iterable[FileEntry]) -> str:
    """sha256 over the sorted ``[path, size, checksum]`` listing: a content address for a DataUnit.

    A sha256 checksum enters as its hex digits (the formula of the agent's ``manifest_key``, so keys
    of sha256 manifests are what they always were), any other as ``"<algorithm>:<hex>"``.
    """
    listing = sorted((e.path, e.size, e.digest if e.algorithm == "sha256" or e.digest is None
                      else f"{e.algorithm}:{e.digest}") for e in entries)
    return hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()
