"""Copies between the nodes of one pilot: each node serves its cache to the others (TaskVine-style peers).

A node that holds a DataUnit in its cache serves it read-only over HTTP on its own address (never
``0.0.0.0``), to requests carrying the pilot's random token (``X-Pdata-Token``; made by the agent,
handed to the nodes over their control pipes, never on a command line or in coordination).
``GET /<cache key>/<file>`` streams a complete cache entry's file; ``HEAD`` gives its size. Nothing
else is served: the key must be cached (complete), the file name is normalised and must be in the
entry's manifest.

:class:`PeerFileSystem` is the reading side as an fsspec filesystem, so the copy engine
(:func:`transfer.copy_files` through :meth:`transfer.PilotCache.ensure`) fetches from a peer as it
would from a store: in parallel, verified against the DataUnit's manifest (sizes and sha256), and
published atomically into the node's cache.
"""

from __future__ import annotations

import hmac
import http.client
import io
import logging
import shutil
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fsspec.spec import AbstractFileSystem

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Pdata-Token"
TIMEOUT = 60.0
"""Seconds a peer connection may stall before the read fails (the copy engine then retries)."""


class CacheServer:
    """Serves complete entries of one :class:`transfer.PilotCache` to the pilot's other nodes."""

    def __init__(self, cache: Any, token: str, address: str) -> None:
        self.cache = cache
        self.token = token
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("peer %s: " + format, self.client_address[0], *args)

            def do_HEAD(self) -> None:
                server._serve(self, body=False)

            def do_GET(self) -> None:
                server._serve(self, body=True)

        self._httpd = ThreadingHTTPServer((address, 0), Handler)
        self._httpd.daemon_threads = True
        self.address = address
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="peer-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where peers reach this server."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def _serve(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        from transfer import paths

        given = handler.headers.get(TOKEN_HEADER) or ""
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            handler.send_error(403, "bad token")
            return
        raw = urllib.parse.unquote(urllib.parse.urlsplit(handler.path).path).lstrip("/")
        key, _, rel = raw.partition("/")
        try:
            name = paths.normalize_relpath(rel)
            if name not in {e.path for e in self.cache.entries(key)}:
                raise FileNotFoundError(name)
            path = self.cache.path(key) / name
            size = path.stat().st_size
        except Exception:  # an unknown key, an unsafe or unknown name: all just "not here"
            handler.send_error(404, "not cached here")
            return
        handler.send_response(200)
        handler.send_header("Content-Length", str(size))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        if body:
            with open(path, "rb") as fh:
                shutil.copyfileobj(fh, handler.wfile, 1 << 20)

    def close(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()


class _Response(io.RawIOBase):
    """A streaming HTTP body as a raw file (closed with its connection)."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._response = response

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._response.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._conn.close()
        super().close()


class PeerFileSystem(AbstractFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """Read-only fsspec view of a peer node's cache: paths are ``<cache key>/<file>``."""

    protocol = "pdpeer"
    cachable = False

    def __init__(self, base_url: str, token: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"peer URL {base_url!r} is not http://host:port")
        self.host, self.port = parts.hostname, parts.port
        self.token = token

    def _request(self, method: str, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        quoted = "/" + urllib.parse.quote(self._strip_protocol(path).lstrip("/"))
        conn.request(method, quoted, headers={TOKEN_HEADER: self.token})
        response = conn.getresponse()
        if response.status == 404:
            conn.close()
            raise FileNotFoundError(f"peer {self.host}:{self.port} does not hold {path}")
        if response.status != 200:
            conn.close()
            raise OSError(f"peer {self.host}:{self.port} answered {response.status} {response.reason} for {path}")
        return conn, response

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """Size of a served file (HEAD)."""
        conn, response = self._request("HEAD", path)
        try:
            return {"name": path, "size": int(response.getheader("Content-Length") or 0), "type": "file"}
        finally:
            conn.close()

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode != "rb":
            raise PermissionError("a peer's cache is read-only")
        conn, response = self._request("GET", path)
        return io.BufferedReader(_Response(conn, response), 1 << 20)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """Listing is not served; the manifest names the files."""
        raise NotImplementedError("a peer's cache cannot be listed")
