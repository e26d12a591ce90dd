"""PilotData stores: the scheme registry and :func:`open_store`.

A URL scheme maps to a :class:`~pilotdata.stores.base.Store` subclass by dotted path, imported
only when a URL of that scheme is first opened (fsspec style), so ``s3fs`` or
``python-irodsclient`` are needed only by those who use them::

    file (and bare paths)  pilotdata.stores.file.FileStore     fsspec LocalFileSystem
    ssh, sftp              pilotdata.stores.sftp.SFTPStore     fsspec SFTPFileSystem, host keys verified
    s3                     pilotdata.stores.s3.S3Store         s3fs            pip install 'pilot-data[s3]'
    irods                  pilotdata.stores.irods.IRODSStore   python-irodsclient   'pilot-data[irods]'

Other packages add schemes with :func:`register_store` at run time or through the entry point
group ``pilotdata.stores`` (``myscheme = "mypkg.store:MyStore"``). Precedence: run-time
registrations, then the built-ins above, then entry points (an entry point cannot take over a
built-in scheme).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pilotdata.errors import MissingDependencyError, UnknownSchemeError, did_you_mean
from pilotdata.redaction import redact_url
from pilotdata.stores.base import InvalidStoreURLError, Store, url_scheme

__all__ = [
    "ENTRY_POINT_GROUP",
    "InvalidStoreURLError",
    "Store",
    "available_schemes",
    "get_store_class",
    "open_store",
    "register_store",
    "store_from_record",
]

#: The ``importlib.metadata`` entry point group scanned for outside store classes.
ENTRY_POINT_GROUP = "pilotdata.stores"

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")


@dataclass(frozen=True)
class _Entry:
    """Where a scheme's store class lives and which pip extra provides its dependencies."""

    target: str | type[Store]
    extra: str | None = None


_BUILTIN: dict[str, _Entry] = {
    "file": _Entry("pilotdata.stores.file.FileStore"),
    "ssh": _Entry("pilotdata.stores.sftp.SFTPStore"),
    "sftp": _Entry("pilotdata.stores.sftp.SFTPStore"),
    "s3": _Entry("pilotdata.stores.s3.S3Store", "s3"),
    "irods": _Entry("pilotdata.stores.irods.IRODSStore", "irods"),
}
_registered: dict[str, _Entry] = {}


def register_store(
    scheme: str, target: str | type[Store], *, extra: str | None = None, clobber: bool = False
) -> None:
    """Serve URLs of ``scheme`` with ``target`` (a Store subclass or ``"pkg.module.Class"``).

    ``extra`` names the ``pilot-data`` extra that installs the dependencies (for the install hint).
    Registering a scheme that is already registered or built in needs ``clobber=True``.
    """
    scheme = scheme.lower()
    if not _SCHEME.match(scheme):
        raise ValueError(f"invalid URL scheme {scheme!r}: letters, digits, '+', '-', '.'; first a letter")
    if not clobber and (scheme in _registered or scheme in _BUILTIN):
        raise ValueError(f"scheme {scheme!r} is already registered; pass clobber=True to replace it")
    _registered[scheme] = _Entry(target, extra)


def _entry_point_entries() -> dict[str, _Entry]:
    found: dict[str, _Entry] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(point.name.lower(), _Entry(point.value))
    return found


def _lookup(scheme: str) -> _Entry | None:
    entry = _registered.get(scheme) or _BUILTIN.get(scheme)
    if entry is None:
        entry = _entry_point_entries().get(scheme)
    return entry


def available_schemes() -> list[str]:
    """Every scheme that :func:`open_store` accepts right now (sorted)."""
    return sorted({*_BUILTIN, *_registered, *_entry_point_entries()})


def _install_hint(entry: _Entry, missing: str) -> str:
    if entry.extra:
        return f"pip install 'pilot-data[{entry.extra}]'"
    return f"pip install {missing.split('.')[0]}"


def get_store_class(scheme: str) -> type[Store]:
    """The Store class for ``scheme``, importing it now; UnknownSchemeError / MissingDependencyError."""
    scheme = scheme.lower()
    entry = _lookup(scheme)
    if entry is None:
        schemes = available_schemes()
        raise UnknownSchemeError(
            f"unknown PilotData URL scheme {scheme!r}{did_you_mean(scheme, schemes)}; "
            f"supported schemes: {', '.join(schemes)}"
        )
    if not isinstance(entry.target, str):
        return entry.target
    module_name, sep, attr = entry.target.partition(":")
    if not sep:
        module_name, _, attr = entry.target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or module_name
        raise MissingDependencyError(
            f"the {scheme}:// store needs the Python package {missing!r}, which is not installed: "
            f"{_install_hint(entry, missing)}"
        ) from exc
    cls = module
    for part in attr.split("."):
        cls = getattr(cls, part)
    if not (isinstance(cls, type) and issubclass(cls, Store)):
        raise TypeError(f"{entry.target} (registered for {scheme}://) is not a pilotdata Store class")
    return cls


def open_store(
    url: str | os.PathLike[str],
    *,
    labels: Mapping[str, Any] | None = None,
    size: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> Store:
    """Open the PilotData store at ``url`` (a URL or a local path, relative paths made absolute).

    ``storage_options`` go to the fsspec filesystem (secrets included: they stay in memory, and
    :meth:`Store.public_options` leaves them out). Missing secrets are read from the environment
    (see each backend). Nothing is contacted until the store is used or :meth:`Store.ping` ed.
    """
    text = os.fspath(url)
    if not isinstance(text, str) or not text.strip():
        raise InvalidStoreURLError(f"PilotData URL must be a non-empty string, got {url!r}")
    scheme = url_scheme(text)
    try:
        cls = get_store_class(scheme)
    except UnknownSchemeError as exc:
        raise UnknownSchemeError(f"{exc} (URL {redact_url(text)!r})") from None
    return cls(text, labels=labels, size=size, storage_options=storage_options, name=name)


def store_from_record(
    record: Mapping[str, Any], *, name: str | None = None, secrets: Mapping[str, Any] | None = None
) -> Store:
    """Re-open a store from :meth:`Store.record` (public URL and options) in another process.

    Secrets come from ``secrets`` (for example read from a local config file), else from the
    environment and the libraries' own configuration (AWS profiles, ``~/.ssh``, iRODS env file).
    """
    options = dict(record.get("storage_options") or {})
    options.update(secrets or {})
    return open_store(
        record["url"], labels=record.get("labels"), size=record.get("size"), storage_options=options,
        name=name,
    )
