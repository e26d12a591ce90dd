"""Real servers for the tests, started on 127.0.0.1 and free ports in temporary directories.

Each ``start_*`` returns a handle with the connection details and a ``stop()`` that stops the
server by PID. Recipes: ``../shared/TESTING.md``. Nothing here listens on anything but loopback.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    condition: Callable[[], Any], timeout: float = 10.0, message: str = "condition", interval: float = 0.01
) -> Any:
    """Poll ``condition`` until it returns a truthy value (returned) or raise after ``timeout``.

    The interval grows from ``interval`` to 0.25 s. The bounded replacement for ``sleep`` in tests.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the condition may raise until the thing is ready
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {message}{extra}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.25)


def _accepts(family: socket.AddressFamily, address: str | tuple[str, int]) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(address) == 0


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    return _accepts(socket.AF_INET, (host, port))


def unix_socket_open(path: Path) -> bool:
    """Whether a server accepts connections on the unix socket ``path`` (the file exists from its ``bind``,
    before its ``listen``: a connection in between is refused)."""
    return _accepts(socket.AF_UNIX, str(path))


def require_binary(name: str, package: str) -> str:
    """Path of ``name`` or a clear failure naming the Debian package (scripts/test installs it)."""
    path = shutil.which(name) or next(
        (str(p) for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}") if p.exists()), None
    )
    if not path:
        raise RuntimeError(f"{name} not found: install the Debian package {package} (scripts/test does)")
    return path


def _kill_pidfile(pidfile: Path, sig: int = signal.SIGTERM) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    try:
        wait_until(lambda: not process_alive(pid), 10, f"pid {pid} from {pidfile} to exit")
    except AssertionError:  # it ignored the signal: it goes anyway
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def children(pid: int) -> list[tuple[int, str]]:
    """The processes whose parent is ``pid``, each with its state (``S``, ``R``, ``Z`` ...), from ``/proc``."""
    found: list[tuple[int, str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid:
            found.append((int(entry), state))
    return found


def _gone(pid: int) -> bool:
    return not process_alive(pid)


def kill_server_and_sessions(pidfile: Path) -> None:
    """Stop a forking server (sshd) by its pidfile, and the sessions it forked.

    Stopping sshd leaves its sessions running, by design, and a session whose client can no longer reach
    it (the client's network namespace was deleted) then stays forever. The sessions are listed while the
    server still is their parent; the server goes first (it forks no more), then they do.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    sessions = [child for child, _ in children(pid)] if process_alive(pid) else []
    _kill_pidfile(pidfile)
    for session in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.kill(session, signal.SIGTERM)
    for session in sessions:
        try:
            wait_until(functools.partial(_gone, session), 10, f"session {session} to exit")
        except AssertionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(session, signal.SIGKILL)


# --------------------------------------------------------------------------- Redis
@dataclass
class RedisServer:
    """A redis-server on loopback; ``args`` is the command line it was started with."""

    port: int
    directory: Path
    password: str | None = None
    args: list[str] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server's pid (from its pid file)."""
        return int((self.directory / "redis.pid").read_text().strip())

    def stop(self) -> None:
        _kill_pidfile(self.directory / "redis.pid")

    def kill9(self) -> None:
        """SIGKILL the server (no shutdown, no final fsync: what it wrote to its AOF is all there is)."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not process_alive(pid), 10, f"redis {pid} to die")
        wait_until(lambda: not _port_open(self.port), 10, f"port {self.port} to close")

    def shutdown(self) -> None:
        """An orderly stop (SIGTERM: the server writes its data and exits)."""
        self.stop()
        wait_until(lambda: not _port_open(self.port), 10, f"port {self.port} to close")

    def start_again(self) -> None:
        """Start the server again with the same command line (same port, directory and AOF)."""
        (self.directory / "redis.pid").unlink(missing_ok=True)
        subprocess.run(self.args, check=True)
        wait_until(lambda: _port_open(self.port), 10, f"redis-server on port {self.port}")


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie nobody has reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` of a server's log, headed by its path, for a failure message."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"--- {path}: (missing)"
    return f"--- {path}:\n" + "\n".join(text)


def start_redis(directory: Path, password: str | None = None, extra: list[str] | None = None) -> RedisServer:
    """Start redis-server on a free loopback port, daemonized, no persistence (``extra`` may turn AOF on)."""
    binary = require_binary("redis-server", "redis-server")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--daemonize", "yes", "--pidfile", str(directory / "redis.pid"),
        "--logfile", str(directory / "redis.log"), "--save", "", "--appendonly", "no",
    ]
    if password:
        args += ["--requirepass", password]
    args += extra or []
    subprocess.run(args, check=True)
    server = RedisServer(port, directory, password, args)
    wait_until(lambda: _port_open(port), 10, f"redis-server on port {port}")
    return server


DURABLE = ["--appendonly", "yes", "--appendfsync", "always"]
"""``extra`` for :func:`start_redis`: every write is in the AOF (fsynced) before Redis answers."""


def _reply(value: Awaitable[T] | T) -> T:
    """A reply of redis-py's sync client: its stubs type every reply ``Awaitable[T] | T`` (one signature for
    the sync and the asyncio client); the sync client's is never awaitable."""
    assert not inspect.isawaitable(value)
    return value


def redis_dump(url: str) -> bytes:
    """Every key and every value in the Redis database at ``url``, as bytes: where the tests look for
    secrets (a test may scan a database; the product never does)."""
    import redis

    client = redis.Redis.from_url(url)
    out: list[bytes] = []
    try:
        for key in client.scan_iter(count=1000):
            kind = _reply(client.type(key)).decode()
            out.append(key)
            if kind == "string":
                out.append(_reply(client.get(key)) or b"")
            elif kind == "hash":
                out += [b"%s=%s" % kv for kv in _reply(client.hgetall(key)).items()]
            elif kind == "list":
                out += _reply(client.lrange(key, 0, -1))
            elif kind == "set":
                out += _reply(client.smembers(key))
            elif kind == "zset":
                out += _reply(client.zrange(key, 0, -1))
            elif kind == "stream":
                out += [repr(entry).encode() for entry in _reply(client.xrange(key))]
    finally:
        client.close()
    return b"\n".join(out)


# ----------------------------------------------------------------------- PostgreSQL
@dataclass
class PostgresServer:
    """A PostgreSQL 15 cluster on loopback, run as the ``postgres`` user, trust auth."""

    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        pg_ctl = require_binary("pg_ctl", "postgresql")
        subprocess.run(
            ["runuser", "-u", "postgres", "--", pg_ctl, "-D", str(self.directory / "data"), "-m", "fast",
             "-w", "stop"],
            check=False, capture_output=True,
        )


def start_postgres(directory: Path) -> PostgresServer:
    """initdb + pg_ctl start on a free loopback port with fsync off (test data only)."""
    initdb = require_binary("initdb", "postgresql")
    pg_ctl = require_binary("pg_ctl", "postgresql")
    directory.mkdir(parents=True, exist_ok=True)
    shutil.chown(directory, "postgres", "postgres")
    os.chmod(directory, 0o755)
    parent = directory.parent
    while parent != parent.parent:  # postgres must be able to traverse to its directory
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
        parent = parent.parent
    data = directory / "data"
    run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True, capture_output=True,
    )
    port = free_port()
    opts = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-l", str(directory / "pg.log"), "-w", "-o", opts, "start"],
        check=True, capture_output=True,
    )
    wait_until(lambda: _port_open(port), 20, f"postgres on port {port}")
    return PostgresServer(port, directory)


