"""PilotDataService and PilotData: register storage allocations (stores) and reopen them anywhere.

A PilotData is a store URL with labels and an optional quota, recorded in coordination (kind ``pd``)
with its *public* storage options only. Secrets given here stay in this process; another process
(an agent, the CLI) reopens the store from the record with secrets from its own environment.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from pilotdata.descriptions import PilotDataDescription, affinity_labels
from pilotdata.errors import NotFoundError
from pilotdata.session import Session, entity_id, resolve
from pilotdata.states import Kind
from pilotdata.stores import Store, open_store, store_from_record

_open_stores: dict[tuple[str, str, str], Store] = {}


def _store_key(session: Session, pd_id: str) -> tuple[str, str, str]:
    """Cache key: coordination (redacted URL), namespace and PD id, so two sessions never mix stores."""
    return (session.url, session.namespace, pd_id)


def open_pd_store(session: Session, pd_id: str) -> Store:
    """The store of PilotData ``pd_id``, opened once per process (secrets from this process)."""
    key = _store_key(session, pd_id)
    store = _open_stores.get(key)
    if store is None:
        record = session.coord.get(Kind.PD, pd_id)
        store = store_from_record(record.data, name=pd_id)
        _open_stores[key] = store
    return store


class PilotData:
    """A handle on one PilotData (BigJob's ``PilotData``); reconnects by id."""

    def __init__(self, pd_url: str, *, session: Session | None = None) -> None:
        self.id = entity_id(pd_url)
        self._session = resolve(session, None, None)

    def _data(self) -> dict[str, Any]:
        return self._session.coord.get(Kind.PD, self.id).data

    @property
    def store(self) -> Store:
        """The opened store."""
        return open_pd_store(self._session, self.id)

    def get_url(self) -> str:
        """The PilotData id (reconnect with ``PilotData(id)``)."""
        return self.id

    def get_state(self) -> str:
        """``Running`` while registered (stores have no other lifecycle)."""
        self._data()
        return "Running"

    def get_details(self) -> dict[str, Any]:
        """URL (public), labels, quota, bytes used and the DataUnits with a replica here."""
        data = self._data()
        return {
            "id": self.id,
            "url": data["url"],
            "labels": data.get("labels", {}),
            "size": data.get("size"),
            "used": self.store.used_bytes(),
            "data_units": [du.id for du in self.list_data_units()],
        }

    def list_data_units(self) -> list[Any]:
        """DataUnits with a complete replica on this PilotData."""
        from pilotdata.services.data_unit import DataUnit

        coord = self._session.coord
        ids = coord.list_ids(Kind.DU)
        key = f"replica:{self.id}"
        return [DataUnit(r.id, session=self._session) for r in coord.get_many(Kind.DU, ids)
                if r is not None and (r.data.get(key) or {}).get("status") == "complete"]

    def submit_data_unit(self, data_unit_description: Mapping[str, Any]) -> Any:
        """Create a DataUnit on this PilotData and upload its files (BigJob's ``pd.submit_data_unit``).

        Returns the DataUnit once it is usable (Running) or Failed with the reason.
        """
        from pilotdata.services.compute_data import ComputeDataService

        cds = ComputeDataService(session=self._session)
        try:
            return cds.submit_data_unit(data_unit_description, pilot_data=self, background=False)
        finally:
            cds.close()

    def cancel(self) -> None:
        """Deregister this PilotData (files stay in the store)."""
        self._session.coord.delete(Kind.PD, self.id)
        _open_stores.pop(_store_key(self._session, self.id), None)

    def __repr__(self) -> str:
        return f"PilotData({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PilotData) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("pd", self.id))


class PilotDataService:
    """Creates and lists PilotData stores (BigJob's ``PilotDataService``)."""

    def __init__(
        self,
        coordination_url: str | None = None,
        *,
        namespace: str | None = None,
        session: Session | None = None,
        pds_url: str | None = None,
    ) -> None:
        self._session = resolve(session, coordination_url, namespace)
        self.id = pds_url or f"pds-{uuid.uuid4().hex[:12]}"

    @property
    def session(self) -> Session:
        """The session this service talks through."""
        return self._session

    def get_url(self) -> str:
        """This service's id."""
        return self.id

    def create_pilot(
        self,
        pilot_data_description: Mapping[str, Any] | PilotDataDescription,
        *,
        pd_id: str | None = None,
    ) -> PilotData:
        """Open the store, check it answers, create its root, and record it; return the PilotData.

        Bad descriptions raise :class:`~pilotdata.errors.DescriptionError`; an unreachable store or wrong
        credentials raise :class:`~pilotdata.errors.StoreError`. Nothing is recorded on error.
        """
        desc = PilotDataDescription.coerce(pilot_data_description)
        pd_id = pd_id or f"pd-{uuid.uuid4().hex[:12]}"
        store = open_store(desc.service_url, labels=affinity_labels(desc), size=desc.size_bytes,
                           storage_options=desc.storage_options, name=pd_id)
        store.makedirs("")
        store.ping()
        data = {**store.record(), "description": desc.to_dict(), "service": self.id}
        self._session.coord.create(Kind.PD, pd_id, data)
        _open_stores[_store_key(self._session, pd_id)] = store
        return PilotData(pd_id, session=self._session)

    def list_pilots(self) -> list[PilotData]:
        """Every PilotData registered in this namespace."""
        return [PilotData(i, session=self._session) for i in self._session.coord.list_ids(Kind.PD)]

    def get_pilot(self, pd_id: str) -> PilotData:
        """A handle on an existing PilotData; :class:`NotFoundError` if there is none."""
        if not self._session.coord.exists(Kind.PD, pd_id):
            raise NotFoundError(f"PilotData {pd_id!r} does not exist")
        return PilotData(pd_id, session=self._session)

    def cancel(self) -> None:
        """Deregister the PilotData created through this service (files stay)."""
        coord = self._session.coord
        for rec in coord.get_many(Kind.PD, coord.list_ids(Kind.PD)):
            if rec is not None and rec.data.get("service") == self.id:
                PilotData(rec.id, session=self._session).cancel()

    def __repr__(self) -> str:
        return f"PilotDataService({self.id!r}, {self._session!r})"
