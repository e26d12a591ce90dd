"""One side of a copy: an fsspec filesystem plus a root, with the I/O the engine needs.

The base classes and the implementations that need no backend library live here;
:func:`transfer.factory.endpoint_for` picks one by duck typing:

``LocalEndpoint``
    fsspec's plain ``LocalFileSystem``: ``os`` calls (no fsspec file objects on the hot path);
    writes go to ``.<name>.part-<token>`` in the same directory and ``os.replace`` publishes them.
``SFTPEndpoint`` (:mod:`transfer.sftpio`)
    fsspec's ``SFTPFileSystem``: pooled SFTP channels, tuned windows, part file + ``posix-rename``.
``ObjectEndpoint`` (:mod:`transfer.objectstore`)
    s3fs and other object stores, which have no rename: see that module for how a partial object is
    never visible.
``FsspecEndpoint``
    anything else (subclassed local filesystems, memory, ...): ``fs.open`` streams, a part file and
    ``fs.mv`` to publish.
"""

from __future__ import annotations

import errno
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from transfer import paths
from transfer.verified import fs_clock_ns, settle_mtime

__all__ = ["Endpoint", "FsspecEndpoint", "LocalEndpoint", "Writer", "is_plain_local"]

Chunk = bytes | bytearray | memoryview
"""A piece of a file in flight. Readers may reuse their buffers: a chunk stays valid until the
consumer has taken two more (the engine finishes writing chunk i before it asks for chunk i + 2)."""


def token() -> str:
    """A random suffix for part files."""
    return uuid.uuid4().hex[:16]


def protocols(fs: Any) -> tuple[str, ...]:
    """The fsspec protocol names of ``fs`` as a tuple."""
    proto = getattr(fs, "protocol", ())
    return (proto,) if isinstance(proto, str) else tuple(proto)


class Writer:
    """Writes one file so that it only becomes visible under its final name when published.

    Life cycle: ``write``* -> ``finish`` (all bytes stored, still invisible) -> optional
    ``stored_size`` / ``read_back`` checks -> ``publish``; ``abort`` at any point removes every trace.
    """

    final: str

    def write(self, data: Chunk) -> None:
        """Store the next chunk."""
        raise NotImplementedError

    def finish(self) -> None:
        """Flush and close the data stream; nothing is visible under the final name yet."""
        raise NotImplementedError

    def stored_size(self) -> int | None:
        """Size of the stored (unpublished) data, or None where it cannot be asked before publishing."""
        return None

    def read_back(self, chunk_size: int) -> Iterator[bytes] | None:
        """The stored (unpublished) bytes, or None where they can only be read after publishing."""
        return None

    def publish(self) -> None:
        """Make the file visible under its final name, atomically."""
        raise NotImplementedError

    def abort(self) -> None:
        """Remove the unpublished data; never raises."""
        raise NotImplementedError


