"""Input and output staging of CUs (placeholder until the transfer engine lands)."""

from __future__ import annotations

from pathlib import Path

from agent.task import Task
from pilotdata.coordination import Coordination
from pilotdata.errors import StagingError


class DataStager:
    """Stages CU inputs through the pilot cache and outputs into DataUnits."""

    def __init__(self, coord: Coordination, pilot: str, cache_dir: Path) -> None:
        self.coord = coord
        self.pilot = pilot
        self.cache_dir = cache_dir

    def stage_in(self, task: Task, sandbox: Path) -> None:
        """Link the CU's input DataUnits into its sandbox."""
        if task.description.input_data:
            raise StagingError("input staging is not available yet")

    def stage_out(self, task: Task, sandbox: Path) -> None:
        """Upload the CU's output files into their DataUnits."""
        if task.description.output_data:
            raise StagingError("output staging is not available yet")
