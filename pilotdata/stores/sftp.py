"""``ssh://`` and ``sftp://`` stores over fsspec's SFTPFileSystem (paramiko), with host keys verified.

URL: ``ssh://[user@]host[:port]/absolute/path`` (``sftp://`` is the same). Storage options are
paramiko ``connect`` arguments (``username``, ``port``, ``key_filename``, ``password``,
``passphrase``, ``timeout``, ``look_for_keys``, ``allow_agent`` ...) plus ``known_hosts`` (default
``~/.ssh/known_hosts``). ``password`` / ``passphrase`` may come from ``PDATA_SSH_PASSWORD`` /
``PDATA_SSH_PASSPHRASE``; without them paramiko uses the key file, the SSH agent and ``~/.ssh``.

fsspec's SFTPFileSystem accepts any host key on first contact by default. Here the server's host
key must already be in ``known_hosts`` (paramiko ``RejectPolicy`` semantics); an unknown key is a
:class:`UnknownHostKeyError` whose message says how to add it, a changed key a StoreAuthError.
``host_key_policy`` is refused as an option so verification cannot be switched off.
"""

from __future__ import annotations

import os
import posixpath
import threading
import weakref
from typing import Any
from urllib.parse import SplitResult

import paramiko
from fsspec.implementations.sftp import SFTPFileSystem

from pilotdata.errors import StoreAuthError, StoreError, StoreUnreachableError
from pilotdata.hostkeys import DEFAULT_KNOWN_HOSTS, verifying_client
from pilotdata.redaction import redact_url
from pilotdata.stores.base import InvalidStoreURLError, Store

__all__ = ["DEFAULT_KNOWN_HOSTS", "SFTPStore", "UnknownHostKeyError", "VerifiedSFTPFileSystem"]

#: Connection defaults (seconds) unless the caller passes their own.
_DEFAULT_TIMEOUTS = {"timeout": 15.0, "banner_timeout": 15.0, "auth_timeout": 15.0}


class UnknownHostKeyError(StoreAuthError):
    """The server's host key is not in the known_hosts file (nothing was sent to the server)."""


