"""Checking stored files against their manifest (``pdata verify``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from transfer.digests import new_hash
from transfer.factory import endpoint_for
from transfer.manifest import DEFAULT_CHUNK, FileEntry, StreamHasher, to_entries

__all__ = ["Mismatch", "verify_files"]


@dataclass(frozen=True)
class Mismatch:
    """One file that does not match its manifest entry.

    ``problem`` is ``"missing"``, ``"size"``, the checksum's algorithm (``"sha256"``, ``"xxh128"`` ...)
    or ``"unreadable"`` (``actual`` then holds the error).
    """

    path: str
    problem: str
    expected: str | int | None = None
    actual: str | int | None = None

    def __str__(self) -> str:
        if self.problem == "missing":
            return f"{self.path}: missing"
        if self.problem == "unreadable":
            return f"{self.path}: unreadable ({self.actual})"
        return f"{self.path}: {self.problem} is {self.actual}, expected {self.expected}"


def verify_files(
    fs: Any,
    root: str,
    entries: Iterable[FileEntry | Mapping[str, Any]],
    *,
    workers: int = 4,
    chunk_size: int = DEFAULT_CHUNK,
) -> list[Mismatch]:
    """Read every file under ``root`` named by ``entries`` and compare size and checksum (each in its algorithm).

    Returns the mismatches in manifest order (empty: all good). Entries without a size or sha256 are
    only checked for what they have. Files on disk that the manifest does not list are not reported.
    """
    items = to_entries(entries)
    for algorithm in {e.algorithm for e in items}:
        new_hash(algorithm)  # a missing library: ValueError with the install hint, not a "unreadable" per file
    endpoint = endpoint_for(fs, root, workers=workers)

    def check(entry: FileEntry) -> Mismatch | None:
        try:
            hasher = StreamHasher(entry.algorithm)
            for chunk in endpoint.iter_read(entry.path, entry.size, chunk_size):
                hasher.update(chunk)
        except FileNotFoundError:
            return Mismatch(entry.path, "missing", expected=entry.size)
        except OSError as exc:
            return Mismatch(entry.path, "unreadable", actual=f"{type(exc).__name__}: {exc}")
        if entry.size is not None and hasher.size != entry.size:
            return Mismatch(entry.path, "size", entry.size, hasher.size)
        digest = hasher.hexdigest()
        if entry.digest is not None and digest != entry.digest:
            return Mismatch(entry.path, entry.algorithm, entry.digest, digest)
        return None

    try:
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="transfer-verify") as pool:
            found = list(pool.map(check, items))
    finally:
        endpoint.close()
    return [m for m in found if m is not None]
