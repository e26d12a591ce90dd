"""Serving the dashboard: one listening socket on the address asked, uvicorn on it, a clean stop.

:func:`bind` opens exactly one TCP socket on exactly one address (an IP literal, or the first address a
name resolves to): nothing else listens, on no other interface or address family. :func:`serve` runs
uvicorn (the ASGI server; HTTP/1.1 by h11, no websockets, no access log: the log would print the token)
on that socket until SIGINT or SIGTERM, then returns.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp

INSTALL_HINT = "pip install 'pilot-data[dashboard]'"
"""How to install the dashboard's dependencies (Starlette and uvicorn)."""
DEFAULT_PORT = 8765


def new_token() -> str:
    """A random access token (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


class BindError(ValueError):
    """The address or port cannot be listened on; the message names which and why."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Listener:
    """A bound, listening socket and the URL it serves."""

    sock: socket.socket
    host: str
    """The address bound (an IP literal)."""
    port: int

    def url(self, token: str) -> str:
        """The page's URL with its token."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/{token}/"


def bind(address: str, port: int) -> Listener:
    """Listen on ``address``:``port`` (``port`` 0 picks a free one); :class:`BindError` names the field."""
    if not 0 <= port <= 65535:
        raise BindError(f"port must be between 0 and 65535, not {port}", field="port")
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        host = str(ip)
    except ValueError:
        try:
            infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise BindError(f"address {address!r} is not an IP address or a name this host resolves "
                            f"({exc.strerror})", field="bind") from None
        family, host = infos[0][0], str(infos[0][4][0])
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on connections of a socket that says it
    # is TCP; with it on, a response written as head then body waits ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # this address only, no IPv4 mapped
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if port and exc.errno in (98, 48):  # EADDRINUSE (Linux, BSD)
            raise BindError(f"port {port} on {host} is in use: choose another with --port (0 picks a free one)",
                            field="port") from None
        raise BindError(f"cannot listen on {host} port {port}: {exc.strerror}", field="bind") from None
    sock.set_inheritable(False)
    return Listener(sock, host, int(sock.getsockname()[1]))


@contextlib.contextmanager
def _stopped_by_signals(server: object) -> Iterator[None]:
    """SIGINT and SIGTERM ask uvicorn to stop gracefully (and nothing is re-raised afterwards)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handle = server.handle_exit  # type: ignore[attr-defined]
    old = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def serve(app: ASGIApp, listener: Listener) -> None:
    """Serve ``app`` on ``listener`` until SIGINT or SIGTERM; close the socket after."""
    import uvicorn

    class Server(uvicorn.Server):
        def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
            return _stopped_by_signals(self)

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", ws="none",
                            http="h11", server_header=False, timeout_graceful_shutdown=5)
    try:
        Server(config).run(sockets=[listener.sock])
    finally:
        listener.sock.close()
