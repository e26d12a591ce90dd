"""DataUnit files and replicas on PilotData stores: the operations below the services.

* :class:`ReplicaManager` (:mod:`.replicas`): register, upload, replicate, move, export, verify and
  remove DataUnits, and publish CU outputs into them, on one coordination connection (the services',
  the CLI's or an agent's own); the boundary to the ``transfer`` engine.
* :func:`open_pd_store` (:mod:`.pd_stores`): a PilotData's store, reopened from its record once per
  process with this process's secrets.
* :func:`resolve_sources` (:mod:`.sources`): the local files or store URLs a DataUnit is made from.
* :func:`replica_order` (:mod:`.nearest`): which replica to read, nearest first (the agent's rule).
* :func:`default_checksum` (:mod:`.checksums`): the checksum algorithm new files are recorded with
  (``PDATA_CHECKSUM``; blake3 where installed, else sha256); each file keeps the one it was recorded with.

The DataUnit record's keys and replica statuses are spelled in :mod:`pilotdata.records`. This
package imports nothing above it (services, CLI); the services' :class:`~pilotdata.services.DataUnit`
handle is built on it.
"""

from __future__ import annotations

from pilotdata.data.checksums import CHECKSUM_ENV, check_checksum, default_checksum
from pilotdata.data.nearest import replica_distance, replica_order
from pilotdata.data.pd_stores import forget_pd_store, keep_pd_store, open_pd_store
from pilotdata.data.replicas import Progress, ReplicaManager, convert_transfer_error, to_transfer_entries
from pilotdata.data.sources import Source, resolve_sources

__all__ = [
    "CHECKSUM_ENV",
    "Progress",
    "ReplicaManager",
    "Source",
    "check_checksum",
    "convert_transfer_error",
    "default_checksum",
    "forget_pd_store",
    "keep_pd_store",
    "open_pd_store",
    "replica_distance",
    "replica_order",
    "resolve_sources",
    "to_transfer_entries",
]
