"""Which :class:`~transfer.endpoints.Endpoint` serves a filesystem: :func:`endpoint_for`.

The choice is by duck typing on the fsspec object, so no backend library (paramiko, s3fs) is imported
to make it. It lives apart from :mod:`transfer.endpoints` so the base module never imports the
implementations built on it (:mod:`transfer.sftpio`, :mod:`transfer.objectstore`).
"""

from __future__ import annotations

from typing import Any

from transfer.endpoints import Endpoint, FsspecEndpoint, LocalEndpoint, is_plain_local, protocols
from transfer.objectstore import ObjectEndpoint
from transfer.sftpio import SFTPEndpoint

__all__ = ["OBJECT_PROTOCOLS", "endpoint_for", "is_sftp"]

OBJECT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2"})
"""fsspec protocols of object stores (no rename): they get an :class:`~transfer.objectstore.ObjectEndpoint`."""


def is_sftp(fs: Any) -> bool:
    """fsspec's SFTPFileSystem or anything else carrying a connected paramiko ``SSHClient``."""
    client = getattr(fs, "client", None)
    return hasattr(fs, "ftp") and client is not None and hasattr(client, "get_transport")


def endpoint_for(fs: Any, root: str, *, read_only: bool = False, workers: int = 8) -> Endpoint:
    """The :class:`~transfer.endpoints.Endpoint` for ``fs`` at ``root``, chosen by duck typing."""
    if is_plain_local(fs):
        return LocalEndpoint(fs, root, read_only=read_only)
    if is_sftp(fs):
        return SFTPEndpoint(fs, root, read_only=read_only)
    if set(protocols(fs)) & OBJECT_PROTOCOLS:
        return ObjectEndpoint(fs, root, read_only=read_only, workers=workers)
    return FsspecEndpoint(fs, root, read_only=read_only)
