"""Helpers both coordination backends share: kind names, JSON encoding, transition rules from the table."""

from __future__ import annotations

import functools
import json

from pilotdata import states
from pilotdata.errors import DescriptionError
from pilotdata.states import Kind


def dumps(value: object, what: str, field: str) -> str:
    """Compact JSON, or a :class:`DescriptionError` naming ``field`` when ``value`` is not JSON."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DescriptionError(f"{what}: {field} is not JSON-serialisable: {exc}", field=field) from exc


_KINDS = {k.value: k.value for k in Kind} | {k: k.value for k in Kind}


def kind_name(kind: Kind | str) -> str:
    """The canonical kind string; ``ValueError`` for an unknown kind."""
    try:
        return _KINDS[kind]
    except (KeyError, TypeError):
        pass
    try:
        return Kind(kind).value
    except ValueError:
        raise ValueError(f"unknown entity kind {str(kind)!r}; expected one of cu, pilot, du, pd") from None


@functools.lru_cache(maxsize=256)
def rules(kind: str, to: str) -> tuple[frozenset[str], frozenset[str]]:
    """(legal sources of ``to``, sources from which ``to`` is a retry), from :mod:`pilotdata.states`.

    An unknown target has no legal source (the move is refused like any illegal one).
    """
    if to not in states.states_of(kind):  # raises for kinds without a state machine
        return frozenset(), frozenset()
    sources = states.allowed_sources(kind, to)
    return sources, frozenset(s for s in sources if states.increments_attempt(kind, s, to))