class VerifiedSFTPFileSystem(SFTPFileSystem):  # type: ignore[misc]
    """fsspec SFTPFileSystem whose connection verifies the host key against ``known_hosts``.

    Also safe to share between threads: paramiko's SFTPClient deadlocks when two threads issue
    requests on one channel, so ``ftp`` is one SFTP channel per thread over the shared SSH
    connection (and a connection of the thread's own if the server's ``MaxSessions`` is reached).
    """

    def __init__(self, host: str, known_hosts: str | None = None, **ssh_kwargs: Any) -> None:
        if "host_key_policy" in ssh_kwargs:
            raise ValueError("host_key_policy is not configurable: host keys are always verified")
        self.known_hosts = os.path.expanduser(known_hosts or DEFAULT_KNOWN_HOSTS)
        self._per_thread = threading.local()
        super().__init__(host, **ssh_kwargs)

    def _new_client(self) -> paramiko.SSHClient:
        port = int(self.ssh_kwargs.get("port") or 22)
        client = verifying_client(self.host, port, self.known_hosts, UnknownHostKeyError)
        try:
            client.connect(self.host, **self.ssh_kwargs)
        except BaseException:
            client.close()
            raise
        return client

    def _connect(self) -> None:
        self.client = self._new_client()
        self._per_thread = threading.local()
        self._per_thread.ftp = self.client.open_sftp()

    @property
    def ftp(self) -> paramiko.SFTPClient:
        """This thread's SFTP channel (opened on first use in the thread)."""
        ftp: paramiko.SFTPClient | None = getattr(self._per_thread, "ftp", None)
        if ftp is None or ftp.sock.closed:
            try:
                ftp = self.client.open_sftp()
            except paramiko.SSHException:  # MaxSessions reached: this thread gets its own connection
                client = self._new_client()
                weakref.finalize(threading.current_thread(), client.close)
                ftp = client.open_sftp()
            self._per_thread.ftp = ftp
        return ftp

    def makedirs(self, path: str, exist_ok: bool = False, mode: int = 511) -> None:
        """As fsspec's, but a directory created meanwhile by another thread or process is fine."""
        path = self._strip_protocol(path)
        if not exist_ok and self.exists(path):
            raise FileExistsError(f"File exists: {path}")
        current = ""
        for part in (p for p in path.split("/") if p):
            current = f"{current}/{part}" if current or path.startswith("/") else part
            if self.isdir(current):
                continue
            try:
                self.ftp.mkdir(current, mode)
            except OSError:
                if not self.isdir(current):
                    raise

    def reconnect_if_closed(self) -> None:
        """Open a new connection when the cached one was closed (server restart, network drop)."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            self._connect()


class SFTPStore(Store):
    """A directory on a host reachable by SSH, accessed with SFTP."""

    schemes = ("ssh", "sftp")
    env_secrets = {"password": "PDATA_SSH_PASSWORD", "passphrase": "PDATA_SSH_PASSPHRASE"}

    def _parse(self, url: str, parts: SplitResult) -> tuple[str, str]:
        self._plain_url(url, parts)
        if "host_key_policy" in self._options:
            raise InvalidStoreURLError(
                "storage option host_key_policy is not accepted: pilot-data always verifies SSH host keys "
                "against known_hosts"
            )
        try:
            url_port = parts.port
        except ValueError as exc:
            raise InvalidStoreURLError(f"bad port in PilotData URL {redact_url(url)!r}") from exc
        host = parts.hostname
        if not host:
            raise InvalidStoreURLError(f"PilotData URL {redact_url(url)!r} names no host")
        if not parts.path.startswith("/"):
            raise InvalidStoreURLError(
                f"PilotData URL {redact_url(url)!r} needs an absolute directory path after the host"
            )
        for option, value in (("username", parts.username), ("password", parts.password), ("port", url_port)):
            if value is None:
                continue
            if option in self._options and self._options[option] != value:
                raise InvalidStoreURLError(
                    f"PilotData URL {redact_url(url)!r} and storage option {option!r} disagree"
                )
            self._options[option] = value
        self.host = host
        root = posixpath.normpath(parts.path)
        shown_host = f"[{host}]" if ":" in host else host
        user = f"{parts.username}@" if parts.username else ""
        port = f":{url_port}" if url_port is not None else ""
        return root, f"{self.scheme}://{user}{shown_host}{port}{root}"

    @property
    def port(self) -> int:
        """The SSH port (22 unless the URL or options say otherwise)."""
        return int(self._options.get("port") or 22)

    @property
    def known_hosts(self) -> str:
        """The known_hosts file host keys are checked against."""
        return os.path.expanduser(str(self._options.get("known_hosts") or DEFAULT_KNOWN_HOSTS))

    def _make_fs(self) -> Any:
        key_filename = self._options.get("key_filename")
        for path in [key_filename] if isinstance(key_filename, str) else (key_filename or []):
            if not os.path.exists(os.path.expanduser(path)):
                raise StoreAuthError(f"cannot connect to {self.url}: key_filename {path} does not exist")
        options = {**_DEFAULT_TIMEOUTS, **self._options}
        fs = VerifiedSFTPFileSystem(self.host, **options)
        fs.reconnect_if_closed()
        return fs

    def _classify(self, exc: BaseException) -> tuple[type[StoreError], str] | None:
        user = self._options.get("username") or "the current user"
        if isinstance(exc, paramiko.BadHostKeyException):
            return StoreAuthError, (
                f"the host key of {self.host}:{self.port} does not match the one in "
                f"{self.known_hosts} (possible man-in-the-middle; if the host was re-keyed, replace its line)"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return StoreAuthError, f"SSH authentication failed for {user}: {exc}"
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return StoreUnreachableError, exc.strerror or str(exc)
        if isinstance(exc, paramiko.SSHException):
            if "authentication" in str(exc).lower():
                return StoreAuthError, f"SSH authentication failed for {user}: {exc}"
            return StoreUnreachableError, f"SSH session failed: {exc}"
        if isinstance(exc, EOFError) or (isinstance(exc, OSError) and "socket is closed" in str(exc).lower()):
            return StoreUnreachableError, "the SSH connection was closed"
        return super()._classify(exc)
