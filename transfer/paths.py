"""Relative file names inside a DataUnit: normalisation and safety checks.

A DU file name is a POSIX relative path. :func:`normalize_relpath` turns ``"./a//b"`` into
``"a/b"`` and rejects, with :class:`~transfer.errors.UnsafePathError` naming the input:

- the empty name (or one that normalises to nothing, like ``"."`` or ``"/"``-only),
- absolute names (``/etc/passwd``) and Windows drive / UNC forms,
- any ``..`` component, NUL or other ASCII control characters, and backslashes (a separator on
  Windows, so ``a\\..\\b`` would be ambiguous),
- components longer than 255 bytes (no filesystem or object store takes them).

:func:`check_names` validates a whole listing before anything is written: it also rejects
duplicates and names that are both a file and a directory (``a`` and ``a/b``).
:func:`ensure_local_within` guards a local destination against symlinks that lead out of the root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from transfer.errors import UnsafePathError

__all__ = ["check_names", "ensure_local_within", "is_part_name", "join", "normalize_relpath", "part_name"]

_MAX_COMPONENT = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
"""ASCII control characters (NUL, newline, DEL ...): never part of a DataUnit file name."""


def normalize_relpath(name: str) -> str:
    """The canonical form of a DU-relative file name, or :class:`UnsafePathError`."""
    if not isinstance(name, str):
        raise UnsafePathError(f"file name must be a string, not {type(name).__name__}: {name!r}")
    if not name:
        raise UnsafePathError("empty file name", path=name)
    if _CONTROL.search(name):
        raise UnsafePathError(f"file name {name!r} contains a control character (NUL, newline ...)", path=name)
    if "\\" in name:
        raise UnsafePathError(f"file name {name!r} contains a backslash", path=name)
    if name.startswith("/"):
        raise UnsafePathError(f"file name {name!r} is absolute; DataUnit names are relative", path=name)
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        # a drive (C:x) is absolute, also behind ./ components, which normalise away
        if not parts and len(part) >= 2 and part[1] == ":" and part[0].isalpha():
            raise UnsafePathError(f"file name {name!r} is absolute; DataUnit names are relative", path=name)
        if part == "..":
            raise UnsafePathError(f"file name {name!r} contains '..'", path=name)
        if len(part.encode("utf-8", "surrogateescape")) > _MAX_COMPONENT:
            raise UnsafePathError(f"file name {name!r} has a component longer than 255 bytes", path=name)
        parts.append(part)
    if not parts:
        raise UnsafePathError(f"file name {name!r} names no file", path=name)
    return "/".join(parts)


def check_names(names: Iterable[str]) -> list[str]:
    """Normalise every name; reject unsafe ones, duplicates, and file/directory clashes."""
    out = [normalize_relpath(n) for n in names]
    seen: set[str] = set()
    for name in out:
        if name in seen:
            raise UnsafePathError(f"file name {name!r} is listed twice", path=name)
        seen.add(name)
    dirs: set[str] = set()
    for name in out:  # every parent directory, deepest first; a known one's parents are known too
        i = name.rfind("/")
        while i > 0 and name[:i] not in dirs:
            dirs.add(name[:i])
            i = name.rfind("/", 0, i)
    clash = sorted(seen & dirs)
    if clash:
        raise UnsafePathError(f"{clash[0]!r} is listed both as a file and as a directory", path=clash[0])
    return out


def join(root: str, rel: str) -> str:
    """``root/rel`` for fsspec paths (``rel`` must already be normalised)."""
    if not root:
        return rel
    return f"{root.rstrip('/')}/{rel}" if root.rstrip("/") else f"/{rel}"


def part_name(final_path: str, token: str) -> str:
    """The temporary sibling of ``final_path`` a copy is written to before its rename: ``.<name>.part-<token>``.

    The name is cut so the result stays within 255 bytes.
    """
    head, _, name = final_path.rpartition("/")
    budget = _MAX_COMPONENT - len(f"..part-{token}")
    encoded = name.encode("utf-8", "surrogateescape")[:budget]
    short = encoded.decode("utf-8", "ignore")
    tmp = f".{short}.part-{token}"
    return f"{head}/{tmp}" if head or final_path.startswith("/") else tmp


_PART = re.compile(r"\..*\.part-[0-9a-f]{16}")


def is_part_name(name: str) -> bool:
    """Whether ``name``'s last component is an unpublished part file (``.<name>.part-<token>``)."""
    return bool(_PART.fullmatch(name.rsplit("/", 1)[-1]))


def ensure_local_within(root: str, path: str) -> None:
    """Raise :class:`UnsafePathError` if local ``path``'s existing parent resolves outside ``root``.

    Catches a symlinked directory inside the destination tree that points elsewhere.
    """
    real_root = os.path.realpath(root)
    parent = os.path.realpath(os.path.dirname(path))
    if parent != real_root and not parent.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UnsafePathError(f"{path!r} would be written outside {root!r} (through a symlink)", path=path)