class Endpoint:
    """An fsspec filesystem and a root directory, with the operations a copy needs."""

    kind = "fsspec"
    renames = True
    """Whether publishing is a rename of a part file (False: object stores)."""

    def __init__(self, fs: Any, root: str, *, read_only: bool = False) -> None:
        self.fs = fs
        stripped = str(fs._strip_protocol(root)) if root else ""
        self.root = stripped.rstrip("/") or stripped[:1]  # keep a bare "/"
        self.read_only = read_only
        self._dirs: set[str] = set()
        self._dirs_lock = threading.Lock()

    # ------------------------------------------------------------------ naming
    def path(self, rel: str) -> str:
        """The filesystem path of DU-relative ``rel``."""
        return paths.join(self.root, rel)

    def url(self, rel: str) -> str:
        """A URL for messages (never with credentials)."""
        path = self.path(rel)
        try:
            return str(self.fs.unstrip_protocol(path))
        except (AttributeError, TypeError, ValueError):
            return path

    def check_destination(self, rels: list[str]) -> None:
        """Reject destinations that would escape the root (before anything is written)."""

    # ------------------------------------------------------------------ I/O
    def size(self, rel: str) -> int:
        """Size in bytes of ``rel`` (FileNotFoundError if missing)."""
        return int(self.fs.info(self.path(rel))["size"])

    def iter_read(self, rel: str, size_hint: int | None, chunk_size: int) -> Iterator[Chunk]:
        """The bytes of ``rel`` in chunks (about ``chunk_size``; SFTP reads whole windows), read to EOF."""
        with self.fs.open(self.path(rel), "rb") as f:
            while True:
                data = f.read(chunk_size)
                if not data:
                    return
                yield data

    def writer(self, rel: str, size_hint: int | None) -> Writer:
        """A :class:`Writer` for ``rel`` (parents created)."""
        final = self.path(rel)
        self._makedirs(final.rpartition("/")[0])
        return _FsspecRenameWriter(self.fs, final)

    def remove(self, rel: str) -> None:
        """Delete ``rel`` (missing is fine)."""
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Release per-copy resources (channels, pools)."""

    def on_transient_error(self) -> None:
        """Called before a retry: drop broken connections so the retry opens fresh ones."""

    def _makedirs(self, directory: str) -> None:
        if not directory or directory in self._dirs:
            return
        self._make_dir(directory)
        with self._dirs_lock:
            self._dirs.add(directory)

    def _make_dir(self, directory: str) -> None:
        self.fs.makedirs(directory, exist_ok=True)


class FsspecEndpoint(Endpoint):
    """Any fsspec filesystem with a rename (``mv``): generic streams, part file, ``fs.mv``."""


class _FsspecRenameWriter(Writer):
    def __init__(self, fs: Any, final: str) -> None:
        self.fs = fs
        self.final = final
        self.tmp = paths.part_name(final, token())
        self.f: Any = fs.open(self.tmp, "wb")

    def write(self, data: Chunk) -> None:
        self.f.write(data)

    def finish(self) -> None:
        self.f.close()

    def stored_size(self) -> int | None:
        return int(self.fs.info(self.tmp)["size"])

    def read_back(self, chunk_size: int) -> Iterator[bytes] | None:
        return _iter_fs(self.fs, self.tmp, chunk_size)

    def publish(self) -> None:
        self.fs.mv(self.tmp, self.final)

    def abort(self) -> None:
        try:
            if not self.f.closed:
                self.f.close()
        except Exception:  # abort is best effort; the cleanup below still runs
            pass
        try:
            self.fs.rm_file(self.tmp)
        except Exception:  # the part file may never have been created
            pass


def _iter_fs(fs: Any, path: str, chunk_size: int) -> Iterator[bytes]:
    with fs.open(path, "rb") as f:
        while True:
            data = f.read(chunk_size)
            if not data:
                return
            yield data


# ====================================================================== local
def is_plain_local(fs: Any) -> bool:
    """fsspec's LocalFileSystem (or a subclass that does not change how files are opened)."""
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.spec import AbstractFileSystem

    cls = type(fs)
    return (
        isinstance(fs, LocalFileSystem)
        and cls._open is LocalFileSystem._open
        and cls.open is AbstractFileSystem.open
    )