# --------------------------------------------------------------------------- sshd
@dataclass
class SshServer:
    """An OpenSSH sshd on loopback with key login for ``user`` and a known_hosts file for the client."""

    port: int
    directory: Path
    user: str
    key_file: Path
    known_hosts: Path
    host: str = "127.0.0.1"
    host_public_key: str = ""
    _pid: int = field(default=0, repr=False)

    def stop(self) -> None:
        kill_server_and_sessions(self.directory / "sshd.pid")

    def storage_options(self) -> dict[str, Any]:
        """Options for pilot-data's SFTP store / SSH launcher (key file + verified host key)."""
        return {
            "username": self.user,
            "key_filename": str(self.key_file),
            "known_hosts": str(self.known_hosts),
            "port": self.port,
        }


def start_sshd(directory: Path, user: str = "root") -> SshServer:
    """Start sshd with its own host key, a user key authorized for ``user`` and a known_hosts file."""
    sshd = require_binary("sshd", "openssh-server")
    keygen = require_binary("ssh-keygen", "openssh-client")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    host_key = directory / "host_ed25519"
    user_key = directory / "user_ed25519"
    for key in (host_key, user_key):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    auth_dir = directory / "authorized_keys"
    auth_dir.mkdir(exist_ok=True)
    (auth_dir / user).write_text((directory / "user_ed25519.pub").read_text())
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {directory}/sshd.pid
AuthorizedKeysFile {auth_dir}/%u
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AcceptEnv PDATA_*
Subsystem sftp internal-sftp
"""
    )
    subprocess.run([sshd, "-f", str(config), "-E", str(directory / "sshd.log")], check=True)
    wait_until(lambda: _port_open(port), 10, f"sshd on port {port}")
    host_pub = (directory / "host_ed25519.pub").read_text().split()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    return SshServer(port, directory, user, user_key, known_hosts, host_public_key=" ".join(host_pub[:2]))


# ------------------------------------------------------------------------- moto S3
@dataclass
class MotoServer:
    """moto_server (S3) on loopback; credentials ``testing/testing``."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self) -> dict[str, Any]:
        """s3fs options for this endpoint (no region_name: moto rejects the LocationConstraint)."""
        return {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": self.endpoint_url}}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_moto(directory: Path) -> MotoServer:
    """Start ``moto_server`` on a free loopback port."""
    binary = shutil.which("moto_server")
    if not binary:
        raise RuntimeError("moto_server not found: pip install 'moto[server]' (scripts/test does)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(directory / "moto.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: _port_open(port), 20, f"moto_server on port {port}")
    return MotoServer(port, proc)
