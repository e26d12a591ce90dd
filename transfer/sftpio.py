"""SFTP copies over fsspec's SFTPFileSystem: a pool of SFTP channels and tuned paramiko I/O.

paramiko's ``SFTPClient`` must not be used by two threads at once: both would read replies from
the one channel and take each other's. fsspec's SFTPFileSystem has a single client (``fs.ftp``),
so the engine opens its own channels on the filesystem's SSH transport instead, through a
:class:`ChannelPool` shared by every copy over that connection. A channel is held by one file
operation at a time and reused afterwards; there are at most :data:`MAX_CHANNELS` (4) per
connection: OpenSSH's ``MaxSessions`` is 10 and ``fs.ftp`` takes one, and paramiko does its
packet work in Python under the GIL, so on loopback more channels add thread switching, not
speed (a copy asking for more workers waits for a free channel). A channel that saw an error
is closed, not reused; if the server refuses a channel the pool lives with the ones it has.

Tuning (loopback, 2 cores, 512 MiB file: about 300 MB/s each way, like scp; 190-210 before):

- AES-GCM: paramiko prefers aes128-ctr + hmac-sha2-256, and the separate MAC costs about a third
  of the throughput. When the connection negotiated a non-AEAD cipher and AES-GCM is among the
  ciphers it allows, the first pool on it moves AES-GCM to the front of the connection's own
  preference list (``Transport.get_security_options``; nothing the filesystem disabled is ever
  added) and rekeys (``renegotiate_keys``, as paramiko does by itself every 512 MiB). The host
  key and the authentication are untouched; if the rekey fails the connection is reopened.
- channels get a 32 MiB window and 128 KiB packets (paramiko's defaults are 2 MiB / 32 KiB);
- requests are 255 KiB against OpenSSH (its sftp-server takes 256 KiB messages), 32 KiB else;
- reads use ``readv`` on windows of >= 16 MiB, all requests of a window in flight at once
  (paramiko's ``prefetch`` rescans every buffered block per read: quadratic on big files);
- writes are pipelined (``set_pipelined``): acknowledgements are collected at ``close``.

Publishing is ``posix-rename@openssh.com`` of the part file, which replaces the target
atomically (servers without the extension: remove + rename, not atomic).
"""

from __future__ import annotations

import contextlib
import errno
import stat as stat_mod
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from transfer import paths
from transfer.endpoints import Chunk, Endpoint, Writer, quiet_close, token

__all__ = ["MAX_CHANNELS", "ChannelPool", "SFTPEndpoint", "SFTPWriter", "pool_for", "prefer_gcm", "sftp_iter"]

MAX_CHANNELS = 4
WINDOW = 32 * 2**20
PACKET = 128 * 2**10
OPENSSH_REQUEST = 255 * 2**10
PLAIN_REQUEST = 32 * 2**10
MIN_READ_WINDOW = 16 * 2**20


GCM_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def prefer_gcm(transport: Any) -> bool:
    """Rekey ``transport`` onto AES-GCM if it uses another cipher and allows GCM; True if it switched."""
    if str(getattr(transport, "remote_cipher", "")).endswith("gcm@openssh.com"):
        return False
    allowed = tuple(getattr(transport, "preferred_ciphers", ()))  # after the filesystem's disabled_algorithms
    gcm = [c for c in GCM_CIPHERS if c in allowed]
    if not gcm:
        return False
    options = transport.get_security_options()
    options.ciphers = tuple(gcm) + tuple(c for c in options.ciphers if c not in gcm)
    transport.renegotiate_keys()
    return str(getattr(transport, "remote_cipher", "")).endswith("gcm@openssh.com")


