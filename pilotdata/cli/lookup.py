"""Turning what the user typed (an id, or the unique name of a DataUnit / ComputeUnit) into entity ids.

Every command checks all the ids it was given *before* it changes anything, so a typo changes nothing
and exits 2 with a message naming the id (and the closest existing one).
"""

from __future__ import annotations

from collections.abc import Sequence

from pilotdata.errors import DescriptionError, NotFoundError, did_you_mean
from pilotdata.session import Session
from pilotdata.states import Kind

_WHAT = {Kind.DU: "DataUnit", Kind.CU: "ComputeUnit", Kind.PILOT: "pilot", Kind.PD: "store"}


def _name_of(kind: Kind, data: dict[str, object]) -> str | None:
    if kind is Kind.DU:
        return str(data.get("name") or "") or None
    if kind is Kind.CU:
        desc = data.get("description")
        return str(desc.get("name") or "") or None if isinstance(desc, dict) else None
    return None


def resolve(session: Session, kind: Kind, ref: str) -> str:
    """The id of ``ref``: an existing id, else the unique DataUnit/ComputeUnit with that name.

    :class:`NotFoundError` names ``ref`` (with a did-you-mean hint); an ambiguous name is a
    :class:`DescriptionError` listing the matching ids.
    """
    coord = session.coord
    if coord.exists(kind, ref):
        return ref
    ids = coord.list_ids(kind)
    names: dict[str, list[str]] = {}
    if kind in (Kind.DU, Kind.CU):
        for rec in coord.get_many(kind, ids):
            name = _name_of(kind, rec.data) if rec is not None else None
            if name and rec is not None:
                names.setdefault(name, []).append(rec.id)
    matches = names.get(ref, [])
    if len(matches) == 1:
        return matches[0]
    what = _WHAT[kind]
    if matches:
        raise DescriptionError(f"{what} name {ref!r} is ambiguous: {', '.join(sorted(matches))}; use an id",
                               field="id", value=ref)
    raise NotFoundError(f"{what} {ref!r} does not exist{did_you_mean(ref, [*ids, *names])}")


def resolve_all(session: Session, kind: Kind, refs: Sequence[str]) -> list[str]:
    """:func:`resolve` each of ``refs`` (all checked before the caller acts on any)."""
    return [resolve(session, kind, ref) for ref in refs]
