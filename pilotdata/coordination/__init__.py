"""Coordination: shared state of pilots, ComputeUnits and DataUnits, chosen by URL.

``connect(url)`` picks the backend by scheme:

==========================  ==========================================================
``redis://``, ``rediss://``  Redis (TLS with ``rediss``), :mod:`.redis_backend`
``unix://``                  Redis over a Unix socket
``sqlite:///path``           embedded SQLite (one machine, many processes, no server)
(nothing configured)         ``sqlite:///<user data dir>/pilot-data/coordination.sqlite``
==========================  ==========================================================

The namespace comes from the ``namespace`` argument, else ``PDATA_NAMESPACE``, else ``default``.
"""

from __future__ import annotations

from pilotdata.config import default_coordination_url, default_namespace
from pilotdata.coordination.base import (
    SHARED_QUEUE,
    Coordination,
    EntityRecord,
    Event,
    RequeueResult,
    TransitionRequest,
    TransitionResult,
)
from pilotdata.errors import UnknownSchemeError

__all__ = [
    "SHARED_QUEUE",
    "Coordination",
    "EntityRecord",
    "Event",
    "RequeueResult",
    "TransitionRequest",
    "TransitionResult",
    "connect",
]

SCHEMES = ("redis", "rediss", "unix", "sqlite")


def connect(url: str | None = None, namespace: str | None = None) -> Coordination:
    """Open the coordination backend at ``url`` (default: ``PDATA_URL`` or the embedded SQLite file)."""
    url = url or default_coordination_url()
    ns = namespace or default_namespace()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        from pilotdata.coordination.redis_backend import RedisCoordination

        return RedisCoordination(url, namespace=ns)
    if scheme == "sqlite":
        from pilotdata.coordination.sqlite_backend import SQLiteCoordination

        return SQLiteCoordination(url, namespace=ns)
    shown = url.split("@")[-1] if "@" in url else url
    raise UnknownSchemeError(
        f"coordination URL {shown!r}: unknown scheme {scheme!r}; supported: "
        + ", ".join(f"{s}://" for s in SCHEMES)
    )