class ChannelPool:
    """Up to ``limit`` SFTP channels on one SSH transport, each lent to one user at a time."""

    def __init__(self, transport: Any, limit: int = MAX_CHANNELS) -> None:
        self.transport = transport
        self.limit = limit
        self._idle: list[Any] = []
        self._open = 0
        self._cond = threading.Condition()
        remote = str(getattr(transport, "remote_version", "")).lower()
        self.request = OPENSSH_REQUEST if "openssh" in remote else PLAIN_REQUEST
        self.cipher = str(getattr(transport, "remote_cipher", ""))

    def acquire(self) -> Any:
        """An SFTPClient for the caller's exclusive use (blocks while all are lent)."""
        while True:
            with self._cond:
                while not self._idle and self._open >= self.limit:
                    self._cond.wait()
                if self._idle:
                    return self._idle.pop()
                self._open += 1
            try:
                return self._new_client()
            except Exception as exc:
                with self._cond:
                    self._open -= 1
                    refused = "ChannelException" in type(exc).__name__ and self.transport.is_active()
                    if not refused or self._open == 0:
                        raise
                    # the server allows fewer sessions than we hoped: live with the ones we have
                    self.limit = self._open
                    self._cond.notify_all()

    def _new_client(self) -> Any:
        import paramiko

        client = paramiko.SFTPClient.from_transport(self.transport, window_size=WINDOW, max_packet_size=PACKET)
        if client is None:
            raise ConnectionError("the SSH server refused an SFTP channel")
        return client

    def release(self, client: Any, *, broken: bool = False) -> None:
        """Give ``client`` back; a ``broken`` one is closed instead of reused."""
        closed = broken or getattr(getattr(client, "sock", None), "closed", False)
        with self._cond:
            if closed:
                self._open -= 1
            else:
                self._idle.append(client)
            self._cond.notify()
        if closed:
            quiet_close(client)

    @contextlib.contextmanager
    def channel(self) -> Iterator[Any]:
        """``with pool.channel() as client:`` -- released (or discarded after an error) on exit."""
        client = self.acquire()
        try:
            yield client
        except BaseException:
            self.release(client, broken=True)
            raise
        self.release(client)

    def close(self) -> None:
        """Close the idle channels."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for c in idle:
            quiet_close(c)


_POOLS: weakref.WeakKeyDictionary[Any, ChannelPool] = weakref.WeakKeyDictionary()
_POOLS_LOCK = threading.Lock()


def pool_for(fs: Any) -> ChannelPool:
    """The channel pool of ``fs``'s SSH connection (reconnecting ``fs`` if the connection died)."""
    with _POOLS_LOCK:
        transport = fs.client.get_transport()
        if (transport is None or not transport.is_active()) and hasattr(fs, "_connect"):
            fs._connect()  # fsspec's SFTPFileSystem: a new SSHClient and fs.ftp
            transport = fs.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionError(f"the SSH connection to {getattr(fs, 'host', '?')} is closed")
        pool = _POOLS.get(transport)
        if pool is None:
            try:
                prefer_gcm(transport)
            except Exception:  # the connection may have died in the rekey: open a fresh one, as before
                if transport.is_active() or not hasattr(fs, "_connect"):
                    raise
                fs._connect()
                transport = fs.client.get_transport()
            pool = _POOLS[transport] = ChannelPool(transport)
        return pool


class SFTPEndpoint(Endpoint):
    """A directory on an SFTP server, used through pooled channels."""

    kind = "sftp"

    def __init__(self, fs: Any, root: str, *, read_only: bool = False) -> None:
        super().__init__(fs, root, read_only=read_only)
        self.pool = pool_for(fs)

    def url(self, rel: str) -> str:
        """``sftp://user@host:port/path`` (no secrets: the password is never in a URL)."""
        kwargs = getattr(self.fs, "ssh_kwargs", {}) or {}
        user, port = kwargs.get("username"), kwargs.get("port")
        auth = f"{user}@" if user else ""
        netloc = f"{auth}{getattr(self.fs, 'host', '')}" + (f":{port}" if port and int(port) != 22 else "")
        path = self.path(rel)
        return f"sftp://{netloc}{path if path.startswith('/') else '/' + path}"

    def on_transient_error(self) -> None:
        """Reconnect if the SSH connection died (a new pool comes with the new transport)."""
        if not self.pool.transport.is_active():
            self.pool = pool_for(self.fs)

    def size(self, rel: str) -> int:
        """``stat`` size."""
        with self.pool.channel() as client:
            return int(client.stat(self.path(rel)).st_size)

    def iter_read(self, rel: str, size_hint: int | None, chunk_size: int) -> Iterator[Chunk]:
        """Windowed ``readv`` to the file's size, on a channel held for the whole read."""
        with self.pool.channel() as client:
            f = client.open(self.path(rel), "rb")
            try:
                yield from sftp_iter(f, self.pool.request, chunk_size, self.url(rel))
            finally:
                quiet_close(f)

    def writer(self, rel: str, size_hint: int | None) -> Writer:
        """Pipelined writes into a part file; ``posix-rename`` publishes."""
        final = self.path(rel)
        self._makedirs(final.rpartition("/")[0])
        client = self.pool.acquire()
        try:
            return SFTPWriter(client, final, self.pool, self.read_only)
        except BaseException:
            self.pool.release(client, broken=True)
            raise

    def remove(self, rel: str) -> None:
        """Remove ``rel`` (missing is fine)."""
        with self.pool.channel() as client:
            try:
                client.remove(self.path(rel))
            except FileNotFoundError:
                pass

    def _make_dir(self, directory: str) -> None:
        with self.pool.channel() as client:
            missing: list[str] = []
            current = directory
            while current and current != "/":
                try:
                    client.stat(current)
                    break
                except FileNotFoundError:
                    missing.append(current)
                    current = current.rpartition("/")[0]
            for d in reversed(missing):
                try:
                    client.mkdir(d)
                except OSError:
                    # another worker may have made it meanwhile; anything else shows here
                    if not stat_mod.S_ISDIR(client.stat(d).st_mode or 0):
                        raise


