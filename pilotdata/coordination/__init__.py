"""Coordination: shared state of pilots, ComputeUnits and DataUnits, chosen by URL.

``connect(url)`` picks the backend by scheme:

==========================  ==========================================================
``redis://``, ``rediss://``  Redis (TLS with ``rediss``), :mod:`.redis_backend`
``unix://``                  Redis over a Unix socket
``sqlite:///path``           embedded SQLite (one machine, many processes, no server), :mod:`.sqlite_backend`
(nothing configured)         ``sqlite:///<user data dir>/pilot-data/coordination.sqlite``
==========================  ==========================================================

The namespace comes from the ``namespace`` argument, else ``PDATA_NAMESPACE``, else ``default``.

Modules: :mod:`.base` (the interface and its records), :mod:`.keys` (every Redis key),
:mod:`.requeue` (what becomes of a lost pilot's work), :mod:`._codec` (what both backends share),
the packages :mod:`.redis_backend` and :mod:`.sqlite_backend`.
"""

from __future__ import annotations

from pilotdata.config import default_coordination_url, default_namespace
from pilotdata.coordination._codec import check_namespace
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
from pilotdata.redaction import public_url

__all__ = [
    "SHARED_QUEUE",
    "Coordination",
    "EntityRecord",
    "Event",
    "RequeueResult",
    "TransitionRequest",
    "TransitionResult",
    "check_namespace",
    "connect",
]

SCHEMES = ("redis", "rediss", "unix", "sqlite")


def connect(url: str | None = None, namespace: str | None = None) -> Coordination:
    """Open the coordination backend at ``url`` (default: ``PDATA_URL`` or the embedded SQLite file)."""
    url = url or default_coordination_url()
    ns = default_namespace() if namespace is None else namespace  # an explicit "" is an error, not the default
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        from pilotdata.coordination.redis_backend import RedisCoordination

        return RedisCoordination(url, namespace=ns)
    if scheme == "sqlite":
        from pilotdata.coordination.sqlite_backend import SQLiteCoordination

        return SQLiteCoordination(url, namespace=ns)
    raise UnknownSchemeError(
        f"coordination URL {public_url(url)!r}: unknown scheme {scheme!r}; supported: "
        + ", ".join(f"{s}://" for s in SCHEMES)
    )
