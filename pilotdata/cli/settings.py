"""The ``pdata`` settings: where each comes from, and the configuration file format.

Settings come, strongest first, from command-line flags, environment variables, the configuration
file, then the built-in defaults (the embedded SQLite files in the data directory):

=================  =======================  ======================  ====================
flag               environment variable     config file key         default
=================  =======================  ======================  ====================
``--url``          ``PDATA_URL``            ``url``                 embedded SQLite file
``--namespace``    ``PDATA_NAMESPACE``      ``namespace``           ``default``
``--history-url``  ``PDATA_HISTORY_URL``    ``history_url``         SQLite file beside it
``--config``       ``PDATA_CONFIG``         (n/a)                   see :func:`config_path`
=================  =======================  ======================  ====================

The file is TOML with top-level string keys only::

    url = "redis://:password@redis.example.org:6379/0"
    namespace = "blast-2024"
    history_url = "postgresql+psycopg://pd@db.example.org/history"

Python 3.11 reads it with :mod:`tomllib` (3.10 with ``tomli`` when installed); without either, the
subset above (``key = "string"`` lines, comments, blank lines) is parsed here, and anything else is
an error that says so. The file may hold a password: ``pdata`` never prints one.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from pilotdata.errors import DescriptionError, did_you_mean

CONFIG_KEYS = ("url", "namespace", "history_url")
"""The keys a configuration file may set."""

_LINE = re.compile(r"""\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|'[^']*')\s*(?:#.*)?""")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


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


def _toml_module() -> ModuleType | None:
    """:mod:`tomllib` (Python >= 3.11), else ``tomli`` when installed, else ``None``."""
    for name in ("tomllib", "tomli"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def parse_simple_toml(text: str, source: str = "config.toml") -> dict[str, str]:
    """Parse the subset of TOML the configuration needs: ``key = "string"`` lines and comments.

    Used when neither :mod:`tomllib` nor ``tomli`` is available; anything else raises
    :class:`ConfigError` naming the file and line.
    """
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise ConfigError(
                f"{source} line {number}: only `key = \"string\"` lines are understood without tomllib "
                "(Python 3.10): install tomli for full TOML", field=f"{source}:{number}")
        key, raw = match[1], match[2]
        if key in out:
            raise ConfigError(f"{source} line {number}: key {key!r} is set twice", field=key)
        if raw.startswith("'"):
            out[key] = raw[1:-1]
        else:
            try:
                out[key] = re.sub(r"\\(.)", lambda m: _ESCAPES[m[1]], raw[1:-1])
            except KeyError as exc:
                raise ConfigError(f"{source} line {number}: unsupported escape \\{exc.args[0]}", field=key) from None
    return out


def load_config(path: Path) -> dict[str, str]:
    """Read and check a configuration file; :class:`ConfigError` names the file and the key at fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc.strerror or exc}", field="config") from exc
    toml = _toml_module()
    data: Mapping[str, Any]
    if toml is None:
        data = parse_simple_toml(text, str(path))
    else:
        try:
            data = toml.loads(text)
        except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
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
