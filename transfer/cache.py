"""The per-pilot cache: each input DataUnit fetched once onto local disk, linked into sandboxes.

Layout under ``root_dir`` (one cache per pilot)::

    entries/<key>/manifest.json     the DU's files: [{"path", "size", <algorithm>: hex}, ...]
    entries/<key>/data/<path>       the files themselves, mode a-w
    locks/<key>.lock                fcntl.flock'ed while a process fetches <key>
    tmp/<key>.<token>/              a fetch in progress (same layout as an entry)
    trash/                          entries being evicted

An entry is content-addressed: its key is the DU id plus a digest of its manifest
(:func:`cache_key`; the agent may use any key made of ``[A-Za-z0-9._-]``), so a DU whose content
changed gets a new key. ``entries/<key>`` only ever appears by an atomic ``rename`` of a complete,
verified fetch, so its existence *is* the completeness marker. Concurrent :meth:`PilotCache.ensure`
calls for one key -- threads or processes -- serialise on an exclusive ``flock`` of the key's lock
file; the first fetches, the others find the entry when they get the lock. A fetcher killed
mid-way releases the lock with its file descriptors; its leftovers (``tmp/<key>.<token>`` with the
``.part-`` files in it, ``trash/`` entries) are deleted by :func:`clean_stale`, which every
:class:`PilotCache` runs when it is opened (the next agent using the cache) and the agent's reaper
runs when its agent dies, and by the next fetch of that key.

Sandboxes get hard links to the cached files (same inode, read-only mode), or symlinks when the
sandbox is on another filesystem. Evicting an entry does not disturb sandboxes holding hard
links (the inode lives on); symlinked sandboxes lose their files, so evict only between tasks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from transfer import paths
from transfer.copy import DEFAULT_CHUNK, LinkOption, Progress, copy_files
from transfer.endpoints import LocalWriter, token
from transfer.errors import CacheMissError, UnsafePathError
from transfer.fastpath import link_file
from transfer.manifest import FileEntry, manifest_digest, to_entries

__all__ = ["PilotCache", "cache_key", "clean_stale"]

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_MANIFEST = "manifest.json"
_DATA = "data"


def cache_key(du_id: str, entries: Iterable[FileEntry]) -> str:
    """``<du id>-<first 32 hex digits of the manifest digest>``, with unsafe id characters replaced."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", du_id).lstrip("._-") or "du"
    return f"{safe[:160]}-{manifest_digest(entries)[:32]}"


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise UnsafePathError(f"cache key {key!r} must be 1-200 characters of [A-Za-z0-9._-], not starting with . - _")
    return key