class LocalEndpoint(Endpoint):
    """The local filesystem through ``os`` calls."""

    kind = "local"

    def __init__(self, fs: Any, root: str, *, read_only: bool = False) -> None:
        super().__init__(fs, root, read_only=read_only)
        self.root = os.path.abspath(self.root or ".")
        self._prefix = self.root if self.root.endswith(os.sep) else self.root + os.sep
        self._anonymous = True
        self.stamp_writes = True
        """Whether written files are stamped for a stat record (:class:`LocalWriter`'s ``stamp``); the copy
        engine turns it off when it keeps no records."""

    def path(self, rel: str) -> str:
        """Absolute local path of ``rel`` (a normalised relative name: the root and ``rel`` joined)."""
        return self._prefix + rel

    def url(self, rel: str) -> str:
        """``file://`` URL of ``rel``."""
        return f"file://{self.path(rel)}"

    def check_destination(self, rels: list[str]) -> None:
        """Every existing ancestor of every destination must resolve inside the root."""
        checked: set[str] = set()
        real_root = os.path.realpath(self.root)
        for rel in rels:
            parent = os.path.dirname(rel)
            while parent and parent not in checked:
                checked.add(parent)
                full = os.path.join(self.root, parent)
                if os.path.lexists(full):
                    real = os.path.realpath(full)
                    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
                        from transfer.errors import UnsafePathError

                        raise UnsafePathError(
                            f"{rel!r} would be written outside {self.root!r}: {parent!r} is a link to {real!r}",
                            path=rel,
                        )
                parent = os.path.dirname(parent)

    def size(self, rel: str) -> int:
        """``os.stat`` size."""
        return os.stat(self.path(rel)).st_size

    def iter_read(self, rel: str, size_hint: int | None, chunk_size: int) -> Iterator[Chunk]:
        """Unbuffered reads to EOF; a large file is read into three rotating buffers.

        Reusing the buffers matters: a fresh 8 MiB ``bytes`` per chunk comes from ``mmap`` and pays
        a page fault per 4 KiB on first touch, which halved local copy speed in the benchmark.
        """
        fd = os.open(self.path(rel), os.O_RDONLY | _CLOEXEC)
        try:
            if size_hint is not None and size_hint <= chunk_size:
                while True:
                    data = os.read(fd, chunk_size)
                    if not data:
                        return
                    yield data
            buffers: list[bytearray] = []
            turn = 0
            while True:
                if turn < 3:
                    buffers.append(bytearray(chunk_size))
                buf = buffers[turn % 3]
                n = os.readv(fd, [buf])
                if not n:
                    return
                yield memoryview(buf)[:n]
                turn += 1
        finally:
            os.close(fd)

    def read_small(self, rel: str, size_hint: int) -> bytes:
        """The whole of a file expected to hold ``size_hint`` bytes, read to EOF (never truncated)."""
        fd = os.open(self.path(rel), os.O_RDONLY | _CLOEXEC)
        try:
            data = os.read(fd, size_hint + 1)
            if len(data) <= size_hint:
                return data
            rest = [data]
            while chunk := os.read(fd, 2**20):
                rest.append(chunk)
            return b"".join(rest)
        finally:
            os.close(fd)

    def stat(self, rel: str) -> os.stat_result:
        """``os.stat`` of ``rel`` (following symlinks, as reads do)."""
        return os.stat(self.path(rel))

    def writer(self, rel: str, size_hint: int | None) -> LocalWriter:
        """An unnamed file in the destination directory (else a part file beside the final name)."""
        final = self._prefix + rel
        parent = final[: final.rfind(os.sep)] or os.sep
        self._makedirs(parent)
        writer = LocalWriter(final, self.read_only, anonymous=self._anonymous, stamp=self.stamp_writes,
                             directory=parent)
        if self._anonymous and writer.tmp is not None:
            self._anonymous = False  # this filesystem has no O_TMPFILE: do not ask again
        return writer

    def remove(self, rel: str) -> None:
        """Unlink ``rel`` (missing is fine)."""
        try:
            os.unlink(self.path(rel))
        except FileNotFoundError:
            pass

    def _make_dir(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)


WRITE_PIECE = 256 * 2**10
"""The most :class:`LocalWriter` hands ``os.write`` at once."""
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_PROC_FD = os.path.isdir("/proc/self/fd")
_NO_TMPFILE = frozenset(
    getattr(errno, name) for name in ("EOPNOTSUPP", "ENOTSUP", "EISDIR", "EINVAL", "ENOSYS") if hasattr(errno, name)
)
"""``open(dir, O_TMPFILE)`` errors of filesystems (or kernels) without unnamed files."""


