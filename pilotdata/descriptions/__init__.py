"""Typed, validated descriptions of pilots, PilotData, ComputeUnits and DataUnits.

Each class accepts BigJob Pilot-API dicts through ``from_dict`` (same key names), writes the
normalised JSON form that coordination stores through ``to_dict`` (round-trips through
``from_dict``, never contains a secret), and ``coerce`` takes either a dict or an instance::

    pcd = PilotComputeDescription.coerce({"service_url": "fork://localhost", "number_of_processes": 2})

Validation is driven by one spec per field (:mod:`._checks` holds the checkers). Every problem is a
:class:`~pilotdata.errors.DescriptionError` naming the field (``environment[2]``,
``output_data[0].du-1``) with ``.field`` and ``.value`` set; an unknown key gets a did-you-mean hint.
In a dict, ``None`` or ``""`` leaves an optional key unset; BigJob's other names for keys are read as
ours, and BigJob keys that cannot be honoured are errors that say why.

BigJob's editable descriptions (dicts filled by attribute, ``pilotdata.PilotComputeDescription()``
and the three others) are in :mod:`.editable`; they become these typed classes when used.
"""

from __future__ import annotations

from pilotdata.descriptions._checks import DataUnitRef, FileTransfer, format_size, is_secret_key
from pilotdata.descriptions._models import (
    ComputeUnitDescription,
    DataUnitDescription,
    Description,
    PilotComputeDescription,
    PilotDataDescription,
    affinity_labels,
    affinity_path,
    site_of,
)

__all__ = [
    "ComputeUnitDescription",
    "DataUnitDescription",
    "DataUnitRef",
    "Description",
    "FileTransfer",
    "PilotComputeDescription",
    "PilotDataDescription",
    "affinity_labels",
    "affinity_path",
    "format_size",
    "is_secret_key",
    "site_of",
]
