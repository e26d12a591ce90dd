"""The stores of PilotData records, opened once per process.

A PilotData record (kind ``pd``) holds a store URL, labels, quota and the *public* storage options
only; :func:`open_pd_store` reopens the store from it with secrets from this process's environment
(an agent, the CLI) and keeps it for the life of the process. The cache is keyed by the
coordination (its URL without password, and namespace) and the PD id, so two coordinations never
mix stores.
"""

from __future__ import annotations

from pilotdata.coordination import Coordination
from pilotdata.states import Kind
from pilotdata.stores import Store, store_from_record

_open: dict[tuple[str, str, str], Store] = {}


def _key(coord: Coordination, pd_id: str) -> tuple[str, str, str]:
    return (coord.url, coord.namespace, pd_id)


def open_pd_store(coord: Coordination, pd_id: str) -> Store:
    """The store of PilotData ``pd_id``, opened once per process (secrets from this process)."""
    key = _key(coord, pd_id)
    store = _open.get(key)
    if store is None:
        record = coord.get(Kind.PD, pd_id)
        store = store_from_record(record.data, name=pd_id)
        _open[key] = store
    return store


def keep_pd_store(coord: Coordination, pd_id: str, store: Store) -> None:
    """Remember the store a PilotData was just created with (its secrets stay usable in this process)."""
    _open[_key(coord, pd_id)] = store


def forget_pd_store(coord: Coordination, pd_id: str) -> None:
    """Drop PilotData ``pd_id``'s store (it was deregistered)."""
    _open.pop(_key(coord, pd_id), None)
