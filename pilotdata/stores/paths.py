"""File-name safety for PilotData stores: one place that decides which relative names are allowed.

Every name a caller hands a store (a DU's relative file path, a CU output name) passes through
:func:`safe_relpath` before any I/O. The rules are deliberately strict and the same on every
backend, so a name accepted by one store is accepted by all of them:

* a non-empty ``str`` with no NUL or other control character and no backslash
  (``a\\..\\b`` must not become a traversal on a backend that treats ``\\`` as a separator);
* relative: no leading ``/`` and no Windows drive (``C:``);
* no ``..`` component; ``.`` components and repeated slashes are normalised away
  (``./a//b/`` -> ``a/b``); a name that normalises to nothing is rejected.

:func:`join_under` then joins a normalised name to a root and checks once more, lexically, that
the result is strictly below the root.
"""

from __future__ import annotations

import posixpath
import re

from pilotdata.errors import UnsafePathError

__all__ = ["join_under", "safe_relpath"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


def _reject(name: object, why: str) -> UnsafePathError:
    return UnsafePathError(f"unsafe file name {name!r}: {why}")


def safe_relpath(name: object) -> str:
    """Return ``name`` normalised (``a/./b//c`` -> ``a/b/c``) or raise :class:`UnsafePathError`.

    The error message quotes the offending name (``repr``, so a NUL byte shows as ``\\x00``).
    """
    if not isinstance(name, str):
        raise _reject(name, f"expected a string, got {type(name).__name__}")
    if name == "":
        raise _reject(name, "empty")
    if "\x00" in name:
        raise _reject(name, "contains a NUL byte")
    if _CONTROL.search(name):
        raise _reject(name, "contains a control character")
    if "\\" in name:
        raise _reject(name, "contains a backslash")
    if name.startswith("/"):
        raise _reject(name, "absolute path (names are relative to the PilotData root)")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if parts and _DRIVE.match(parts[0]):  # checked on the normal form: ./C:/x is C:/x
        raise _reject(name, "looks like a Windows drive path")
    if ".." in parts:
        raise _reject(name, "contains '..'")
    if not parts:
        raise _reject(name, "empty after normalisation")
    return "/".join(parts)


def join_under(root: str, rel: str) -> str:
    """Join a root and a name already checked by :func:`safe_relpath`; refuse anything not below root."""
    clean = safe_relpath(rel)
    base = root.rstrip("/")
    joined = f"{base}/{clean}"
    if posixpath.normpath(joined) != joined.rstrip("/") or not joined.startswith(base + "/"):
        raise _reject(rel, f"would escape the root {root!r}")
    return joined
