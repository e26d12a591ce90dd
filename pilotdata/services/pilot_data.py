"""PilotDataService and PilotData: register storage allocations (stores) and reopen them anywhere.

A PilotData is a store URL with labels and an optional quota, recorded in coordination (kind ``pd``)
with its *public* storage options only. Secrets given here stay in this process; another process
(an agent, the CLI) reopens the store from the record with secrets from its own environment
(:func:`pilotdata.data.open_pd_store`).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from typing import Any

from pilotdata.data import ReplicaManager, forget_pd_store, keep_pd_store, open_pd_store, resolve_sources
from pilotdata.data.replica_targets import add_replicas, check_replica_count
from pilotdata.descriptions import DataUnitDescription, PilotDataDescription, affinity_labels
from pilotdata.errors import DescriptionError, NotFoundError
from pilotdata.records import complete_replicas, replicas
from pilotdata.services import data_unit
from pilotdata.services.data_unit import DataUnit
from pilotdata.services.waiting import wait_for_states
from pilotdata.session import Session, entity_id, resolve
from pilotdata.states import DataUnitState, Kind, State
from pilotdata.stores import Store, get_store_class, open_store


def _du_id(du: Any) -> str:
    return entity_id(str(getattr(du, "id", du)))


def _userkey(path: str, options: Mapping[str, Any]) -> Any:
    """The private key in file ``path`` (BigJob's ``userkey``), for this process only."""
    import paramiko

    passphrase = options.get("passphrase") or os.environ.get("PDATA_SSH_PASSPHRASE")
    try:
        return paramiko.PKey.from_path(os.path.expanduser(path), passphrase)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise DescriptionError(f"userkey: cannot read a private key from {path!r}: {exc}", field="userkey") from exc

_PD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""A store name: what handles, ``pdata`` and BigJob-style URLs can name (no ``/`` or ``:``)."""


class PilotData:
    """A handle on one PilotData (BigJob's ``PilotData``); reconnects by id."""

    def __init__(self, pd_url: str, *, session: Session | None = None) -> None:
        self.id = entity_id(pd_url)
        self._session = resolve(session, None, None)

    @property
    def session(self) -> Session:
        """The session this handle talks through."""
        return self._session

    @property
    def url(self) -> str:
        """BigJob's ``pd.url``: the PilotData id (reconnect with ``PilotData(url)``)."""
        return self.id

    def _data(self) -> dict[str, Any]:
        return self._session.coord.get(Kind.PD, self.id).data

    @property
    def store(self) -> Store:
        """The opened store."""
        return open_pd_store(self._session.coord, self.id)

    def get_url(self) -> str:
        """The PilotData id (reconnect with ``PilotData(id)``)."""
        return self.id

    def get_state(self) -> str:
        """``Running`` while registered (stores have no other lifecycle)."""
        self._data()
        return State.Running

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

    def list_data_units(self) -> list[DataUnit]:
        """DataUnits with a complete replica on this PilotData."""
        coord = self._session.coord
        ids = coord.list_ids(Kind.DU)
        return [DataUnit(r.id, session=self._session) for r in coord.get_many(Kind.DU, ids)
                if r is not None and self.id in complete_replicas(r)]

    def submit_data_unit(
        self,
        data_unit_description: Mapping[str, Any] | DataUnitDescription | None = None,
        data_unit: DataUnit | str | None = None,
    ) -> DataUnit:
        """Create a DataUnit on this PilotData and upload its files (BigJob's ``pd.submit_data_unit``);
        or, with ``data_unit=``, put an existing DataUnit here too (BigJob's replication call).

        Local paths are checked first (a missing file raises :class:`~pilotdata.errors.DescriptionError`;
        nothing is recorded). ``number_of_replicas: N`` also copies it to N-1 other PilotData of this
        PilotData's service (:mod:`pilotdata.data.replica_targets`). Returns the DataUnit once it is usable
        (Running) or Failed with the reason.
        """
        if data_unit is not None:
            if data_unit_description is not None:
                raise DescriptionError("submit_data_unit: give data_unit_description or data_unit, not both",
                                       field="data_unit")
            du = data_unit if isinstance(data_unit, DataUnit) else DataUnit(data_unit, session=self._session)
            du.add_pilot_data(self)
            return du
        if data_unit_description is None:
            raise DescriptionError("submit_data_unit: give data_unit_description or data_unit",
                                   field="data_unit_description")
        desc = DataUnitDescription.coerce(data_unit_description)
        resolve_sources(desc.file_urls)  # missing files fail here, before anything is recorded
        peers = self._peers()
        check_replica_count(desc, peers)
        ops = ReplicaManager(self._session.coord)
        du_id = ops.register(desc)
        ops.fill(du_id, self.id, desc.file_urls)
        if desc.number_of_replicas and ops.record(du_id).state == State.Running:
            add_replicas(ops, du_id, peers)
        return DataUnit(du_id, session=self._session)

    def _peers(self) -> list[str]:
        """This PilotData and the others of its service (all of the namespace if it has none): where the
        replicas of ``number_of_replicas`` may go, this one first."""
        coord = self._session.coord
        service = self._data().get("service")
        records = [r for r in coord.get_many(Kind.PD, coord.list_ids(Kind.PD)) if r is not None]
        same = [r.id for r in records if service is not None and r.data.get("service") == service]
        return [self.id, *(pd for pd in (same or [r.id for r in records]) if pd != self.id)]

    def url_for_du(self, du: DataUnit | str) -> str:
        """BigJob's ``url_for_du``: the (public) URL of the DataUnit's directory in this PilotData."""
        return f"{self.store.url.rstrip('/')}/{_du_id(du)}"

    def get_du(self, du_url: DataUnit | str) -> DataUnit | None:
        """BigJob's ``get_du``: the DataUnit if it has a replica here (complete or being copied), else None."""
        du_id = _du_id(du_url)
        rec = self._session.coord.get_many(Kind.DU, [du_id])[0]
        if rec is None or self.id not in replicas(rec):
            return None
        return DataUnit(du_id, session=self._session)

    def put_du(self, du: DataUnit | str) -> None:
        """BigJob's ``put_du``: put the DataUnit here (copied from a replica, or uploaded from its files)."""
        self._du(du).add_pilot_data(self)

    def copy_du(self, du: DataUnit | str, pd_new: PilotData | str) -> None:
        """BigJob's ``copy_du``: copy the DataUnit's replica here to ``pd_new``, store to store."""
        ReplicaManager(self._session.coord).replicate(_du_id(du), str(getattr(pd_new, "id", pd_new)), source=self.id)

    def export_du(self, du: DataUnit | str, target_url: str) -> list[str]:
        """BigJob's ``export_du``: copy the DataUnit's files from this PilotData to a directory or store URL."""
        return ReplicaManager(self._session.coord).export(_du_id(du), target_url, pd_id=self.id)

    def remove_du(self, du: DataUnit | str) -> None:
        """BigJob's ``remove_du``: delete the DataUnit's replica here (never the last one of a live DU)."""
        ReplicaManager(self._session.coord).remove_replica(_du_id(du), self.id)

    def wait(self, timeout: float | None = None) -> None:
        """BigJob's ``pd.wait``: block until every DataUnit with a replica here is usable or final."""
        coord = self._session.coord
        ids = [r.id for r in coord.get_many(Kind.DU, coord.list_ids(Kind.DU))
               if r is not None and self.id in replicas(r)]
        wait_for_states(coord, Kind.DU, ids, {DataUnitState.RUNNING.value}, timeout=timeout)

    def _du(self, du: DataUnit | str) -> DataUnit:
        return du if isinstance(du, DataUnit) else DataUnit(_du_id(du), session=self._session)

    def cancel(self) -> None:
        """Deregister this PilotData (files stay in the store)."""
        coord = self._session.coord
        coord.delete(Kind.PD, self.id)
        forget_pd_store(coord, self.id)

    def __repr__(self) -> str:
        return f"PilotData({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PilotData) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("pd", self.id))


data_unit.PILOT_DATA_HANDLE = PilotData


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
        """This service's id (reconnect with ``PilotDataService(pds_url=...)``)."""
        return self.id

    @property
    def url(self) -> str:
        """BigJob's ``pds.url``: the same as :meth:`get_url`."""
        return self.id

    def wait(self, timeout: float | None = None) -> None:
        """BigJob's ``pds.wait``: wait for the DataUnits on each PilotData of this service."""
        for pd in self.list_pilots():
            pd.wait(timeout=timeout)

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
        if isinstance(pilot_data_description, Mapping):  # the scheme first: BigJob keys depend on it
            url = pilot_data_description.get("service_url")
            if isinstance(url, str) and "://" in url:
                get_store_class(url.split("://", 1)[0].strip().lower())
        desc = PilotDataDescription.coerce(pilot_data_description)
        if pd_id is not None and (not isinstance(pd_id, str) or not _PD_ID.fullmatch(pd_id)):
            raise DescriptionError(
                f"pd_id (the store's name): expected 1-64 letters, digits, '.', '_' or '-', starting with a "
                f"letter or digit, got {pd_id!r}"[:300], field="pd_id", value=pd_id,
            )
        pd_id = pd_id or f"pd-{uuid.uuid4().hex[:12]}"
        options = dict(desc.storage_options)
        if desc.userkey is not None:
            options["pkey"] = _userkey(desc.userkey, options)
        store = open_store(desc.service_url, labels=affinity_labels(desc), size=desc.size_bytes,
                           storage_options=options, name=pd_id)
        store.makedirs("")
        store.ping()
        data = {**store.record(), "description": desc.to_dict(), "service": self.id}
        self._session.coord.create(Kind.PD, pd_id, data)
        keep_pd_store(self._session.coord, pd_id, store)
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
