"""Typed, validated descriptions of pilots, PilotData, ComputeUnits and DataUnits.

Each class accepts BigJob Pilot-API dicts through ``from_dict`` (same key names), writes the
normalised JSON form that coordination stores through ``to_dict`` (round-trips through
``from_dict``, never contains a secret), and ``coerce`` takes either a dict or an instance::

    pcd = PilotComputeDescription.coerce({"service_url": "fork://localhost", "number_of_processes": 2})

Validation is driven by one spec per field (:mod:`._checks` holds the checkers). Every problem is a
:class:`~pilotdata.errors.DescriptionError` naming the field (``environment[2]``,
``output_data[0].du-1``) with ``.field`` and ``.value`` set; an unknown key gets a did-you-mean hint.
"""

from __future__ import annotations

from pilotdata.descriptions._checks import SECRET_MARKERS, DataUnitRef, format_size, is_secret_key
from pilotdata.descriptions._models import (
    ComputeUnitDescription,
    DataUnitDescription,
    Description,
    PilotComputeDescription,
    PilotDataDescription,
    affinity_labels,
    affinity_path,
)

__all__ = [
    "ComputeUnitDescription",
    "DataUnitDescription",
    "DataUnitRef",
    "Description",
    "PilotComputeDescription",
    "PilotDataDescription",
    "SECRET_MARKERS",
    "affinity_labels",
    "affinity_path",
    "format_size",
    "is_secret_key",
]
