"""transfer: the fsspec copy engine.

Owns transfer planning, parallel streaming copies with checksums computed while streaming, atomic
publish, retries with back-off, link / server-side-copy fast paths, and the per-pilot
content-addressed cache.

May import: the standard library and fsspec. Nothing from ``pilotdata``, ``placement`` or ``agent``:
it takes fsspec filesystems and plain data, and raises its own :mod:`transfer.errors`.
"""

from transfer.cache import PilotCache, cache_key
from transfer.copy import DEFAULT_CHUNK, Progress, TransferReport, copy_files
from transfer.errors import (
    CacheError,
    CacheMissError,
    ChecksumMismatchError,
    TransferError,
    TransientError,
    UnsafePathError,
    is_transient,
)
from transfer.manifest import FileEntry, StreamHasher, hash_file, manifest_digest, scan, to_entries
from transfer.paths import check_names, normalize_relpath
from transfer.verify import Mismatch, verify_files

__all__ = [
    "DEFAULT_CHUNK",
    "CacheError",
    "CacheMissError",
    "ChecksumMismatchError",
    "FileEntry",
    "Mismatch",
    "PilotCache",
    "Progress",
    "StreamHasher",
    "TransferError",
    "TransferReport",
    "TransientError",
    "UnsafePathError",
    "cache_key",
    "check_names",
    "copy_files",
    "hash_file",
    "is_transient",
    "manifest_digest",
    "normalize_relpath",
    "scan",
    "to_entries",
    "verify_files",
]
