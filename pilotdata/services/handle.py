"""What every entity handle (ComputeUnit, PilotCompute, DataUnit) shares: id, session, state, identity."""

from __future__ import annotations

from typing import Any, ClassVar

from pilotdata.coordination import EntityRecord
from pilotdata.session import Session, entity_id, resolve
from pilotdata.states import Kind


class EntityHandle:
    """A cheap handle on one coordination entity; reconnects by id (or BigJob-style URL) from any process."""

    kind: ClassVar[Kind]
    __slots__ = ("_session", "id")  # a bulk submit returns one handle per CU: a million of them

    def __init__(self, url: str, *, session: Session | None = None) -> None:
        self.id = entity_id(url)
        self._session = resolve(session, None, None)

    @property
    def session(self) -> Session:
        """The session this handle talks through."""
        return self._session

    def _record(self) -> EntityRecord:
        return self._session.coord.get(self.kind, self.id)

    def get_url(self) -> str:
        """The id (``Class(id)`` reconnects from another process)."""
        return self.id

    def get_id(self) -> str:
        """The id."""
        return self.id

    def get_state(self) -> str:
        """Current state (a value of the entity's state enum)."""
        return self._record().state

    def get_description(self) -> dict[str, Any]:
        """The normalised description dict."""
        return dict(self._record().data.get("description") or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, EntityHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash((self.kind.value, self.id))
