"""pilot-data: a data-centric Pilot-Job service.

Owns the user-facing API (Pilot-API compatible services, descriptions, states), coordination
(Redis / embedded SQLite), SQL history, PilotData stores, launchers and the ``pdata`` CLI.

May import: ``placement`` and ``transfer`` (never ``agent``: launchers start agents by command line).

BigJob scripts change only their import line::

    from pilotdata import PilotComputeService, PilotDataService, ComputeDataService, State
    import pilotdata as pilot   # for scripts that write pilot.PilotComputeDescription() etc.

The four ``*Description`` names here are BigJob's editable dict descriptions
(:mod:`pilotdata.descriptions.editable`); the typed, validated classes they become at submit time are
in :mod:`pilotdata.descriptions`.
"""

from __future__ import annotations

from typing import Any

from pilotdata.errors import PilotDataError
from pilotdata.states import ComputeUnitState, DataUnitState, PilotState, State

PilotError = PilotDataError
"""BigJob's ``pilot.PilotError``: the base of every error pilot-data raises."""

__version__ = "0.1.0"

_SERVICES = {
    "ComputeDataService", "ComputeDataServiceCentral", "ComputeDataServiceDecentral", "ComputeUnit", "DataUnit",
    "FailurePolicy", "PilotCompute", "PilotComputeService", "PilotData", "PilotDataService",
}
_DESCRIPTIONS = {
    "ComputeUnitDescription", "DataUnitDescription", "PilotComputeDescription", "PilotDataDescription",
}

__all__ = [
    "ComputeDataService",
    "ComputeDataServiceCentral",
    "ComputeDataServiceDecentral",
    "ComputeUnit",
    "ComputeUnitDescription",
    "ComputeUnitState",
    "DataUnit",
    "DataUnitDescription",
    "DataUnitState",
    "FailurePolicy",
    "PilotCompute",
    "PilotComputeDescription",
    "PilotComputeService",
    "PilotData",
    "PilotDataDescription",
    "PilotDataError",
    "PilotDataService",
    "PilotError",
    "PilotState",
    "State",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import the services and descriptions on first use (``import pilotdata`` stays light)."""
    if name in _SERVICES:
        from pilotdata import services

        return getattr(services, name)
    if name in _DESCRIPTIONS:
        from pilotdata.descriptions import editable

        return getattr(editable, name)
    raise AttributeError(f"module 'pilotdata' has no attribute {name!r}")
