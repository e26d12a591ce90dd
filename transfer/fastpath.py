"""Copies that move no bytes through this process: links on one machine, server-side S3 copies.

Local -> local (both fsspec ``LocalFileSystem``), when ``link`` is true:
    ``os.link`` the source into a part name beside the destination, then ``os.replace`` it onto
    the final name (atomic publish, as for streamed copies). A hard link *is* the source file: the
    same inode, so the same bytes and the same permission bits. With ``read_only`` the shared
    inode is made read-only (``chmod a-w``), which also protects the source from a task writing
    through its link -- what the per-pilot cache wants, since DataUnits are immutable. When the
    hard link is refused (``EXDEV`` across filesystems, ``EPERM``/``EACCES`` from protected
    hardlinks, ``EMLINK``, ``ENOTSUP``) and ``link`` is ``True`` (not ``"hard"``), a symbolic link to
    the source's real path is made instead (a symlink's mode cannot be changed: it reads with the
    source's permissions). Failing that the engine streams a real copy. With ``verify`` on, the
    source is hashed before it is linked (a read, no write), so a corrupted source is refused
    exactly as for a streamed copy.

S3 -> S3 on the same endpoint with the same credentials (:func:`~transfer.objectstore.same_s3_endpoint`):
    ``fs.copy`` (s3fs: ``CopyObject``, or a managed multipart copy above 150 MiB). The object
    appears whole when the server finishes. The ETag is not a sha256, so the size is checked with a
    ``HEAD`` and the manifest's sha256 is kept (hashing would mean downloading the object);
    ``verify="full"`` reads the copy back and hashes it.
"""

from __future__ import annotations

import errno
import os
from typing import Literal

from transfer.endpoints import LocalEndpoint, token
from transfer.objectstore import ObjectEndpoint
from transfer.paths import part_name

__all__ = ["LINK_REFUSED", "link_file", "server_side_copy"]

LinkMode = Literal["hardlink", "symlink"]

LINK_REFUSED = frozenset(
    getattr(errno, name) for name in ("EXDEV", "EPERM", "EACCES", "EMLINK", "ENOTSUP", "EOPNOTSUPP", "ENOSYS")
    if hasattr(errno, name)
)
"""``os.link`` errors after which a symlink (or a streamed copy) is tried instead."""


def link_file(src: str, final: str, *, allow_symlink: bool, read_only: bool) -> LinkMode | None:
    """Publish ``final`` as a hard link (else a symlink) to local file ``src``; None if neither works.

    Raises ``FileNotFoundError`` if ``src`` is missing; other link refusals return None so the
    caller can fall back to copying.
    """
    tmp = part_name(final, token())
    try:
        os.link(src, tmp, follow_symlinks=True)
        mode: LinkMode = "hardlink"
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno not in LINK_REFUSED or not allow_symlink:
            if exc.errno in LINK_REFUSED:
                return None
            raise
        os.stat(src)  # a missing source is an error, not a reason to make a dangling symlink
        try:
            os.symlink(os.path.realpath(src), tmp)
        except OSError as exc2:
            if exc2.errno in LINK_REFUSED:
                return None
            raise
        mode = "symlink"
    try:
        if read_only and mode == "hardlink":
            st = os.stat(tmp)
            os.chmod(tmp, st.st_mode & 0o7555)
        os.replace(tmp, final)
        if os.path.lexists(tmp):  # final already was this inode: rename(2) did nothing
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return mode


def local_link(src: LocalEndpoint, dst: LocalEndpoint, rel: str, *, allow_symlink: bool,
               read_only: bool) -> LinkMode | None:
    """:func:`link_file` between two local endpoints (destination parents created)."""
    final = dst.path(rel)
    dst._makedirs(os.path.dirname(final))
    return link_file(src.path(rel), final, allow_symlink=allow_symlink, read_only=read_only)


def server_side_copy(src: ObjectEndpoint, dst: ObjectEndpoint, rel: str) -> int:
    """Copy ``rel`` inside the object store; return the size of the new object."""
    dst.fs.copy(src.path(rel), dst.path(rel))
    dst.fs.invalidate_cache(dst.path(rel))
    return int(dst.fs.info(dst.path(rel))["size"])
