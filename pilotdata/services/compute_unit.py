"""ComputeUnit: a handle on one task; reconnects by id from any process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pilotdata.errors import IllegalTransitionError
from pilotdata.services.handle import EntityHandle
from pilotdata.services.waiting import wait_for_states
from pilotdata.states import FINAL_STATES, ComputeUnitState, Kind


class ComputeUnit(EntityHandle):
    """A handle on one ComputeUnit (BigJob's ``ComputeUnit``)."""

    kind = Kind.CU

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
        return wait_for_states(self._session.coord, Kind.CU, [self.id], timeout=timeout)[0].state

    def result(self, timeout: float | None = None) -> str:
        """Futures-style alias of :meth:`wait`."""
        return self.wait(timeout)

    def done(self) -> bool:
        """Whether the CU reached a final state."""
        return self.get_state() in FINAL_STATES

    def add_done_callback(self, callback: Callable[[ComputeUnit], None]) -> None:
        """Call ``callback(self)`` from a :class:`~pilotdata.services.compute_data.ComputeDataService`
        watcher thread when this CU reaches a final state (immediately if it already has)."""
        from pilotdata.services.callbacks import watcher_for

        watcher_for(self._session).add(self.id, lambda: callback(self))

    def cancel(self) -> None:
        """Cancel the CU: dequeue it if unstarted; a running one is killed by its agent."""
        coord = self._session.coord
        coord.dequeue(self.id)
        try:
            coord.transition(Kind.CU, self.id, ComputeUnitState.CANCELED, detail={"reason": "canceled by user"})
        except IllegalTransitionError:
            pass  # already final
