"""DataUnit: a handle on one immutable, named set of files with replicas; reconnects by id."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from pilotdata.coordination import EntityRecord
from pilotdata.data import ReplicaManager, resolve_sources
from pilotdata.data.pd_stores import open_pd_store
from pilotdata.descriptions import DataUnitDescription
from pilotdata.errors import DescriptionError
from pilotdata.records import DESCRIPTION, complete_replicas, du_entries, replicas
from pilotdata.services.handle import EntityHandle
from pilotdata.services.waiting import wait_for_states
from pilotdata.session import Session
from pilotdata.states import DataUnitState, Kind

PILOT_DATA_HANDLE: Any = None
"""The PilotData handle class, set by :mod:`pilotdata.services.pilot_data` when it is imported (that
module builds DataUnit handles, so this one cannot import it back)."""


def _pd_id(pilot_data: Any) -> str:
    return str(getattr(pilot_data, "id", pilot_data))


class DataUnit(EntityHandle):
    """A handle on one DataUnit (BigJob's ``DataUnit``); its operations are a :class:`ReplicaManager`'s.

    ``DataUnit(du_url)`` (or BigJob's ``DataUnit(du_url=...)``) reconnects from any process.
    ``DataUnit(data_unit_description=...)`` records a new DataUnit that is on no PilotData yet (its files
    are checked now); :meth:`add_pilot_data` or ``pilot_data.submit_data_unit(data_unit=du)`` uploads it.
    """

    kind = Kind.DU

    def __init__(
        self,
        du_url: str | None = None,
        *,
        session: Session | None = None,
        data_unit_description: Mapping[str, Any] | DataUnitDescription | None = None,
        pilot_data: Any = None,
    ) -> None:
        if du_url is None:
            if data_unit_description is None:
                raise DescriptionError("DataUnit: give du_url (to reconnect) or data_unit_description (a new one)",
                                       field="du_url")
            session = session or getattr(pilot_data, "session", None)
            du_url = self._register(data_unit_description, session)
        elif data_unit_description is not None:
            raise DescriptionError("DataUnit: give du_url or data_unit_description, not both",
                                   field="data_unit_description")
        super().__init__(du_url, session=session)

    @staticmethod
    def _register(description: Mapping[str, Any] | DataUnitDescription, session: Session | None) -> str:
        from pilotdata.session import resolve

        desc = DataUnitDescription.coerce(description)
        resolve_sources(desc.file_urls)  # missing files fail here, before anything is recorded
        return ReplicaManager(resolve(session, None, None).coord).register(desc)

    @property
    def _ops(self) -> ReplicaManager:
        return ReplicaManager(self._session.coord)

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
            "files": [{**f.to_json(), "algorithm": f.algorithm} for f in files],
            "replicas": {pd: rep.to_json() for pd, rep in replicas(rec).items()},
            "reason": rec.detail.get("reason"),
            "times": rec.times,
        }

    def list(self) -> dict[str, dict[str, Any]]:
        """BigJob's shape: ``{file name: {"pilot_data": [file URL on each PD], "local": None, "size": bytes,
        "<algorithm>": hex, "algorithm": name}}`` -- the checksum under its algorithm's name, ``sha256``
        for DataUnits recorded before there was a choice (the PD URLs are public: no secret)."""
        rec = self._ops.record(self.id)
        bases = [self._file_base(pd) for pd in complete_replicas(rec)]
        return {f.path: {"pilot_data": [f"{b}/{f.path}" for b in bases], "local": None,
                         "size": f.size, f.algorithm: f.digest, "algorithm": f.algorithm} for f in du_entries(rec)}

    def _file_base(self, pd_id: str) -> str:
        return f"{open_pd_store(self._session.coord, pd_id).url.rstrip('/')}/{self.id}"

    def list_pilot_data(self) -> builtins.list[str]:
        """PD ids (their URLs here) holding a complete replica."""
        return complete_replicas(self._ops.record(self.id))

    def get_pilot_data(self) -> builtins.list[Any]:
        """BigJob's ``get_pilot_data``: the PilotData holding a complete replica, as handles."""
        return [PILOT_DATA_HANDLE(pd, session=self._session) for pd in self.list_pilot_data()]

    def wait(self, timeout: float | None = None) -> str:
        """Block until the DU is usable (Running) or final; return the state."""
        recs = wait_for_states(self._session.coord, Kind.DU, [self.id], {DataUnitState.RUNNING.value},
                               timeout=timeout)
        return recs[0].state

    def export(self, target: str, files: Sequence[str] | None = None, **options: Any) -> builtins.list[str]:
        """Copy the files (or ``files``) into a local directory or a store URL; return the written paths.

        Waits first while the DU is still being uploaded (as BigJob's ``export`` did).
        """
        if self.get_state() in (DataUnitState.NEW.value, DataUnitState.PENDING.value) and self._placed():
            self.wait()
        return self._ops.export(self.id, target, files=files, **options)

    def _placed(self) -> bool:
        return bool(replicas(self._ops.record(self.id)))

    def add_pilot_data(self, pilot_data: Any) -> None:
        """BigJob's ``add_pilot_data``: put this DU on a PilotData (object or id) and return once it is there.

        A DU with a complete replica is copied store to store; one on no PilotData yet is uploaded from
        the files of its description. A failed copy raises (the DU keeps the replicas it had).
        """
        pd_id = _pd_id(pilot_data)
        ops = self._ops
        rec = ops.record(self.id)
        if complete_replicas(rec) or rec.state != DataUnitState.NEW.value:
            ops.replicate(self.id, pd_id)
            return
        desc = DataUnitDescription.coerce(rec.data.get(DESCRIPTION) or {})
        if desc.file_urls:
            ops.upload(self.id, pd_id, desc.file_urls)
        else:
            ops.open_empty(self.id, pd_id)

    def add_replica(self, pilot_data: Any) -> None:
        """Replicate onto a PilotData (object or id), store to store."""
        self._ops.replicate(self.id, _pd_id(pilot_data))

    def move(self, pilot_data: Any) -> None:
        """Move to a PilotData: replicate, then remove the other replicas."""
        self._ops.move(self.id, _pd_id(pilot_data))

    def remove_replica(self, pilot_data: Any) -> None:
        """Delete the replica on a PilotData (never the last one of a live DU)."""
        self._ops.remove_replica(self.id, _pd_id(pilot_data))

    def add_files(self, file_url_list: Sequence[str] = ()) -> builtins.list[str]:
        """BigJob's ``add_files``: add local files (or store URLs) to every replica; return the names added."""
        return self._ops.add_local_files(self.id, list(file_url_list))

    def remove_files(self, file_urls: Sequence[str]) -> None:
        """BigJob's ``remove_files``: remove files (names, or the URLs they were added from) everywhere."""
        self._ops.remove_files(self.id, list(file_urls))

    def verify(self, pilot_data: Any = None) -> dict[str, builtins.list[str]]:
        """Check replicas against the manifest: ``{pd id: [problems]}`` (empty lists: all good)."""
        return self._ops.verify(self.id, None if pilot_data is None else _pd_id(pilot_data))

    def cancel(self) -> None:
        """BigJob's ``cancel``: close the DU (Done: no more files; replicas stay readable).

        A DU that never had a replica becomes Canceled. :meth:`remove` deletes the files.
        """
        self._ops.close(self.id)

    def remove(self) -> None:
        """Cancel the DU and delete all its replicas."""
        self._ops.remove(self.id)
