"""The connection context that services, handles and the CLI share.

A :class:`Session` knows the coordination URL (possibly with a password: kept private, handed to
agents only through their environment) and namespace, and opens the backend lazily, once. Clients talk
through :class:`~pilotdata.coordination.reconnect.Reconnecting`: a coordination outage shorter than
``reconnect_for`` seconds (``PDATA_RECONNECT``, default 60) is ridden out, a longer one raises a clear
:class:`~pilotdata.errors.CoordinationUnavailableError` naming the URL without its password.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from pilotdata.config import (
    default_coordination_url,
    default_history_url,
    default_namespace,
    default_reconnect_for,
)
from pilotdata.coordination import check_namespace, connect
from pilotdata.coordination.reconnect import Reconnecting
from pilotdata.redaction import public_url


class Session:
    """Coordination URL + namespace (+ history URL), with a lazily opened, shared backend."""

    def __init__(
        self,
        coordination_url: str | None = None,
        *,
        namespace: str | None = None,
        history_url: str | None = None,
        reconnect_for: float | None = None,
        bind_lease: float = 30.0,
    ) -> None:
        self._url = coordination_url or default_coordination_url()
        self.namespace = check_namespace(default_namespace() if namespace is None else namespace)
        self.history_url = history_url or default_history_url()
        self.reconnect_for = default_reconnect_for() if reconnect_for is None else float(reconnect_for)
        """Seconds a coordination outage is ridden out before calls raise (``PDATA_RECONNECT``, 60)."""
        self.bind_lease = float(bind_lease)
        """Seconds the CUs this session records stay reserved for its binder without a renewal; if the
        process dies first they are adopted onto the shared queue after this long."""
        self._coord: Reconnecting | None = None
        self._lock = threading.Lock()
        self._on_close: list[Callable[[], None]] = []

    @property
    def coord(self) -> Reconnecting:
        """The open coordination backend (opened on first use), riding out outages of ``reconnect_for`` s."""
        if self._coord is None:
            with self._lock:
                if self._coord is None:
                    self._coord = Reconnecting(connect(self._url, self.namespace), self.reconnect_for)
        return self._coord

    @property
    def is_open(self) -> bool:
        """Whether the backend was opened (and not closed yet)."""
        return self._coord is not None

    @property
    def url(self) -> str:
        """The coordination URL without any password (safe to show)."""
        return self.coord.url

    def agent_environment(self) -> dict[str, str]:
        """Environment variables that point an agent at this session (may hold a password: env only)."""
        return {"PDATA_URL": self._url, "PDATA_NAMESPACE": self.namespace}

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (e.g. stop a background thread) before the backend closes."""
        self._on_close.append(fn)

    def close(self) -> None:
        """Stop registered background work, then close the backend if it was opened."""
        while self._on_close:
            self._on_close.pop()()
        with self._lock:
            if self._coord is not None:
                self._coord.close()
                self._coord = None

    def __repr__(self) -> str:
        shown = self._coord.url if self._coord is not None else public_url(self._url)
        return f"Session({shown!r}, namespace={self.namespace!r})"


_default: Session | None = None


def default_session() -> Session:
    """A process-wide session from the environment (created on first use, never at import)."""
    global _default
    if _default is None:
        _default = Session()
    return _default


def resolve(session: Session | None, coordination_url: str | None, namespace: str | None) -> Session:
    """The session to use: the one given, a new one for an explicit URL/namespace, else the default."""
    if session is not None:
        return session
    if coordination_url is not None or namespace is not None:
        return Session(coordination_url, namespace=namespace)
    return default_session()


def entity_id(url_or_id: str) -> str:
    """The entity id inside a BigJob-style URL (``redis://host/bigjob:du-1`` -> ``du-1``) or an id."""
    tail = url_or_id.rstrip("/").rsplit("/", 1)[-1]
    return tail.rsplit(":", 1)[-1]