class SFTPWriter(Writer):
    """A part file written over one lent channel; ``posix_rename`` onto the final name publishes."""

    def __init__(self, client: Any, final: str, pool: ChannelPool, read_only: bool) -> None:
        self.client = client
        self.pool = pool
        self.final = final
        self.read_only = read_only
        self.tmp = paths.part_name(final, token())
        self._released = False
        self.f: Any = client.open(self.tmp, "wb", bufsize=0)  # unbuffered: no copy into a BytesIO
        self.f.MAX_REQUEST_SIZE = pool.request
        self.f.set_pipelined(True)

    def write(self, data: Chunk) -> None:
        """Pipelined SFTP writes (acknowledgements are collected on close)."""
        self.f.write(data)

    def finish(self) -> None:
        """Close: waits for every write acknowledgement, raising the first failure."""
        self.f.close()

    def stored_size(self) -> int | None:
        """None: ``close`` checked every pipelined write's acknowledgement; a ``stat`` adds a round trip."""
        return None

    def read_back(self, chunk_size: int) -> Iterator[bytes] | None:
        """The part file's bytes."""
        def gen() -> Iterator[bytes]:
            f = self.client.open(self.tmp, "rb")
            try:
                yield from sftp_iter(f, self.pool.request, chunk_size, self.tmp)
            finally:
                quiet_close(f)
        return gen()

    def publish(self) -> None:
        """chmod a-w if read-only, then an atomic ``posix-rename@openssh.com``; the channel goes back."""
        if self.read_only:
            self.client.chmod(self.tmp, 0o444)
        try:
            self.client.posix_rename(self.tmp, self.final)
        except OSError as exc:
            if "posix-rename" not in str(exc) and getattr(exc, "errno", None) != errno.EOPNOTSUPP:
                raise
            try:  # a server without the extension: plain SFTP rename will not replace a file
                self.client.remove(self.final)
            except FileNotFoundError:
                pass
            self.client.rename(self.tmp, self.final)
        self._release(broken=False)

    def abort(self) -> None:
        """Close and remove the part file; the channel is discarded."""
        if self._released:
            return
        quiet_close(self.f)
        try:
            self.client.remove(self.tmp)
        except Exception:  # best effort: the channel may be the thing that broke
            pass
        self._release(broken=True)

    def _release(self, broken: bool) -> None:
        if not self._released:
            self._released = True
            self.pool.release(self.client, broken=broken)


def sftp_iter(f: Any, request: int, chunk_size: int, name: str) -> Iterator[bytes]:
    """Read paramiko SFTPFile ``f`` to its (fstat) size: one READ when small, else ``readv`` windows.

    A window is ``max(chunk_size, 16 MiB)`` and is yielded whole.
    """
    f.MAX_REQUEST_SIZE = request
    size = int(f.stat().st_size)
    if size <= request:  # one request: no prefetch thread
        data = f.read(size) if size else b""
        if len(data) != size:
            raise EOFError(f"short read of {name}: the file changed during the copy")
        if data:
            yield data
        return
    window = max(chunk_size, MIN_READ_WINDOW)
    offset = 0
    while offset < size:
        end = min(offset + window, size)
        data = b"".join(f.readv([(o, min(request, end - o)) for o in range(offset, end, request)]))
        if len(data) != end - offset:
            raise EOFError(f"short read of {name} at offset {offset}: the file changed during the copy")
        offset = end
        yield data  # the whole window: cutting it to chunk_size would copy it once more
