"""DataUnit: a handle on one immutable, named set of files with replicas; reconnects by id."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from pilotdata.coordination import EntityRecord
from pilotdata.dataunits import DataUnits, complete_replicas, du_entries, replicas
from pilotdata.services.handle import EntityHandle
from pilotdata.services.waiting import wait_for_states
from pilotdata.session import Session
from pilotdata.states import DataUnitState, Kind


class DataUnit(EntityHandle):
    """A handle on one DataUnit (BigJob's ``DataUnit``)."""

    kind = Kind.DU

    def __init__(self, du_url: str, *, session: Session | None = None) -> None:
        super().__init__(du_url, session=session)
        self._ops = DataUnits(self._session)

    def _record(self) -> EntityRecord:
        return self._ops.record(self.id)  # its NotFoundError names the DataUnit

    @property
    def url(self) -> str:
        """BigJob's ``data_unit.url``: the DU id (also usable as a CU ``working_directory``)."""
        return self.id

    def get_details(self) -> dict[str, Any]:
        """Name, state, files, total size, replicas and the reason of a failure."""
        rec = self._ops.record(self.id)
        files = du_entries(rec)
        return {
            "id": rec.id,
            "name": rec.data.get("name"),
            "state": rec.state,
            "size": sum(f.size for f in files),
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
            "replicas": replicas(rec),
            "reason": rec.detail.get("reason"),
            "times": rec.times,
        }

    def list(self) -> dict[str, dict[str, Any]]:
        """BigJob's shape: ``{file name: {"size": bytes, "sha256": hex, "pilot_data": [pd ids]}}``."""
        rec = self._ops.record(self.id)
        where = complete_replicas(rec)
        return {f.path: {"size": f.size, "sha256": f.sha256, "pilot_data": where} for f in du_entries(rec)}

    def list_pilot_data(self) -> builtins.list[str]:
        """PD ids holding a complete replica."""
        return complete_replicas(self._ops.record(self.id))

    def wait(self, timeout: float | None = None) -> str:
        """Block until the DU is usable (Running) or final; return the state."""
        recs = wait_for_states(self._session.coord, Kind.DU, [self.id], {DataUnitState.RUNNING.value},
                               timeout=timeout)
        return recs[0].state

    def export(self, target: str, files: Sequence[str] | None = None, **options: Any) -> builtins.list[str]:
        """Copy the files (or ``files``) into a local directory or a store URL; return the written paths."""
        return self._ops.export(self.id, target, files=files, **options)

    def add_replica(self, pilot_data: Any) -> None:
        """Replicate onto a PilotData (object or id), store to store."""
        self._ops.replicate(self.id, getattr(pilot_data, "id", pilot_data))

    def move(self, pilot_data: Any) -> None:
        """Move to a PilotData: replicate, then remove the other replicas."""
        self._ops.move(self.id, getattr(pilot_data, "id", pilot_data))

    def remove_replica(self, pilot_data: Any) -> None:
        """Delete the replica on a PilotData (never the last one of a live DU)."""
        self._ops.remove_replica(self.id, getattr(pilot_data, "id", pilot_data))

    def verify(self, pilot_data: Any = None) -> dict[str, builtins.list[str]]:
        """Check replicas against the manifest: ``{pd id: [problems]}`` (empty lists: all good)."""
        return self._ops.verify(self.id, getattr(pilot_data, "id", pilot_data))

    def cancel(self) -> None:
        """Remove the DU and all its replicas."""
        self._ops.remove(self.id)