class PilotCache:
    """A content-addressed cache of DataUnits on local disk, shared by the processes of one pilot."""

    def __init__(self, root_dir: str | os.PathLike[str], *, workers: int = 8, chunk_size: int = DEFAULT_CHUNK,
                 link: LinkOption = True) -> None:
        self.root = Path(root_dir).absolute()
        self.workers = workers
        self.chunk_size = chunk_size
        self.link = link
        for sub in ("entries", "locks", "tmp", "trash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        clean_stale(self.root)

    # ------------------------------------------------------------------ queries
    def _entry(self, key: str) -> Path:
        return self.root / "entries" / _check_key(key)

    def contains(self, key: str) -> bool:
        """Whether ``key`` is cached (complete)."""
        return (self._entry(key) / _MANIFEST).is_file()

    def keys(self) -> list[str]:
        """The cached keys, sorted."""
        return sorted(p.name for p in (self.root / "entries").iterdir() if (p / _MANIFEST).is_file())

    def path(self, key: str) -> Path:
        """Directory holding ``key``'s files (:class:`CacheMissError` if not cached)."""
        if not self.contains(key):
            raise CacheMissError(f"DataUnit {key!r} is not in the pilot cache at {self.root}")
        return self._entry(key) / _DATA

    def entries(self, key: str) -> list[FileEntry]:
        """The manifest ``key`` was fetched with (sizes and checksums as verified, each naming its algorithm)."""
        self.path(key)
        data = json.loads((self._entry(key) / _MANIFEST).read_text())
        return [FileEntry.from_dict(d) for d in data]

    def nbytes(self, key: str) -> int:
        """Total size of ``key``'s files."""
        return sum(e.size or 0 for e in self.entries(key))

    # ------------------------------------------------------------------ fetch
    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        fd = os.open(self.root / "locks" / f"{key}.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def ensure(self, key: str, src_fs: Any, src_root: str,
               entries: Iterable[FileEntry | str | Mapping[str, Any]], *,
               progress: Progress | None = None) -> Path:
        """The directory of ``key``'s files, fetching them from ``src_fs``/``src_root`` if not cached.

        Fetches at most once across threads and processes sharing ``root_dir``. The files are
        verified against ``entries`` (size, checksum) and published read-only; errors are the copy
        engine's (:class:`~transfer.errors.TransferError` and subclasses), and leave no entry.
        """
        entry = self._entry(key)
        items = to_entries(entries)
        if (entry / _MANIFEST).is_file():
            return entry / _DATA
        with self._locked(key):
            if (entry / _MANIFEST).is_file():
                return entry / _DATA
            for stale in (self.root / "tmp").glob(f"{key}.*"):
                _rmtree(stale)
            tmp = self.root / "tmp" / f"{key}.{token()}"
            (tmp / _DATA).mkdir(parents=True)
            try:
                from fsspec.implementations.local import LocalFileSystem

                report = copy_files(
                    src_fs, src_root, LocalFileSystem(), str(tmp / _DATA), items, workers=self.workers,
                    chunk_size=self.chunk_size, link=self.link, read_only=True, progress=progress,
                )
                (tmp / _MANIFEST).write_text(json.dumps([e.to_dict() for e in report.entries]))
                os.rename(tmp, entry)
            except BaseException:
                _rmtree(tmp)
                raise
        return entry / _DATA

    # ------------------------------------------------------------------ use
    def link_into(self, key: str, sandbox_dir: str | os.PathLike[str],
                  subset: Iterable[str] | None = None) -> list[Path]:
        """Link ``key``'s files (or ``subset``: file names or directory prefixes) into ``sandbox_dir``.

        Hard links (read-only, same inode as the cache), symlinks when the sandbox is on another
        filesystem, copies as a last resort. An existing file of the same name is replaced.
        Returns the created paths. :class:`CacheMissError` for an unknown key or file name.
        """
        data = self.path(key)
        names = [e.path for e in self.entries(key)]
        if subset is not None:
            wanted: list[str] = []
            for raw in subset:
                name = paths.normalize_relpath(raw)
                hits = [n for n in names if n == name or n.startswith(name + "/")]
                if not hits:
                    raise CacheMissError(f"DataUnit {key!r} in the pilot cache has no file {name!r}")
                wanted.extend(h for h in hits if h not in wanted)
            names = wanted
        sandbox = Path(sandbox_dir).absolute()
        sandbox.mkdir(parents=True, exist_ok=True)
        out: list[Path] = []
        for name in names:
            target = sandbox / name
            target.parent.mkdir(parents=True, exist_ok=True)
            paths.ensure_local_within(str(sandbox), str(target))
            if link_file(str(data / name), str(target), allow_symlink=True, read_only=False) is None:
                _copy_read_only(data / name, target)
            out.append(target)
        return out

    def evict(self, key: str) -> bool:
        """Remove ``key`` from the cache; False if it was not cached."""
        entry = self._entry(key)
        with self._locked(key):
            if not entry.exists():
                return False
            trash = self.root / "trash" / f"{key}.{token()}"
            os.rename(entry, trash)
        _rmtree(trash)
        return True


def clean_stale(root: str | os.PathLike[str]) -> int:
    """Delete what killed fetches and evictions left under cache ``root``; return how many entries went.

    A ``tmp/<key>.<token>`` directory is removed only when ``<key>``'s lock can be taken at once (no
    fetch of that key runs, in any process); ``trash/`` entries are always garbage.
    """
    base = Path(root)
    removed = 0
    for stale in sorted((base / "trash").glob("*")):
        _rmtree(stale)
        removed += 1
    for stale in sorted((base / "tmp").glob("*")):
        key = stale.name.rsplit(".", 1)[0]
        if not _KEY.fullmatch(key):
            continue
        try:
            fd = os.open(base / "locks" / f"{key}.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a fetch of this key is running: its tmp directory is live
            os.close(fd)
            continue
        try:
            _rmtree(stale)
            removed += 1
        finally:
            os.close(fd)
    return removed


def _copy_read_only(src: Path, dst: Path) -> None:
    writer = LocalWriter(str(dst), read_only=True)
    try:
        with open(src, "rb", buffering=0) as f:
            while chunk := f.read(DEFAULT_CHUNK):
                writer.write(chunk)
        writer.finish()
        writer.publish()
    except BaseException:
        writer.abort()
        raise


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
