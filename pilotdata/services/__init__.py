"""The Pilot-API services and handles (BigJob-compatible names).

``PilotComputeService`` / ``PilotCompute`` (pilots), ``PilotDataService`` / ``PilotData`` (stores),
``ComputeDataService`` (placement of DataUnits and ComputeUnits), ``ComputeUnit``, ``DataUnit``.
"""

from pilotdata.services.compute_data import ComputeDataService
from pilotdata.services.compute_unit import ComputeUnit
from pilotdata.services.data_unit import DataUnit
from pilotdata.services.pilot_compute import PilotCompute, PilotComputeService
from pilotdata.services.pilot_data import PilotData, PilotDataService
from pilotdata.services.policy import FailurePolicy

__all__ = [
    "ComputeDataService",
    "ComputeUnit",
    "DataUnit",
    "FailurePolicy",
    "PilotCompute",
    "PilotComputeService",
    "PilotData",
    "PilotDataService",
]
