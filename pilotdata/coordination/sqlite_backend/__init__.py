"""Embedded SQLite coordination backend: :class:`SQLiteCoordination` for ``sqlite:///path``.

One file shared by every process of one machine; no server. Modules: :mod:`.backend` (the class:
connections, transactions, polling), :mod:`.schema` (tables, version, the batch statements, the check
of the SQLite library).

URLs follow SQLAlchemy: ``sqlite:///relative/path`` and ``sqlite:////absolute/path``.
"""

from __future__ import annotations

from pilotdata.coordination.sqlite_backend.backend import BUSY_TIMEOUT, SQLiteCoordination
from pilotdata.coordination.sqlite_backend.schema import SCHEMA_VERSION

__all__ = ["BUSY_TIMEOUT", "SCHEMA_VERSION", "SQLiteCoordination"]
