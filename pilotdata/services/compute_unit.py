"""ComputeUnit: a handle on one task; reconnects by id from any process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pilotdata.coordination import EntityRecord
from pilotdata.errors import IllegalTransitionError
from pilotdata.services.handle import EntityHandle
from pilotdata.services.waiting import wait_for_states
from pilotdata.session import Session
from pilotdata.states import ComputeUnitState, Kind, is_final


class ComputeUnit(EntityHandle):
    """A handle on one ComputeUnit (BigJob's ``ComputeUnit``); ``ComputeUnit(cu_url)`` reconnects."""

    kind = Kind.CU
    __slots__ = ("_before_read",)

    def __init__(self, cu_url: str, *, session: Session | None = None,
                 before_read: Callable[[], None] | None = None) -> None:
        super().__init__(cu_url, session=session)
        self._before_read = before_read
        """Records the CU first if it waits in its service's submit batch (see ``submit_compute_unit``)."""

    def _recorded(self) -> None:
        if self._before_read is not None:
            self._before_read()

    def _record(self) -> EntityRecord:
        self._recorded()
        return super()._record()

    def get_local_working_directory(self) -> str | None:
        """The directory the CU runs in, on the pilot's host (its ``output`` / ``error`` files are there).

        Known once the pilot's agent has made it (the CU is staging or running, or ended), else None.
        For an ``ssh://`` or batch pilot it is a path on that host, as in BigJob.
        """
        sandbox = self._record().data.get("sandbox")
        return str(sandbox) if sandbox else None

    def get_details(self) -> dict[str, Any]:
        """State, pilot, attempt, exit code, reason, sandbox, per-state times and the description."""
        rec = self._record()
        return {
            "id": rec.id,
            "state": rec.state,
            "pilot": rec.pilot,
            "attempt": rec.attempt,
            "exit_code": rec.data.get("exit_code"),
            "reason": rec.data.get("reason") or rec.detail.get("reason"),
            "sandbox": rec.data.get("sandbox"),
            "description": rec.data.get("description"),
            "times": rec.times,
        }

    def get_exit_code(self) -> int | None:
        """The executable's exit code once it ran, else ``None``."""
        code = self._record().data.get("exit_code")
        return int(code) if code is not None else None

    def wait(self, timeout: float | None = None) -> str:
        """Block until the CU is Done, Failed or Canceled; return the final state.

        Raises :class:`~pilotdata.errors.TimeoutExpired` after ``timeout`` seconds.
        """
        self._recorded()
        return wait_for_states(self._session.coord, Kind.CU, [self.id], timeout=timeout)[0].state

    def result(self, timeout: float | None = None) -> str:
        """Futures-style alias of :meth:`wait`."""
        return self.wait(timeout)

    def done(self) -> bool:
        """Whether the CU reached a final state."""
        return is_final(self.get_state())

    def add_done_callback(self, callback: Callable[[ComputeUnit], None]) -> None:
        """Call ``callback(self)`` from a :class:`~pilotdata.services.compute_data.ComputeDataService`
        watcher thread when this CU reaches a final state (immediately if it already has)."""
        from pilotdata.services.callbacks import watcher_for

        self._recorded()
        watcher_for(self._session).add(self.id, lambda: callback(self))

    def cancel(self) -> None:
        """Cancel the CU: dequeue it if unstarted; a running one is killed by its agent."""
        self._recorded()
        coord = self._session.coord
        try:
            coord.transition(Kind.CU, self.id, ComputeUnitState.CANCELED, detail={"reason": "canceled by user"})
        except IllegalTransitionError:
            pass  # already final
        # after the move, never before: a client dying in between leaves a Canceled CU in a queue (claimers
        # drop it), not a Pending one in none
        coord.dequeue(self.id)
