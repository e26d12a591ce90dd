"""Process-wide defaults read from the environment, never at import time.

=====================  ===============================================  ===========================
variable               meaning                                          default
=====================  ===============================================  ===========================
``PDATA_URL``          coordination URL                                 embedded SQLite file
``PDATA_HISTORY_URL``  SQLAlchemy URL of the history database           SQLite file beside it
``PDATA_NAMESPACE``    coordination namespace (one per project)         ``default``
``PDATA_HOME``         directory for the embedded files                 the user's data directory
``PDATA_RECONNECT``    seconds a client rides out an unreachable        60
                       coordination backend before it gives up
=====================  ===============================================  ===========================
"""

from __future__ import annotations

import os
from pathlib import Path

from pilotdata.errors import DescriptionError


def data_dir() -> Path:
    """Directory holding the embedded coordination and history files (created on demand)."""
    home = os.environ.get("PDATA_HOME")
    if home:
        path = Path(home).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("pilot-data", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_coordination_url() -> str:
    """``PDATA_URL`` or ``sqlite:///<data dir>/coordination.sqlite``."""
    return os.environ.get("PDATA_URL") or f"sqlite:///{data_dir() / 'coordination.sqlite'}"


def default_history_url() -> str:
    """``PDATA_HISTORY_URL`` or ``sqlite:///<data dir>/history.sqlite``."""
    return os.environ.get("PDATA_HISTORY_URL") or f"sqlite:///{data_dir() / 'history.sqlite'}"


def default_namespace() -> str:
    """``PDATA_NAMESPACE`` or ``default``."""
    return os.environ.get("PDATA_NAMESPACE") or "default"


def default_reconnect_for() -> float:
    """``PDATA_RECONNECT`` (seconds >= 0) or 60; a bad value is a :class:`DescriptionError` naming it."""
    text = os.environ.get("PDATA_RECONNECT")
    if not text:
        return 60.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise DescriptionError(f"PDATA_RECONNECT: expected seconds >= 0, got {text!r}", field="PDATA_RECONNECT",
                               value=text)
    return value
