"""Value checkers for description fields: each takes ``(path, value)`` and returns the normalised value.

A checker raises :class:`~pilotdata.errors.DescriptionError` with ``field=path`` and ``value`` set and a
message of the form ``"<path>: expected <what>, got <value>"``. Checkers are idempotent: a normalised
value passes through unchanged, so descriptions re-validate cleanly on ``dataclasses.replace``.
Messages never echo a secret: URLs are shown with their password removed and ``storage_options``
values are never shown at all.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from pilotdata.errors import DescriptionError
from pilotdata.redaction import is_secret_name, redact_url

Check = Callable[[str, Any], Any]
"""A field checker: ``(path, raw value) -> normalised value``."""


def show(value: object, limit: int = 60) -> str:
    """``repr(value)`` shortened to ``limit`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fail(path: str, value: object, expected: str) -> DescriptionError:
    """The standard field error: ``"<path>: expected <expected>, got <value>"``."""
    return DescriptionError(f"{path}: expected {expected}, got {show(value)}", field=path, value=value)


def text(path: str, value: Any) -> str:
    """A non-empty string (not just white space) without NUL (no path, argv or name can hold one)."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise fail(path, value, "a non-empty string without NUL")
    return value


NAME_MAX = 256
"""Longest ``name`` of a description (it is shown in listings, reports and history)."""


def name(path: str, value: Any) -> str:
    """A display name: :func:`text` of at most :data:`NAME_MAX` characters, no control characters."""
    checked = text(path, value)
    if len(checked) > NAME_MAX or any(ord(ch) < 32 or ord(ch) == 127 for ch in checked):
        raise fail(path, checked, f"a name of at most {NAME_MAX} characters without control characters "
                                  f"({len(checked)} characters given)")
    return checked


MAX_PROCESSES = 2**24
"""More processes (cores) than any one allocation holds: a larger count could never run anywhere."""


def integer(minimum: int, maximum: int | None = None) -> Check:
    """Checker for an integer >= ``minimum`` (and <= ``maximum``); integral floats and digit strings are accepted."""

    def check(path: str, value: Any) -> int:
        expected = f"an integer >= {minimum}"
        if isinstance(value, bool):
            raise fail(path, value, expected)
        integral_float = isinstance(value, float) and value.is_integer()
        if integral_float or (isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value)):
            value = int(value)
        if not isinstance(value, int) or value < minimum:
            raise fail(path, value, expected)
        if maximum is not None and value > maximum:
            raise fail(path, value, f"an integer from {minimum} to {maximum}")
        return value

    return check


def positive_number(path: str, value: Any) -> int | float:
    """A finite number > 0 (int kept as int; numeric strings accepted)."""
    expected = "a number > 0"
    if isinstance(value, str):
        try:
            value = float(value) if re.search(r"[.eE]", value) else int(value)
        except ValueError:
            raise fail(path, value, expected) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(path, value, expected)
    if not math.isfinite(value) or value <= 0:
        raise fail(path, value, expected)
    return value


def choice(*options: str) -> Check:
    """Checker for one of ``options``, case-insensitive, normalised to lower case."""

    def check(path: str, value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in options:
            raise fail(path, value, " or ".join(repr(o) for o in options))
        return value.strip().lower()

    return check


def _scalar_str(path: str, value: Any) -> str:
    """A string, or a number converted to one (bools and everything else are errors)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise fail(path, value, "a string (or a number)")


def string_list(path: str, value: Any) -> tuple[str, ...]:
    """A list of strings; numbers become strings; a single string is an error with a hint."""
    if isinstance(value, str):
        try:
            hint = show(shlex.split(value))
        except ValueError:
            hint = "['arg1', 'arg2']"
        raise DescriptionError(
            f"{path}: expected a list of strings, got a single string {show(value)}; "
            f"use a list such as {hint} (one item per argument)",
            field=path,
            value=value,
        )
    if not isinstance(value, (list, tuple)):
        raise fail(path, value, "a list of strings")
    return tuple(_scalar_str(f"{path}[{i}]", item) for i, item in enumerate(value))


def boolean(path: str, value: Any) -> bool:
    """``True`` or ``False`` (nothing else: ``"false"`` and ``0`` are errors, not a silent ``False``)."""
    if not isinstance(value, bool):
        raise fail(path, value, "true or false")
    return value


def str_map(path: str, value: Any) -> Mapping[str, str]:
    """A dict of non-empty string keys to strings (numbers converted), returned read-only."""
    if not isinstance(value, Mapping):
        raise fail(path, value, "a dict of strings")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise fail(f"{path}[{key!r}]", key, "a non-empty string key")
        out[key] = _scalar_str(f"{path}.{key}", item)
    return MappingProxyType(out)


def environment(path: str, value: Any) -> Mapping[str, str]:
    """``{"K": "V"}`` or ``["K=V", ...]``; names must be non-empty and free of ``=`` and NUL."""
    if isinstance(value, (list, tuple)):
        pairs: dict[str, str] = {}
        for i, entry in enumerate(value):
            if not isinstance(entry, str) or "=" not in entry or entry.startswith("="):
                raise fail(f"{path}[{i}]", entry, "a 'NAME=value' string")
            name, _, val = entry.partition("=")
            pairs[name] = val
        value = pairs
    env = str_map(path, value)
    for name, val in env.items():
        if "=" in name or "\0" in name or "\0" in val:
            raise fail(f"{path}.{name}", name, "a variable name without '=' or NUL")
    return env


def relative_path(path: str, value: Any) -> str:
    """A relative file name or glob: not absolute, no ``..`` component, no NUL."""
    expected = "a relative file name without '..'"
    if not isinstance(value, str) or not value or "\0" in value:
        raise fail(path, value, expected)
    parts = re.split(r"[/\\]", value)
    if value.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:", value) or ".." in parts:
        raise fail(path, value, expected)
    if all(part in ("", ".") for part in parts):
        raise fail(path, value, "a file name, not a directory")
    return value


# -- URLs ----------------------------------------------------------------------------------------

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _split_url(path: str, value: str, example: str) -> tuple[str, str, str]:
    """(scheme, netloc, rest) of a ``scheme://host...`` URL without a password; checks the port."""
    if not _URL.match(value):
        raise fail(path, value, f"a URL such as {example!r}")
    parts = urlsplit(value)
    if parts.password is not None:
        shown = redact_url(value)
        raise DescriptionError(
            f"{path}: passwords in URLs are not accepted (got {shown!r}); use an SSH key or the "
            "store's storage_options, which are never stored",
            field=path,
            value=shown,
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise fail(path, value, "a URL with a numeric port") from None
    return parts.scheme.lower(), parts.netloc, value.split("://", 1)[1][len(parts.netloc) :]


def resource_url(path: str, value: Any) -> str:
    """A pilot's resource URL: ``fork://localhost``, ``ssh://user@host:22``, ``slurm+ssh://host``, ...

    The scheme is only checked for syntax here: the launcher registry decides which schemes exist.
    """
    example = "fork://localhost"
    if not isinstance(value, str):
        raise fail(path, value, f"a URL such as {example!r}")
    scheme, netloc, rest = _split_url(path, value.strip(), example)
    if not netloc:
        raise fail(path, value, f"a URL with a host, such as {scheme}://localhost")
    return f"{scheme}://{netloc}{rest}"


def storage_url(path: str, value: Any) -> str:
    """A PilotData URL; a bare absolute path becomes ``file://<path>``, ``file://localhost/x`` -> ``file:///x``.

    Other schemes (``ssh``, ``sftp``, ``s3``, ``irods``, ...) need a host / bucket / zone; which schemes
    exist is the store registry's decision.
    """
    example = "file:///scratch/pd1"
    if not isinstance(value, str) or not value.strip():
        raise fail(path, value, f"a URL such as {example!r} or an absolute path")
    url: str = value.strip()
    if url.startswith("/"):
        return "file://" + url
    if url.startswith("file:") and not url.startswith("file://"):
        url = "file://" + url[len("file:") :]
    if not _URL.match(url):
        raise fail(path, value, f"a URL such as {example!r} or an absolute path")
    scheme, netloc, rest = _split_url(path, url, example)
    if scheme == "file":
        if netloc not in ("", "localhost") or not rest.startswith("/"):
            raise fail(path, value, "a local file URL with an absolute path, such as 'file:///scratch/pd1'")
        return "file://" + rest
    if not netloc:
        raise fail(path, value, f"a URL with a host or bucket, such as {scheme}://host/path")
    return f"{scheme}://{netloc}{rest}"


def file_urls(path: str, value: Any) -> tuple[str, ...]:
    """DU input files: local paths or URLs (no passwords); no two with the same file name."""
    items = string_list(path, value)
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if not item.strip():
            raise fail(where, item, "a file path or URL")
        if _URL.match(item):
            _split_url(where, item, "ssh://host/path/file")
        name = item.rstrip("/").rsplit("/", 1)[-1]
        if name in seen:
            raise DescriptionError(
                f"{where}: {show(item)} has the same file name {name!r} as {path}[{seen[name]}]; "
                "files of a DataUnit are stored by name",
                field=where,
                value=item,
            )
        seen[name] = i
    return items


# -- file transfers (BigJob's "URL > target") -----------------------------------------------------

WORK_DIR_PLACEHOLDER = "BIGJOB_WORK_DIR"
"""BigJob's name for "the working directory itself" as a transfer target."""

_TRANSFER = re.compile(r"^(?P<source>.*?)\s*(?P<op>>>|<<|>|<)\s*(?P<target>.*)$", re.DOTALL)


@dataclass(frozen=True)
class FileTransfer:
    """One BigJob ``file_transfer`` entry: copy ``source`` into the working directory as ``target``.

    ``source`` is a URL (``file://``, ``ssh://``/``sftp://``, ``s3://``, any store scheme) or an
    absolute path, read on the pilot's host; ``ssh:///path`` (no host) is a path on the pilot's host too.
    ``target`` is a relative file name inside the working directory.
    """

    source: str
    target: str

    def to_json(self) -> str:
        """BigJob's spelling: ``"SOURCE > TARGET"``."""
        return f"{self.source} > {self.target}"


def _transfer_source(path: str, source: str) -> str:
    expected = "a URL such as 'ssh://host/path/file' or an absolute path"
    if not source or "\0" in source or "\n" in source:
        raise fail(path, source, expected)
    if _URL.match(source):
        scheme, _netloc, rest = _split_url(path, source, "ssh://host/path/file")
        if not rest.rstrip("/") or rest.endswith("/"):
            raise fail(path, source, f"a {scheme} URL naming a file")
        return source
    if not source.startswith("/") or source.endswith("/"):
        raise fail(path, source, expected)
    return source


def file_transfers(path: str, value: Any) -> tuple[FileTransfer, ...]:
    """BigJob's ``file_transfer`` list: ``"SOURCE > TARGET"`` or ``"SOURCE"`` strings.

    Only stage-in (``>``) exists here: ``<`` (stage out) and ``>>``/``<<`` (append) are errors that say
    what to use instead. A missing target, ``BIGJOB_WORK_DIR``, ``.`` or a target ending in ``/`` keeps
    the source's file name (what BigJob did with every target); any other target is a relative name.
    """
    if isinstance(value, str):
        raise DescriptionError(
            f"{path}: expected a list of 'SOURCE > TARGET' strings, got a single string {show(value)}; "
            f"use [{show(value)}]",
            field=path,
            value=value,
        )
    if not isinstance(value, (list, tuple)):
        raise fail(path, value, "a list of 'SOURCE > TARGET' strings")
    out: list[FileTransfer] = []
    for i, entry in enumerate(value):
        where = f"{path}[{i}]"
        if isinstance(entry, FileTransfer):
            entry = entry.to_json()
        if not isinstance(entry, str) or not entry.strip():
            raise fail(where, entry, "a 'SOURCE > TARGET' string")
        match = _TRANSFER.match(entry.strip())
        source, target = (match["source"], match["target"]) if match else (entry.strip(), "")
        if match and match["op"] != ">":
            what = {"<": "copies a file back out of the working directory ('<')",
                    ">>": "appends to the target ('>>')", "<<": "appends back out ('<<')"}[match["op"]]
            raise DescriptionError(
                f"{where}: {show(entry)} {what}, which pilot-data does not do: file_transfer only stages "
                "files in ('SOURCE > TARGET'); keep outputs with output_data (a DataUnit) and export them",
                field=where,
                value=entry,
            )
        source = _transfer_source(where, source.strip())
        target = target.strip()
        if target.rstrip("/") in ("", WORK_DIR_PLACEHOLDER, "."):
            target = source.rstrip("/").rsplit("/", 1)[-1]
        elif target.endswith("/"):
            target = target + source.rstrip("/").rsplit("/", 1)[-1]
        out.append(FileTransfer(source, relative_path(where, target)))
    seen: dict[str, int] = {}
    for i, transfer in enumerate(out):
        if transfer.target in seen:
            raise DescriptionError(
                f"{path}[{i}]: target {transfer.target!r} is also the target of {path}[{seen[transfer.target]}]",
                field=f"{path}[{i}]",
                value=transfer.to_json(),
            )
        seen[transfer.target] = i
    return tuple(out)


# -- sizes -----------------------------------------------------------------------------------------

_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
}  # fmt: skip
_UNIT_NAMES = ["PiB", "PB", "TiB", "TB", "GiB", "GB", "MiB", "MB", "KiB", "kB"]
_SIZE_EXPECTED = "a size > 0: an integer in MB (as in BigJob) or a string such as '10GB' or '512MiB'"


def size_bytes(path: str, value: Any, *, int_unit: int = 1) -> int:
    """Bytes from an integer (times ``int_unit``) or a string with a unit (``'10GB'``, ``'1.5GiB'``).

    A string without a unit counts like an integer. Decimal units are powers of 1000 (``MB``), binary
    ones powers of 1024 (``MiB``); unit names are case-insensitive.
    """
    if isinstance(value, bool):
        raise fail(path, value, _SIZE_EXPECTED)
    if isinstance(value, int):
        number, unit = Decimal(value), int_unit
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", value)
        if not match or (match[2] and match[2].lower() not in _UNITS):
            raise fail(path, value, _SIZE_EXPECTED)
        try:
            number = Decimal(match[1])
        except InvalidOperation:
            raise fail(path, value, _SIZE_EXPECTED) from None
        unit = _UNITS[match[2].lower()] if match[2] else int_unit
    else:
        raise fail(path, value, _SIZE_EXPECTED)
    result = int(number * unit)
    if result <= 0:
        raise fail(path, value, _SIZE_EXPECTED)
    return result


def format_size(nbytes: int) -> str:
    """The shortest exact spelling of ``nbytes``: ``'10GB'``, ``'512MiB'``, ``'123B'``."""
    for name in _UNIT_NAMES:
        unit = _UNITS[name.lower()]
        if nbytes % unit == 0:
            return f"{nbytes // unit}{name}"
    return f"{nbytes}B"


# -- data unit references ------------------------------------------------------------------------


@dataclass(frozen=True)
class DataUnitRef:
    """A reference from a ComputeUnit to a DataUnit: all of it (``files`` None) or some files / globs."""

    du_id: str
    files: tuple[str, ...] | None = None

    def to_json(self) -> str | dict[str, list[str]]:
        """``"du-id"`` for a whole DU, ``{"du-id": [names]}`` for a subset."""
        return self.du_id if self.files is None else {self.du_id: list(self.files)}


def du_id(path: str, value: Any) -> str:
    """A DU id, or the id at the end of a BigJob DU URL (``redis://host/bigdata:du-1`` -> ``du-1``)."""
    if isinstance(value, str) and _URL.match(value):
        value = urlsplit(value).path.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise fail(path, value, "a DataUnit id such as 'du-1' (letters, digits, '.', '_', '-')")
    return value


def data_refs(*, subset_required: bool) -> Check:
    """Checker for ``input_data`` (``subset_required=False``) or ``output_data`` (True).

    Entries are ``"du-id"`` strings (input only: the whole DU) or ``{du_id: [names or globs]}`` dicts; a
    DU may appear only once. Names and globs are relative and free of ``..``.
    """
    shape = "{'du-id': ['file or glob', ...]}" if subset_required else "'du-id' or {'du-id': ['file', ...]}"

    def check(path: str, value: Any) -> tuple[DataUnitRef, ...]:
        if not isinstance(value, (list, tuple)):
            raise fail(path, value, f"a list of {shape}")
        refs: list[DataUnitRef] = []
        for i, entry in enumerate(value):
            where = f"{path}[{i}]"
            if isinstance(entry, DataUnitRef):
                entry = entry.to_json()
            if isinstance(entry, str) and not subset_required:
                refs.append(DataUnitRef(du_id(where, entry)))
            elif isinstance(entry, Mapping) and entry:
                for key, names in entry.items():
                    ident = du_id(where, key)
                    sub = f"{where}.{ident}"
                    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
                        raise fail(sub, names, "a non-empty list of relative file names or globs")
                    files = tuple(relative_path(f"{sub}[{j}]", n) for j, n in enumerate(names))
                    refs.append(DataUnitRef(ident, files))
            else:
                raise fail(where, entry, shape)
        seen = [ref.du_id for ref in refs]
        for ident in seen:
            if seen.count(ident) > 1:
                raise DescriptionError(f"{path}: DataUnit {ident!r} is listed twice", field=path, value=ident)
        return tuple(refs)

    return check


# -- secrets ---------------------------------------------------------------------------------------


def is_secret_key(key: str) -> bool:
    """True for option names that hold credentials: the project's one rule,
    :func:`pilotdata.redaction.is_secret_name` (``key_filename``, ``aws_region`` and ``aws_profile``
    are not secrets; ``session`` and ``sock`` are)."""
    return is_secret_name(key)


def _public(path: str, value: Any) -> Any:
    """JSON copy of ``value`` without secret-looking keys; a non-JSON public value is an error."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise DescriptionError(f"{path}: option names must be strings", field=path)
            if not is_secret_key(key):
                out[key] = _public(f"{path}.{key}", item)
        return out
    if isinstance(value, (list, tuple)):
        return [_public(f"{path}[{i}]", item) for i, item in enumerate(value)]
    if isinstance(value, str):
        return redact_url(value) if _URL.match(value) else value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise DescriptionError(
        f"{path}: expected a JSON value (str, number, bool, list, dict), got a {type(value).__name__}; "
        "non-JSON objects are only allowed under secret option names",
        field=path,
    )


BOOLEAN_OPTIONS = frozenset({
    "auto_mkdir", "anon", "use_ssl", "look_for_keys", "allow_agent", "version_aware", "requester_pays",
    "skip_instance_cache", "use_listings_cache", "listings_expiry_time_disabled", "fixed_upload_size",
})
"""fsspec / s3fs / paramiko options that take true or false: anything else would be read as truthy."""


def storage_options(path: str, value: Any) -> Mapping[str, Any]:
    """fsspec options for a store, kept in memory as given (read-only); values are never echoed, except
    for the known boolean options (:data:`BOOLEAN_OPTIONS`), which must be true or false."""
    if not isinstance(value, Mapping):
        raise DescriptionError(f"{path}: expected a dict, got a {type(value).__name__}", field=path)
    _public(path, value)  # validates names and the public values
    for key in BOOLEAN_OPTIONS.intersection(value):
        if not isinstance(value[key], bool):
            raise fail(f"{path}.{key}", value[key], "true or false")
    return MappingProxyType(dict(value))


def public_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` without secret-looking keys (recursively) and without URL passwords: safe to store."""
    result: dict[str, Any] = _public("storage_options", options)
    return result
