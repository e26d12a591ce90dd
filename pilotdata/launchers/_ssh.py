"""SSH connections for the ssh and slurm+ssh launchers: paramiko with a *verified* host key.

The host key must be in ``known_hosts`` (option; default ``~/.ssh/known_hosts``): an unknown host is
refused (``RejectPolicy``), never silently trusted. Login is by key (``key_filename`` option, else the
usual ``~/.ssh/id_*``); passwords in URLs are refused. Every paramiko / socket failure becomes a
:class:`~pilotdata.errors.LaunchError` naming ``user@host:port`` and the file at fault.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pilotdata.errors import LaunchError
from pilotdata.hostkeys import fingerprint, verifying_client
from pilotdata.launchers._runner import COMMAND_TIMEOUT, CommandRunner, RunResult
from pilotdata.redaction import redact_url

if TYPE_CHECKING:
    import paramiko

SSH_OPTIONS = frozenset({"username", "port", "key_filename", "known_hosts", "connect_timeout"})
"""Options every SSH-based launcher accepts (URL user and port win over ``username`` / ``port``)."""


class SshRunner(CommandRunner):
    """Runs commands and SFTP file operations on one host; connects on first use, reconnects if dropped."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        port: int | None = None,
        key_filename: str | None = None,
        known_hosts: str | None = None,
        connect_timeout: float = 15.0,
    ) -> None:
        safe = redact_url(url)
        try:
            parts = urlsplit(url)
            url_port = parts.port
        except ValueError as exc:
            raise LaunchError(f"{safe}: bad host or port in URL") from exc
        if parts.password is not None:
            raise LaunchError(f"{safe}: passwords in URLs are not supported; log in with a key (key_filename)")
        if not parts.hostname:
            raise LaunchError(f"{safe}: the URL names no host (expected {parts.scheme}://[user@]host[:port])")
        self.host = parts.hostname
        self.port = int(url_port or port or 22)
        self.username = parts.username or username or _local_user()
        self.key_filename = os.path.expanduser(key_filename) if key_filename else None
        self.known_hosts = os.path.expanduser(known_hosts or "~/.ssh/known_hosts")
        self.connect_timeout = float(connect_timeout)
        self.where = f"{self.username}@{self.host}:{self.port}"
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------ connection
    def _connect(self) -> paramiko.SSHClient:
        import paramiko

        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self.close()
        if not os.path.isfile(self.known_hosts):
            raise LaunchError(
                f"{self.where}: known_hosts file {self.known_hosts} does not exist, so the host key "
                "cannot be verified; add the host's key to it (after checking its fingerprint) or pass "
                "known_hosts="
            )
        if self.key_filename and not os.path.isfile(self.key_filename):
            raise LaunchError(f"{self.where}: key_filename {self.key_filename} does not exist")
        try:
            client = verifying_client(self.host, self.port, self.known_hosts, LaunchError, self.where)
        except (OSError, paramiko.SSHException) as exc:
            raise LaunchError(f"{self.where}: cannot read known_hosts file {self.known_hosts}: {exc}") from exc
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.username,
                key_filename=self.key_filename,
                look_for_keys=self.key_filename is None,
                allow_agent=self.key_filename is None,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
            )
        except LaunchError:  # from the host key policy
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise LaunchError(
                f"{self.where}: the host key ({exc.key.get_name()} {fingerprint(exc.key)}) does not match the "
                f"one in {self.known_hosts}; refusing to connect (possible man-in-the-middle; if the host was "
                "re-keyed, replace its line after checking the new fingerprint)"
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            key = f"key_filename {self.key_filename}" if self.key_filename else "the default keys in ~/.ssh"
            raise LaunchError(f"{self.where}: authentication failed for user {self.username} with {key}") from exc
        except paramiko.SSHException as exc:
            client.close()
            raise LaunchError(f"{self.where}: SSH connection failed: {exc}") from exc
        except (OSError, EOFError) as exc:
            client.close()
            raise LaunchError(f"{self.where}: cannot reach the host: {exc}") from exc
        self._client = client
        return client

    def _sftp_client(self) -> paramiko.SFTPClient:
        import paramiko

        client = self._connect()
        if self._sftp is None:
            try:
                self._sftp = client.open_sftp()
            except (paramiko.SSHException, OSError) as exc:
                raise LaunchError(f"{self.where}: cannot open an SFTP session: {exc}") from exc
        return self._sftp

    def close(self) -> None:
        """Close SFTP and SSH."""
        with self._lock:
            for closable in (self._sftp, self._client):
                if closable is not None:
                    try:
                        closable.close()
                    except (OSError, EOFError):
                        pass
            self._sftp = None
            self._client = None

    # -------------------------------------------------------------------------------- commands
    def run(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> RunResult:
        """Run ``argv`` through the login shell, quoted; ``env`` (non-secret) is exported before it."""
        import paramiko

        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in (env or {}).items())
        command = exports + shlex.join(argv)
        with self._lock:
            client = self._connect()
            try:
                stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
                stdin.close()
                out = stdout.read().decode(errors="replace")
                err = stderr.read().decode(errors="replace")
                code = stdout.channel.recv_exit_status()
            except TimeoutError as exc:
                raise LaunchError(f"{self.where}: {argv[0]} did not answer within {timeout:g} s") from exc
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self.close()
                raise LaunchError(f"{self.where}: running {argv[0]} failed: {exc}") from exc
        return RunResult(code, out, err)

    # ----------------------------------------------------------------------------------- files
    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a temporary file, ``chmod`` it before writing, then rename it over ``path``."""
        tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
        with self._lock:
            sftp = self._sftp_client()
            try:
                with sftp.open(tmp, "w") as fh:
                    sftp.chmod(tmp, mode)
                    fh.write(text.encode())
                sftp.posix_rename(tmp, path)
            except (OSError, EOFError) as exc:
                _quiet(sftp.remove, tmp)
                raise LaunchError(f"{self.where}: cannot write {path}: {_why(exc)}") from exc

    def read_file(self, path: str) -> str | None:
        """The file's text over SFTP, None if missing."""
        with self._lock:
            sftp = self._sftp_client()
            try:
                with sftp.open(path, "r") as fh:
                    data: bytes = fh.read()
            except FileNotFoundError:
                return None
            except (OSError, EOFError) as exc:
                raise LaunchError(f"{self.where}: cannot read {path}: {_why(exc)}") from exc
        return data.decode(errors="replace")

    def makedirs(self, path: str) -> None:
        """``mkdir -p`` over SFTP."""
        with self._lock:
            sftp = self._sftp_client()
            current = "/" if path.startswith("/") else ""
            for part in [p for p in path.split("/") if p]:
                current = posixpath.join(current, part)
                try:
                    sftp.stat(current)
                    continue
                except FileNotFoundError:
                    pass
                except (OSError, EOFError) as exc:
                    raise LaunchError(f"{self.where}: cannot create directory {path}: {_why(exc)}") from exc
                try:
                    sftp.mkdir(current)
                except (OSError, EOFError) as exc:
                    raise LaunchError(f"{self.where}: cannot create directory {current}: {_why(exc)}") from exc

    def absolute(self, path: str) -> str:
        """``~``-prefixed and relative paths start at the remote home directory."""
        if path.startswith("/"):
            return posixpath.normpath(path)
        with self._lock:
            if self._home is None:
                try:
                    self._home = self._sftp_client().normalize(".")
                except (OSError, EOFError) as exc:
                    raise LaunchError(f"{self.where}: cannot find the home directory: {_why(exc)}") from exc
        rel = path[1:].lstrip("/") if path.startswith("~") else path
        if path.startswith("~") and not (path == "~" or path.startswith("~/")):
            raise LaunchError(f"{self.where}: {path!r}: only ~ and ~/ are expanded (not ~user)")
        return posixpath.normpath(posixpath.join(self._home, rel))


def ssh_runner_from_options(url: str, options: Mapping[str, Any]) -> SshRunner:
    """An :class:`SshRunner` for ``url`` from the launcher options in :data:`SSH_OPTIONS`."""
    return SshRunner(url, **{k: v for k, v in options.items() if k in SSH_OPTIONS and v is not None})


def _local_user() -> str:
    import getpass

    return getpass.getuser()


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _quiet(func: Any, *args: Any) -> None:
    try:
        func(*args)
    except (OSError, EOFError):
        pass
