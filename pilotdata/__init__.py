"""pilot-data: a data-centric Pilot-Job service.

Owns the user-facing API (Pilot-API compatible services, descriptions, states), coordination
(Redis / embedded SQLite), SQL history, PilotData stores, launchers and the ``pdata`` CLI.

May import: ``placement`` and ``transfer`` (never ``agent``: launchers start agents by command line).
"""

from __future__ import annotations

from pilotdata.errors import PilotDataError
from pilotdata.states import ComputeUnitState, DataUnitState, PilotState, State

__version__ = "0.1.0"

__all__ = [
    "ComputeUnitState",
    "DataUnitState",
    "PilotDataError",
    "PilotState",
    "State",
    "__version__",
]
