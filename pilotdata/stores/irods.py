"""``irods://zone/home/user/coll`` stores: a small fsspec filesystem over python-irodsclient.

The URL names the zone and the collection; where to connect comes from storage options
(``host``, ``port`` (1247), ``user``, ``password`` - or ``PDATA_IRODS_PASSWORD``), or from an iRODS
environment file (``irods_env_file``, else ``$IRODS_ENVIRONMENT_FILE``, else
``~/.irods/irods_environment.json``, with the password python-irodsclient finds in ``.irodsA``).
A ready ``session`` object may be passed instead.

:class:`IRODSFileSystem` implements ``ls``, ``info``, ``_open`` (streaming reads and writes through
``data_objects.open``), ``mkdir``/``makedirs``/``rmdir``, ``rm``, ``mv`` and ``cp_file`` with the
handful of session calls listed in :data:`SESSION_CALLS`. It is tested against a faked session
in ``tests/stores``, not against a real iRODS server (none can run on the test machines).
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import SplitResult

from fsspec import AbstractFileSystem
from fsspec.utils import stringify_path
from irods import exception as irods_errors

from pilotdata.errors import StoreAuthError, StoreError, StoreUnreachableError
from pilotdata.redaction import redact_url
from pilotdata.stores.base import InvalidStoreURLError, Store

__all__ = ["SESSION_CALLS", "IRODSFileSystem", "IRODSStore"]

#: Every python-irodsclient session call this module makes (what a stand-in must provide).
SESSION_CALLS = (
    "collections.get", "collections.create", "collections.remove", "collections.move",
    "data_objects.get", "data_objects.open", "data_objects.unlink", "data_objects.move", "data_objects.copy",
)

_DEFAULT_ENV_FILE = "~/.irods/irods_environment.json"


def _error_classes(*names: str) -> tuple[type[BaseException], ...]:
    """The named irodsclient exception classes that exist in the installed version."""
    return tuple(cls for name in names if isinstance(cls := getattr(irods_errors, name, None), type))


_NOT_FOUND = _error_classes(
    "DoesNotExist", "CAT_UNKNOWN_COLLECTION", "CAT_UNKNOWN_FILE", "USER_FILE_DOES_NOT_EXIST",
    "OBJ_PATH_DOES_NOT_EXIST", "CAT_NO_ROWS_FOUND",
)
_EXISTS = _error_classes(
    "CAT_NAME_EXISTS_AS_COLLECTION", "CAT_NAME_EXISTS_AS_DATAOBJ", "OVERWRITE_WITHOUT_FORCE_FLAG"
)
_DENIED = _error_classes("CAT_NO_ACCESS_PERMISSION", "CAT_INSUFFICIENT_PRIVILEGE_LEVEL", "SYS_NO_API_PRIV")
_NOT_EMPTY = _error_classes("CAT_COLLECTION_NOT_EMPTY")
_AUTH = _error_classes(
    "CAT_INVALID_AUTHENTICATION", "CAT_INVALID_USER", "CAT_PASSWORD_EXPIRED", "PAM_AUTH_PASSWORD_FAILED",
    "CAT_INVALID_CLIENT_USER", "AUTHENTICATION_ERROR",
)
_NETWORK = _error_classes("NetworkException", "SYS_SOCK_READ_TIMEDOUT", "SYS_SOCK_OPEN_ERR")

_MODES = {"rb": "r", "wb": "w", "ab": "a", "r+b": "r+", "xb": "w"}


class IRODSFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """fsspec filesystem over an ``irods.session.iRODSSession``; paths are ``/zone/...`` logical paths."""

    protocol = "irods"
    root_marker = "/"

    def __init__(
        self,
        session: Any = None,
        *,
        host: str | None = None,
        port: int = 1247,
        user: str | None = None,
        password: str | None = None,
        zone: str | None = None,
        irods_env_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._session = session
        self._connect_args = {"host": host, "port": port, "user": user, "password": password, "zone": zone}
        self._env_file = irods_env_file

    @property
    def session(self) -> Any:
        """The iRODS session (created on first use from host/user/... or the environment file)."""
        if self._session is None:
            from irods.session import iRODSSession

            if self._connect_args["host"]:
                self._session = iRODSSession(**self._connect_args)
            else:
                env_file = os.path.expanduser(self._env_file or _DEFAULT_ENV_FILE)
                self._session = iRODSSession(irods_env_file=env_file)
        return self._session

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        text = str(stringify_path(path))
        if text.startswith("irods://"):
            text = text[len("irods://"):]
        return "/" + text.strip("/")

    @contextmanager
    def _translate(self, path: str) -> Iterator[None]:
        """irodsclient "not found / exists / denied" errors as the built-in OSErrors fsspec users expect."""
        try:
            yield
        except _NOT_FOUND as exc:
            raise FileNotFoundError(errno.ENOENT, "no such iRODS collection or data object", path) from exc
        except _EXISTS as exc:
            raise FileExistsError(errno.EEXIST, "iRODS path exists", path) from exc
        except _DENIED as exc:
            raise PermissionError(errno.EACCES, "iRODS denied access", path) from exc
        except _NOT_EMPTY as exc:
            raise OSError(errno.ENOTEMPTY, "iRODS collection not empty", path) from exc

    @staticmethod
    def _collection_entry(coll: Any) -> dict[str, Any]:
        mtime = getattr(coll, "modify_time", None)
        return {"name": coll.path, "type": "directory", "size": 0, "mtime": mtime}

    @staticmethod
    def _object_entry(obj: Any) -> dict[str, Any]:
        return {
            "name": obj.path,
            "type": "file",
            "size": int(obj.size or 0),
            "mtime": getattr(obj, "modify_time", None),
            "checksum": getattr(obj, "checksum", None),
        }

    def _collection_or_none(self, path: str) -> Any:
        try:
            return self.session.collections.get(path)
        except _NOT_FOUND:
            return None

    def info(self, path: Any, **kwargs: Any) -> dict[str, Any]:
        """``name``, ``type`` (file / directory), ``size``, ``mtime`` (and ``checksum`` for files)."""
        path = self._strip_protocol(path)
        with self._translate(path):
            if path != "/":
                try:
                    return self._object_entry(self.session.data_objects.get(path))
                except _NOT_FOUND:
                    pass
            return self._collection_entry(self.session.collections.get(path))

    def ls(self, path: Any, detail: bool = True, **kwargs: Any) -> list[Any]:
        """Entries of a collection (or the one entry of a data object)."""
        path = self._strip_protocol(path)
        with self._translate(path):
            coll = self._collection_or_none(path)
            if coll is None:
                entries = [self.info(path)]
            else:
                entries = [self._collection_entry(sub) for sub in coll.subcollections]
                entries += [self._object_entry(obj) for obj in coll.data_objects]
        entries.sort(key=lambda entry: str(entry["name"]))
        return entries if detail else [entry["name"] for entry in entries]

    def _open(
        self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
        cache_options: Any = None, **kwargs: Any,
    ) -> Any:
        if not autocommit:
            raise NotImplementedError("the iRODS filesystem has no transactions (autocommit=False)")
        if mode not in _MODES:
            raise ValueError(f"unsupported mode {mode!r} for iRODS (use one of {sorted(_MODES)})")
        path = self._strip_protocol(path)
        if mode == "xb" and self.exists(path):
            raise FileExistsError(errno.EEXIST, "iRODS path exists", path)
        with self._translate(path):
            return self.session.data_objects.open(path, _MODES[mode])

    def mkdir(self, path: Any, create_parents: bool = True, **kwargs: Any) -> None:
        """Create a collection (and its parents unless ``create_parents=False``)."""
        path = self._strip_protocol(path)
        if self.exists(path):
            raise FileExistsError(errno.EEXIST, "iRODS path exists", path)
        with self._translate(path):
            self.session.collections.create(path, recurse=create_parents)

    def makedirs(self, path: Any, exist_ok: bool = False) -> None:
        """Create a collection and its parents; with ``exist_ok`` an existing collection is fine."""
        path = self._strip_protocol(path)
        with self._translate(path):
            if self._collection_or_none(path) is not None:
                if not exist_ok:
                    raise FileExistsError(errno.EEXIST, "iRODS collection exists", path)
                return
            self.session.collections.create(path, recurse=True)

    def rmdir(self, path: Any) -> None:
        """Remove an empty collection."""
        path = self._strip_protocol(path)
        with self._translate(path):
            self.session.collections.remove(path, recurse=False, force=True)

    def _rm(self, path: Any) -> None:
        path = self._strip_protocol(path)
        if self.info(path)["type"] == "directory":
            self.rmdir(path)
            return
        with self._translate(path):
            self.session.data_objects.unlink(path, force=True)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Remove data objects, or collections with everything below them when ``recursive``."""
        for one in [path] if isinstance(path, str) else list(path):
            one = self._strip_protocol(one)
            if self.info(one)["type"] == "directory":
                if not recursive:
                    raise IsADirectoryError(errno.EISDIR, "iRODS collection needs recursive=True", one)
                with self._translate(one):
                    self.session.collections.remove(one, recurse=True, force=True)
            else:
                self._rm(one)

    def mv(self, path1: Any, path2: Any, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        """Rename a data object or a collection (server side)."""
        source, target = self._strip_protocol(path1), self._strip_protocol(path2)
        kind = self.info(source)["type"]
        with self._translate(source):
            if kind == "directory":
                self.session.collections.move(source, target)
            else:
                self.session.data_objects.move(source, target)

    def cp_file(self, path1: Any, path2: Any, **kwargs: Any) -> None:
        """Copy one data object server side."""
        source, target = self._strip_protocol(path1), self._strip_protocol(path2)
        with self._translate(source):
            self.session.data_objects.copy(source, target)

    def modified(self, path: Any) -> Any:
        """Modification time (``datetime``) of a collection or data object."""
        return self.info(path)["mtime"]


class IRODSStore(Store):
    """A collection in an iRODS zone."""

    schemes = ("irods",)
    env_secrets = {"password": "PDATA_IRODS_PASSWORD"}

    def _parse(self, url: str, parts: SplitResult) -> tuple[str, str]:
        self._plain_url(url, parts)
        zone = parts.netloc
        if not zone or any(char in zone for char in "@:[]"):
            raise InvalidStoreURLError(
                f"PilotData URL {redact_url(url)!r}: expected irods://zone/home/user/collection "
                "(host, port and user go in storage options or the iRODS environment file)"
            )
        if self._options.get("zone") not in (None, zone):
            raise InvalidStoreURLError(f"PilotData URL {url!r} and storage option 'zone' disagree")
        self.zone = zone
        rest = posixpath.normpath("/" + parts.path.lstrip("/"))
        root = f"/{zone}" if rest == "/" else f"/{zone}{rest}"
        return root, f"irods://{zone}{'' if rest == '/' else rest}"

    def _make_fs(self) -> Any:
        options = dict(self._options)
        if options.get("session") is None and not options.get("host"):
            env_file = (
                options.get("irods_env_file") or os.environ.get("IRODS_ENVIRONMENT_FILE") or _DEFAULT_ENV_FILE
            )
            if not os.path.exists(os.path.expanduser(env_file)):
                raise StoreAuthError(
                    f"cannot connect to {self.url}: no iRODS host given and no environment file {env_file}; "
                    "pass host/port/user (password via PDATA_IRODS_PASSWORD) or irods_env_file"
                )
            options["irods_env_file"] = env_file
        options.setdefault("zone", self.zone)
        return IRODSFileSystem(**options)

    def _classify(self, exc: BaseException) -> tuple[type[StoreError], str] | None:
        if isinstance(exc, _AUTH):
            return StoreAuthError, f"iRODS rejected the credentials ({type(exc).__name__})"
        if isinstance(exc, _NETWORK):
            return StoreUnreachableError, f"cannot connect to the iRODS server ({type(exc).__name__})"
        return super()._classify(exc)
