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

ComputeDataServiceDecentral = ComputeDataService
"""BigJob's decentral CDS: here every CDS binds late and agents pull, so it is the same class."""

ComputeDataServiceCentral = ComputeDataService
"""BigJob's name for its central CDS: the same class too."""

__all__ = [
    "ComputeDataService",
    "ComputeDataServiceCentral",
    "ComputeDataServiceDecentral",
    "ComputeUnit",
    "DataUnit",
    "FailurePolicy",
    "PilotCompute",
    "PilotComputeService",
    "PilotData",
    "PilotDataService",
]
