"""transfer: the fsspec copy engine.

Owns transfer planning, parallel streaming copies with checksums computed while streaming, atomic
publish, retries with back-off, link / server-side-copy fast paths, and the per-pilot
content-addressed cache.

May import: the standard library and fsspec. Nothing from ``pilotdata``, ``placement`` or ``agent``:
it takes fsspec filesystems and plain data, and raises its own :mod:`transfer.errors`. Backend
libraries are reached through the filesystem objects (duck typing); paramiko is imported lazily.

Public API::

    copy_files(src_fs, src_root, dst_fs, dst_root, entries_or_paths, *, workers=8, chunk_size=8 MiB,
               retries=4, backoff=0.2, verify=True, progress=None, link=True, read_only=False)
        -> TransferReport(files, bytes, seconds, entries, methods, retries; .fast_path, .mb_per_s)
    (copy_files also takes algorithm=None -> sha256 for files without a checksum, and
     stat_cache=VERIFIED: checksums of local files remembered with their stat)
    verify_files(fs, root, entries, *, workers=4) -> list[Mismatch]
    PilotCache(root_dir).ensure(key, src_fs, src_root, entries) -> Path
                        .link_into(key, sandbox_dir, subset=None) -> list[Path]
                        .contains(key) / .keys() / .entries(key) / .evict(key)
    FileEntry(path, size=None, digest=None, algorithm="sha256") (.sha256: the digest of a sha256 entry)
    hash_file(fs, path, algorithm="sha256") -> (size, hex); scan(fs, root, algorithm="sha256")
    ALGORITHMS = ("sha256", "blake3", "xxh128"); DEFAULT_ALGORITHM = "sha256"
    VerifiedStats / VERIFIED: the verified-stat table (transfer.verified)
    errors: TransferError > ChecksumMismatchError, UnsafePathError, TransientError, CacheError;
            is_transient(exc)

Modules: :mod:`~transfer.copy` (the engine), :mod:`~transfer.digests` (checksum algorithms),
:mod:`~transfer.verified` (verified-stat records), :mod:`~transfer.endpoints` (local / generic I/O),
:mod:`~transfer.factory` (which endpoint serves a filesystem), :mod:`~transfer.sftpio` (SFTP channel
pool), :mod:`~transfer.objectstore` (S3 uploads without rename), :mod:`~transfer.fastpath` (links,
server-side copies), :mod:`~transfer.cache`, :mod:`~transfer.verify`, :mod:`~transfer.manifest`,
:mod:`~transfer.paths`, :mod:`~transfer.errors`.
"""

from transfer.cache import PilotCache, cache_key
from transfer.copy import DEFAULT_CHUNK, Progress, TransferReport, copy_files
from transfer.digests import ALGORITHMS, DEFAULT_ALGORITHM
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
from transfer.verified import VERIFIED, VerifiedStats
from transfer.verify import Mismatch, verify_files

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
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
    "VERIFIED",
    "VerifiedStats",
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
