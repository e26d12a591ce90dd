"""The :class:`Store` base class: an fsspec filesystem plus a root, labels, a quota and safe names.

A backend subclass implements four hooks and inherits everything else:

``_parse(parts)``      check the URL, return ``(root, public url)``; may move URL userinfo into options
``_make_fs()``         build the fsspec filesystem (called lazily, once, on first use of ``.fs``)
``_classify(exc)``     map one library exception to ``StoreAuthError`` / ``StoreUnreachableError``
``_probe()``           the cheapest round trip that proves endpoint + credentials work (``ping``)

Also owned here: the public form of storage options (:func:`public_options`; which names are
secrets is :func:`pilotdata.redaction.is_secret_name`'s rule, :func:`is_secret_option` here), and the
boundary that converts library errors into the error tree with the store's public URL and no secret
in the message.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any, ClassVar
from urllib.parse import SplitResult, urlsplit

from pilotdata.errors import (
    DescriptionError,
    QuotaExceededError,
    StoreError,
    StoreUnreachableError,
)
from pilotdata.redaction import is_secret_name, redact_url, register_secret, scrub, url_secrets
from pilotdata.stores.paths import join_under

__all__ = [
    "InvalidStoreURLError",
    "Store",
    "is_secret_option",
    "public_options",
    "secret_values",
    "url_scheme",
]

#: ``errno`` values that mean "could not reach the other side" rather than "it said no".
_UNREACHABLE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT", "EHOSTDOWN")
    if hasattr(errno, name)
)


class InvalidStoreURLError(StoreError, ValueError):
    """A PilotData URL that cannot name a store (no bucket, a password where none belongs, ...)."""


def is_secret_option(name: str) -> bool:
    """True when a storage option of this name holds a secret (or a live object) and must never be stored.

    The project's one rule, :func:`pilotdata.redaction.is_secret_name`: ``key``, ``secret``, ``token``,
    ``pkey``, ``sock``, ``session``, ``aws_secret_access_key`` ... are secret; paths such as
    ``key_filename`` and ``known_hosts``, and ``region`` or ``profile``, stay public.
    """
    return is_secret_name(name)


def _is_json_value(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def public_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` without secrets (at any depth) and without values that are not plain JSON."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if is_secret_option(str(name)):
            continue
        if isinstance(value, Mapping):
            out[str(name)] = public_options(value)
        elif _is_json_value(value):
            out[str(name)] = value
    return out


def secret_values(options: Mapping[str, Any]) -> list[str]:
    """Every non-empty string value held under a secret option name (for redacting messages)."""
    found: list[str] = []
    for name, value in options.items():
        if isinstance(value, Mapping):
            found.extend(secret_values(value))
        elif is_secret_option(str(name)) and isinstance(value, str) and value:
            found.append(value)
    return found


def url_scheme(url: str) -> str:
    """The lower-cased scheme of a PilotData URL; ``file`` for ``file:rel`` and for bare paths."""
    head, sep, _ = url.partition("://")
    if sep and head:
        return head.lower()
    return "file"


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class Store:
    """A PilotData store: an fsspec filesystem (``fs``) and a directory inside it (``root``).

    Attributes: ``url`` (public, never holds a secret), ``scheme``, ``root``, ``labels``, ``size``
    (quota in bytes, or ``None``), ``name`` (the PD id when a service set it, else the URL).
    Construct through :func:`pilotdata.stores.open_store`; nothing touches the network until
    ``fs`` or an operation is first used.
    """

    #: URL schemes this class serves (informational; the registry decides).
    schemes: ClassVar[tuple[str, ...]] = ()
    #: Secret options read from the environment when not given: ``{option: VARIABLE}``.
    env_secrets: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        url: str,
        *,
        labels: Mapping[str, Any] | None = None,
        size: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise DescriptionError(
                f"PilotData size must be a non-negative integer, got {size!r}", field="size", value=size
            )
        if labels is not None and not isinstance(labels, Mapping):
            raise DescriptionError(f"PilotData labels must be a mapping, got {type(labels).__name__}",
                                   field="labels", value=labels)
        self._options: dict[str, Any] = dict(storage_options or {})
        self._secrets: list[str] = []
        for option, variable in self.env_secrets.items():
            if option not in self._options and os.environ.get(variable):
                self._options[option] = os.environ[variable]
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise InvalidStoreURLError(f"malformed PilotData URL {redact_url(url)!r}: {exc}") from exc
        self.scheme: str = url_scheme(url)
        self._secrets.extend(url_secrets(url))
        self.root, self.url = self._parse(url, parts)
        self._secrets.extend(secret_values(self._options))
        register_secret(*self._secrets)  # hidden from every log record and message from now on
        self.labels: dict[str, Any] = dict(labels or {})
        self.size: int | None = size
        self.name: str = name or self.url
        self._fs: Any = None
        self._fs_lock = threading.Lock()

    # ------------------------------------------------------------------ backend hooks
    def _parse(self, url: str, parts: SplitResult) -> tuple[str, str]:
        """Return ``(root inside fs, public URL)`` for ``url``; raise InvalidStoreURLError if bad.

        ``parts`` is ``urlsplit(url)``; a backend may move userinfo from it into ``self._options``.
        """
        raise NotImplementedError

    def _plain_url(self, url: str, parts: SplitResult) -> None:
        """Refuse a query or fragment: they would silently cut a path short."""
        if parts.query or parts.fragment:
            raise InvalidStoreURLError(
                f"PilotData URL {redact_url(url)!r} has a query or fragment ('?' / '#'); "
                "not supported for this scheme"
            )

    def _make_fs(self) -> Any:
        """Build the fsspec filesystem (may connect and authenticate)."""
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> tuple[type[StoreError], str] | None:
        """Map one exception of the chain to (error class, short reason), or ``None`` if not ours.

        The base class recognises socket-level failures; backends add their library's errors.
        """
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return StoreUnreachableError, "connection timed out"
        if isinstance(exc, socket.gaierror):
            return StoreUnreachableError, "host name does not resolve"
        if isinstance(exc, ConnectionError) or (
            isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS
        ):
            return StoreUnreachableError, exc.strerror or type(exc).__name__
        return None

    def _probe(self) -> None:
        """One round trip proving the endpoint answers and accepts the credentials."""
        self._info_or_none(self.root)

    # ------------------------------------------------------------------ error boundary
    def _redact(self, text: str) -> str:
        return scrub(text, self._secrets)

    @contextmanager
    def _boundary(self, action: str) -> Iterator[None]:
        """Convert auth / reachability failures raised inside into the error tree, naming the URL.

        Our own errors pass through (prefixed with the URL if they lack it); everything else
        (``FileNotFoundError`` ...) is re-raised as is.
        """
        try:
            yield
        except StoreError as exc:
            if self.url in str(exc):
                raise
            raise type(exc)(self._redact(f"{action} {self.url}: {exc}")) from exc
        except Exception as exc:
            for link in _exception_chain(exc):
                found = self._classify(link)
                if found is not None:
                    cls, reason = found
                    raise cls(self._redact(f"{action} {self.url}: {reason}")) from exc
            raise

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (built on first use; connection failures are converted)."""
        if self._fs is None:
            with self._fs_lock:
                if self._fs is None:
                    with self._boundary("cannot connect to"):
                        self._fs = self._make_fs()
        return self._fs

    # ------------------------------------------------------------------ names
    def path(self, rel: str) -> str:
        """The filesystem path of ``rel`` below the root; raises UnsafePathError before any I/O."""
        return join_under(self.root, rel)

    def _full(self, rel: str) -> str:
        return self.root if rel in ("", ".") else self.path(rel)

    def _rel(self, full: str) -> str:
        base = self.root.rstrip("/") + "/"
        full = full.rstrip("/")
        if full == self.root.rstrip("/"):
            return ""
        if not full.startswith(base):
            raise StoreError(f"{self.url}: listing returned {full!r}, which is outside the root")
        return full[len(base):]

    def _invalidate(self, full: str) -> None:
        """Forget cached listings (another process may have written); a no-op where fsspec caches nothing."""
        self.fs.invalidate_cache(full)

    def _info_or_none(self, full: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = self.fs.info(full)
        except FileNotFoundError:
            return None
        return info

    # ------------------------------------------------------------------ operations
    def ping(self) -> None:
        """Connect and authenticate; raise StoreAuthError / StoreUnreachableError naming the URL."""
        with self._boundary("cannot reach"):
            self._probe()

    def exists(self, rel: str = "") -> bool:
        """Whether ``rel`` (or the root, for ``""``) exists. Auth/network failures raise, never False."""
        full = self._full(rel)
        with self._boundary("cannot check"):
            self._invalidate(full)
            return self._info_or_none(full) is not None

    def info(self, rel: str = "") -> dict[str, Any]:
        """fsspec ``info`` of ``rel`` with ``name`` made relative to the root; FileNotFoundError if absent."""
        full = self._full(rel)
        with self._boundary("cannot stat"):
            self._invalidate(full)
            out = dict(self.fs.info(full))
        out["name"] = self._rel(str(out.get("name", full)))
        return out

    def ls(self, rel: str = "") -> list[str]:
        """Sorted names (relative to the root) directly inside ``rel``; FileNotFoundError if absent."""
        full = self._full(rel)
        with self._boundary("cannot list"):
            self._invalidate(full)
            entries = self.fs.ls(full, detail=True)
        return sorted(self._rel(str(entry["name"])) for entry in entries)

    def files(self, rel: str = "") -> dict[str, int]:
        """Every file below ``rel`` (recursively) as ``{relative name: size}``; empty if ``rel`` is absent."""
        full = self._full(rel)
        with self._boundary("cannot list"):
            self._invalidate(full)
            return {self._rel(name): size for name, size in self._walk_files(full)}

    def _walk_files(self, top: str) -> Iterator[tuple[str, int]]:
        """(full name, size) of every file below ``top``; errors other than a missing top propagate."""
        info = self._info_or_none(top)
        if info is None:
            return
        if info.get("type") != "directory":
            yield str(info["name"]).rstrip("/"), int(info.get("size") or 0)
            return
        pending = [top]
        while pending:
            directory = pending.pop()
            for entry in self.fs.ls(directory, detail=True):
                entry_name = str(entry["name"]).rstrip("/")
                if entry_name == directory.rstrip("/"):
                    continue
                if entry.get("type") == "directory":
                    pending.append(entry_name)
                else:
                    yield entry_name, int(entry.get("size") or 0)

    def makedirs(self, rel: str = "") -> None:
        """Create ``rel`` (or the root) and its parents; fine if it exists."""
        full = self._full(rel)
        with self._boundary("cannot create a directory in"):
            self.fs.makedirs(full, exist_ok=True)

    def open(self, rel: str, mode: str = "rb") -> IO[Any]:
        """Open ``rel`` through fsspec; writing modes create the parent directories first."""
        full = self.path(rel)
        with self._boundary("cannot open a file in"):
            if any(flag in mode for flag in "wax"):
                parent = full.rsplit("/", 1)[0]
                if parent and parent != full:
                    self.fs.makedirs(parent, exist_ok=True)
            handle: IO[Any] = self.fs.open(full, mode)
            return handle

    def rm(self, rel: str, recursive: bool = False) -> None:
        """Remove ``rel`` (a directory only with ``recursive=True``); FileNotFoundError if absent.

        The root itself cannot be removed through a name (``path("")`` is rejected).
        """
        full = self.path(rel)
        with self._boundary("cannot remove from"):
            self._invalidate(full)
            info = self._info_or_none(full)
            if info is None:
                raise FileNotFoundError(errno.ENOENT, f"no such file in {self.url}", rel)
            if info.get("type") == "directory" and not recursive:
                raise IsADirectoryError(errno.EISDIR, f"a directory in {self.url} (pass recursive=True)", rel)
            self.fs.rm(full, recursive=recursive)
            self._invalidate(full)

    # ------------------------------------------------------------------ quota
    def used_bytes(self) -> int:
        """Total size of the files below the root (0 when the root does not exist yet)."""
        return sum(self.files().values())

    def check_quota(self, extra_bytes: int) -> None:
        """Raise QuotaExceededError if writing ``extra_bytes`` more would exceed ``size``."""
        if self.size is None:
            return
        used = self.used_bytes()
        if used + extra_bytes > self.size:
            raise QuotaExceededError(
                f"PilotData {self.name} quota exceeded: size {self.size} bytes, {used} used, "
                f"{extra_bytes} requested ({used + extra_bytes - self.size} bytes over)"
            )

    # ------------------------------------------------------------------ fast paths
    def same_local_fs(self, other: Store) -> bool:
        """True when both stores are local directories on the same device (hard links work)."""
        return False

    def same_s3_endpoint(self, other: Store) -> bool:
        """True when both stores are S3 at one endpoint with one identity (server-side copy works)."""
        return False

    # ------------------------------------------------------------------ records
    def public_options(self) -> dict[str, Any]:
        """Storage options safe to write to coordination: no key/secret/password/token/passphrase."""
        return public_options(self._options)

    def record(self) -> dict[str, Any]:
        """``{"url", "labels", "size", "storage_options"}`` with public options only (JSON-safe)."""
        return {
            "url": self.url,
            "labels": dict(self.labels),
            "size": self.size,
            "storage_options": self.public_options(),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} size={self.size} labels={self.labels}>"
