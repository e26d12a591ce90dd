"""Which replica of a DataUnit to read: the nearest one, by the rule the agent stages inputs with.

A replica is ranked, seen from the site its bytes go to, by

1. the affinity-tree distance between that site and the replica's store (:func:`placement.tree_distance`
   on :func:`~pilotdata.descriptions.site_of` their labels; unknown labels count as far);
2. then how cheap the copy is: a store where the copy needs no bytes through this process (the same
   local file system as the destination: a hard link; the same S3 endpoint: a server-side copy), then
   any local file system, then everything else (SFTP, S3, iRODS);
3. then the PilotData id, so equal replicas are chosen the same way every time.

:meth:`ReplicaManager.best_source <pilotdata.data.ReplicaManager.best_source>` uses it for
``pdata replicate`` / ``mv`` / ``get`` and the Pilot-API's replication and export; the agent orders its
input replicas by the same first two keys (``agent/staging.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pilotdata.descriptions import site_of
from pilotdata.stores import Store
from placement import tree_distance

__all__ = ["FAR", "replica_distance", "replica_order"]

FAR = (1 << 30, 9)
"""The rank of a replica whose store cannot be opened here: after every other one."""


def replica_distance(store: Store, site: Sequence[str], dst: Store | None = None) -> tuple[int, int]:
    """``(tree distance from site, copy cost rank)`` of a replica on ``store`` (smaller is nearer).

    The rank is 0 when ``dst`` can take the copy without bytes passing through (same local file
    system, same S3 endpoint), 1 for another local file system, 2 for any other store.
    """
    distance = tree_distance(tuple(site), site_of(store.labels))
    if dst is not None and (store.same_local_fs(dst) or store.same_s3_endpoint(dst)):
        rank = 0
    else:
        rank = 1 if store.scheme == "file" else 2
    return (distance, rank)


def replica_order(stores: Mapping[str, Store | None], site: Sequence[str], dst: Store | None = None) -> list[str]:
    """The PD ids of ``stores`` nearest first (None: a store that cannot be opened here, tried last)."""

    def key(pd_id: str) -> tuple[int, int, str]:
        store = stores[pd_id]
        return (*(FAR if store is None else replica_distance(store, site, dst)), pd_id)

    return sorted(stores, key=key)