class LocalWriter(Writer):
    """Writes an unnamed file in the destination directory and links it in to publish.

    ``open(directory, O_TMPFILE)`` makes an inode with no name: a killed process leaves nothing
    behind, and publishing is one ``linkat`` of ``/proc/self/fd/N`` onto the final name -- cheaper
    than creating a part file and renaming it (each costs a directory update; 10,000 small files
    copied about 30% faster). If the final name exists, the file is linked to a part name and
    ``os.replace``'d over it, so the replacement is atomic too. Where the filesystem has no
    O_TMPFILE (NFS, older kernels) or ``anonymous`` is false, the data goes to
    ``.<name>.part-<token>`` beside ``final`` and ``os.replace`` publishes it. ``directory`` is
    ``final``'s parent when the caller has it at hand; ``stamp`` is described at :meth:`publish`.
    """

    def __init__(self, final: str, read_only: bool = False, *, anonymous: bool = True, stamp: bool = True,
                 directory: str | None = None) -> None:
        self.final = final
        self.read_only = read_only
        self.stamp = stamp
        """Whether :meth:`publish` settles the mtime and keeps :attr:`published` (for a stat record)."""
        self.tmp: str | None = None
        """The part file's name, or None while the data is in an unnamed file."""
        self.published: os.stat_result | None = None
        """The file's stat once published (what :mod:`transfer.verified` records); None without ``stamp``."""
        self.published_since = 0
        """:func:`~transfer.verified.fs_clock_ns` just before the file got its name: its content was final then."""
        self.fd = -1
        self._open = False
        if anonymous and _O_TMPFILE and _PROC_FD:
            try:
                where = directory if directory is not None else (os.path.dirname(final) or ".")
                self.fd = os.open(where, os.O_RDWR | _O_TMPFILE | _CLOEXEC, 0o666)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
        if self.fd < 0:
            self.tmp = paths.part_name(final, token())
            self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o666)
        self._open = True

    def write(self, data: Chunk) -> None:
        """``os.write`` all of ``data``, at most :data:`WRITE_PIECE` bytes per call.

        Larger writes cost up to eight times the CPU per byte on this project's test VMs (ext4 on
        Linux 6.18: a multi-MiB write makes the page cache allocate large folios, and finding and
        zeroing those under memory pressure dominated a profile of an 8 MiB-chunk download), while
        256 KiB pieces stayed at memcpy speed -- what ``cp`` writes, 128 KiB at a time.
        """
        if len(data) <= WRITE_PIECE:
            n = os.write(self.fd, data)
            if n == len(data):
                return
            view = memoryview(data)[n:]
        else:
            view = memoryview(data)
        while view:
            n = os.write(self.fd, view[:WRITE_PIECE])
            view = view[n:]

    def finish(self) -> None:
        """Nothing to flush (``os.write`` is unbuffered); the descriptor stays open until publish or abort."""

    def _close(self) -> None:
        if self._open:
            self._open = False
            os.close(self.fd)

    def stored_size(self) -> int | None:
        """Size of the stored data."""
        return os.fstat(self.fd).st_size

    def read_back(self, chunk_size: int) -> Iterator[bytes] | None:
        """The stored bytes."""
        def gen() -> Iterator[bytes]:
            offset = 0
            while data := os.pread(self.fd, chunk_size, offset):
                offset += len(data)
                yield data
        return gen()

    def publish(self) -> None:
        """Stamp, chmod a-w if read-only, then link the unnamed file in (or ``os.replace`` the part file).

        The stamp (unless ``stamp`` is false: nothing will record the file): atime and mtime one
        nanosecond before the file system's clock (:func:`~transfer.verified.settle_mtime`), so any
        later write shows in the stat that :attr:`published` records, even within the clock tick of
        this one.
        """
        if self.stamp:
            settle_mtime(self.fd)
            self.published_since = fs_clock_ns()
        if self.read_only:
            os.fchmod(self.fd, 0o444)
        if self.tmp is not None:
            os.replace(self.tmp, self.final)
            if self.stamp:
                self.published = os.fstat(self.fd)
            self._close()
            return
        # An absolute source ignores src_dir_fd, but passing one makes CPython call linkat() with
        # AT_SYMLINK_FOLLOW (plain link() would link the /proc symlink itself, across filesystems).
        source = f"/proc/self/fd/{self.fd}"
        try:
            os.link(source, self.final, src_dir_fd=self.fd)
        except FileExistsError:
            part = paths.part_name(self.final, token())
            os.link(source, part, src_dir_fd=self.fd)
            try:
                os.replace(part, self.final)
            except BaseException:
                _unlink_quietly(part)
                raise
        if self.stamp:
            self.published = os.fstat(self.fd)
        self._close()

    def abort(self) -> None:
        """Close (an unnamed file then vanishes) and unlink the part file."""
        try:
            self._close()
        except OSError:
            pass
        if self.tmp is not None:
            _unlink_quietly(self.tmp)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def quiet_close(obj: Any) -> None:
    """``obj.close()``, ignoring errors (closing after a failure must not mask the failure)."""
    try:
        obj.close()
    except Exception:  # best effort
        pass
