"""Helpers both coordination backends share: kind names, JSON encoding, transition rules from the table."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pilotdata import states
from pilotdata.errors import DescriptionError
from pilotdata.states import Kind

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
"""One compact encoder for every call: ``json.dumps`` with options builds a new encoder each time, which
cost a transition about 0.7 us per value it encodes (a third of encoding a small dict)."""


def dumps(value: object, what: str, field: str) -> str:
    """Compact JSON, or a :class:`DescriptionError` naming ``field`` when ``value`` is not JSON."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise DescriptionError(f"{what}: {field} is not JSON-serialisable: {exc}", field=field) from exc


_scan = getattr(json.JSONDecoder(), "scan_once", None)
"""The json module's C scanner of one value (``(value, end)``), where this Python has it."""


def loads_many(texts: Sequence[str]) -> list[Any]:
    """Decode many short JSON texts (events' details) as ``json.loads`` does each.

    ``json.loads`` costs about 1.2 us per call for a text of a few bytes, mostly its own Python around the
    C scanner; the scanner alone costs 0.3 us. A text the scanner reads to its very end as one value is
    that value; any other (whitespace around it, not JSON, a scanner this Python lacks) goes through
    ``json.loads``, which returns it or raises that text's own error.
    """
    if _scan is None:
        return [json.loads(text) for text in texts]
    out: list[Any] = []
    for text in texts:
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            end = -1
        out.append(value if end == len(text) else json.loads(text))
    return out


def creation_detail(kind: str, data: Mapping[str, Any]) -> str:
    """The JSON detail of an entity's creation event (both backends write exactly this).

    A ComputeUnit's creation event carries the facts about it that never change, so that a reader of
    the stream (the history's index) need not read the CU's record to learn them: ``run`` (its
    record's ``run``), ``name`` and ``slots`` (its description's ``name`` and
    ``number_of_processes``), each ``null`` when absent; every key is always there. Other kinds: ``{}``.
    (The record keys are spelled in :mod:`pilotdata.records`, which imports this package; they are
    repeated here, and tests/coordination checks that they agree.)
    """
    if kind != Kind.CU.value:
        return "{}"
    desc = data.get("description")
    desc = desc if isinstance(desc, Mapping) else {}
    facts = {"run": data.get("run"), "name": desc.get("name"), "slots": desc.get("number_of_processes")}
    return dumps(facts, f"{kind} creation", "data")


_KINDS = {k.value: k.value for k in Kind} | {k: k.value for k in Kind}
_KIND_LIST = ", ".join(k.value for k in Kind)


def kind_name(kind: Kind | str) -> str:
    """The canonical kind string; ``ValueError`` for an unknown kind."""
    try:
        return _KINDS[kind]
    except (KeyError, TypeError):
        pass
    try:
        return Kind(kind).value
    except ValueError:
        raise ValueError(f"unknown entity kind {str(kind)!r}; expected one of {_KIND_LIST}") from None


def initial_state(kind: str) -> str:
    """The state an entity of ``kind`` is created in; PDs, which have no state machine, start New too."""
    try:
        return states.initial_state(kind)
    except ValueError:
        return states.State.New


@functools.lru_cache(maxsize=256)
def rules(kind: str, to: str) -> tuple[frozenset[str], frozenset[str]]:
    """(legal sources of ``to``, sources from which ``to`` is a retry), from :mod:`pilotdata.states`.

    An unknown target has no legal source (the move is refused like any illegal one).
    """
    if to not in states.states_of(kind):  # raises for kinds without a state machine
        return frozenset(), frozenset()
    sources = states.allowed_sources(kind, to)
    return sources, frozenset(s for s in sources if states.increments_attempt(kind, s, to))


_BINDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

BINDER_FIELD = "binder"
"""Where an unbound CU's record names its binder (a Redis hash field; a column in SQLite)."""


def check_binder(binder: str) -> str:
    """``binder`` if it is a valid binder name (1-128 of letters, digits, ``._:-``), else DescriptionError."""
    if not isinstance(binder, str) or not _BINDER.fullmatch(binder):
        raise DescriptionError(
            f"binder {binder!r} must be 1-128 characters of letters, digits, '.', '_', ':', '-'",
            field="binder", value=binder,
        )
    return binder


ADOPTED_REASON = "adopted: its binder stopped renewing its lease before binding it; shared queue"
"""The reason recorded when :meth:`~pilotdata.coordination.base.Coordination.adopt_unbound` takes a CU."""


def adopted_detail(binder: str) -> dict[str, str]:
    """The event detail of a CU adopted from ``binder`` (both backends write exactly this)."""
    return {"reason": ADOPTED_REASON, "adopted_from": binder}


def check_queued(kind: str, binder: str | None) -> None:
    """Only ComputeUnits are queued, and a CU created onto a queue is bound: it has no binder."""
    if kind != Kind.CU.value:
        raise DescriptionError(f"queue: only compute units are queued, not {kind!r}", field="queue", value=kind)
    if binder is not None:
        raise DescriptionError("queue: CUs created onto a queue are bound already; give no binder",
                               field="binder", value=binder)


def check_unbound_kind(kind: str) -> None:
    """Only ComputeUnits are bound (and so may be recorded unbound)."""
    if kind != Kind.CU.value:
        raise DescriptionError(f"binder: only compute units are bound, not {kind!r}", field="binder", value=kind)


_NAMESPACE = re.compile(r"^[^\s{}\x00-\x1f\x7f]{1,128}$")


def check_namespace(namespace: object) -> str:
    """``namespace`` if both backends accept it, else a :class:`DescriptionError` naming it.

    1-128 characters, no white space, control characters, ``{`` or ``}`` (Redis keys carry the
    namespace inside a ``{...}`` hash tag; SQLite applies the same rule so the backends agree).
    """
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise DescriptionError(
            f"namespace: expected 1-128 characters without white space, control characters, '{{' or '}}', "
            f"got {namespace!r}"[:300],
            field="namespace", value=namespace,
        )
    return namespace
