"""Where the extra copies of a DataUnit go: BigJob's ``number_of_replicas``.

A DataUnit described with ``number_of_replicas: N`` is kept on N PilotData: the one it is submitted to,
plus N-1 more chosen one at a time by :func:`placement.choose_store`, the same rule that places a new
DataUnit (the DU's labels first, then nearness to its affinity, then free quota). The copies are made
store to store by :meth:`ReplicaManager.replicate <pilotdata.data.ReplicaManager.replicate>` (verified,
published atomically). :func:`check_replica_count` runs before anything is recorded, so asking for more
replicas than there are PilotData changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from pilotdata.coordination import Coordination
from pilotdata.data.pd_stores import open_pd_store
from pilotdata.data.replicas import ReplicaManager
from pilotdata.descriptions import DataUnitDescription, affinity_labels, affinity_path, site_of
from pilotdata.errors import DescriptionError, StoreError
from pilotdata.records import DESCRIPTION, du_size, replicas
from pilotdata.states import Kind
from placement import NoEligibleStoreError, StoreInfo, choose_store


def store_infos(coord: Coordination, pd_ids: Sequence[str]) -> list[StoreInfo]:
    """What placement needs to know about each PilotData: site, free quota (None: unlimited), labels."""
    infos: list[StoreInfo] = []
    for rec in coord.get_many(Kind.PD, list(pd_ids)):
        if rec is None:
            continue
        labels = {k: str(v) for k, v in (rec.data.get("labels") or {}).items()}
        quota = rec.data.get("size")
        free = None if quota is None else max(0, int(quota) - open_pd_store(coord, rec.id).used_bytes())
        infos.append(StoreInfo(rec.id, site_of(labels), free, labels))
    return infos


def check_replica_count(desc: DataUnitDescription, candidates: Sequence[str]) -> None:
    """:class:`DescriptionError` when ``number_of_replicas`` exceeds the PilotData that could hold them."""
    wanted = desc.number_of_replicas
    if wanted is not None and wanted > len(set(candidates)):
        raise DescriptionError(
            f"number_of_replicas: {wanted} replicas asked for, but only {len(set(candidates))} PilotData "
            "can hold one (each replica is on a different PilotData)",
            field="number_of_replicas",
            value=wanted,
        )


def add_replicas(ops: ReplicaManager, du_id: str, candidates: Sequence[str]) -> list[str]:
    """Copy the DU onto PilotData from ``candidates`` until it has ``number_of_replicas`` complete
    replicas; return the PD ids it was copied to (in order). A DU without the key gets none.

    Raises :class:`StoreError` when no candidate can take a copy (quota, labels) or a copy fails (that
    replica is then recorded failed; the DU keeps the replicas it has).
    """
    rec = ops.record(du_id)
    desc = DataUnitDescription.coerce(rec.data.get(DESCRIPTION) or {})
    wanted = desc.number_of_replicas or 1
    have = replicas(rec)
    complete = [pd for pd, rep in have.items() if rep.complete]
    pool = [pd for pd in dict.fromkeys(candidates) if pd not in have]
    soft = {k: v for k, v in affinity_labels(desc).items() if v}
    made: list[str] = []
    for _ in range(wanted - len(complete)):
        infos = store_infos(ops.coord, [pd for pd in pool if pd not in made])
        if not infos:
            raise StoreError(f"DataUnit {du_id}: {wanted} replicas asked for, but no further PilotData is left "
                             f"(it has {len(complete) + len(made)})")
        try:
            pd_id = choose_store(du_size(rec), infos, soft=soft, near=affinity_path(desc))
        except NoEligibleStoreError as exc:
            raise StoreError(f"DataUnit {du_id}: no PilotData can take replica {len(complete) + len(made) + 1} "
                             f"of {wanted}: {exc}") from exc
        ops.replicate(du_id, pd_id)
        made.append(pd_id)
    return made
