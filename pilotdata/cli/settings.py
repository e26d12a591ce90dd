"""The ``pdata`` settings: where each comes from, and the configuration file format.

Settings come, strongest first, from command-line flags, environment variables, the configuration
file, then the built-in defaults (the embedded SQLite files in the data directory):

=================  =======================  ======================  ==========================================
flag               environment variable     config file key         default
=================  =======================  ======================  ==========================================
``--url``          ``PDATA_URL``            ``url``                 embedded SQLite file
``--namespace``    ``PDATA_NAMESPACE``      ``namespace``           ``default``
``--history-url``  ``PDATA_HISTORY_URL``    ``history_url``         SQLite file beside it
``--checksum``     ``PDATA_CHECKSUM``       ``checksum``            ``blake3`` if installed, else ``sha256``
``--config``       ``PDATA_CONFIG``         (n/a)                   see :func:`config_path`
=================  =======================  ======================  ==========================================

``checksum`` is the algorithm recorded for the files ``pdata`` adds to DataUnits (``blake3``,
``xxh128`` or ``sha256``; see :mod:`pilotdata.data.checksums`): files already recorded keep theirs.

The file is TOML with top-level string keys only::

    url = "redis://:password@redis.example.org:6379/0"
    namespace = "blast-2024"
    history_url = "postgresql+psycopg://pd@db.example.org/history"
    checksum = "xxh128"

It is read with :mod:`tomllib` (``tomli``, its backport, on Python 3.10). The file may hold a
password: ``pdata`` never prints one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pilotdata.errors import DescriptionError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, published for Python 3.10
    import tomli as tomllib

CONFIG_KEYS = ("url", "namespace", "history_url", "checksum")
"""The keys a configuration file may set."""


class ConfigError(DescriptionError):
    """The configuration file is unreadable, malformed, or sets an unknown key (names file and key)."""


def config_path() -> Path:
    """The default configuration file: ``$PDATA_HOME/config.toml`` when ``PDATA_HOME`` is set, else
    ``config.toml`` in the user's configuration directory (``~/.config/pilot-data`` on Linux)."""
    home = os.environ.get("PDATA_HOME")
    if home:
        return Path(home).expanduser() / "config.toml"
    import platformdirs

    return Path(platformdirs.user_config_dir("pilot-data", appauthor=False)) / "config.toml"


def load_config(path: Path) -> dict[str, str]:
    """Read and check a configuration file; :class:`ConfigError` names the file and the key at fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc.strerror or exc}", field="config") from exc
    try:
        data: Mapping[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc}", field="config") from exc
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in CONFIG_KEYS:
            raise ConfigError(f"config file {str(path)!r}: unknown key {key!r}{did_you_mean(key, CONFIG_KEYS)}; "
                              f"known keys: {', '.join(CONFIG_KEYS)}", field=key)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"config file {str(path)!r}: {key} must be a non-empty string", field=key)
        out[key] = value
    return out
