"""What the agent needs from a ComputeUnit record, and how a CU run fails.

:class:`Task` is the agent's view of one claimed CU: its id, its attempt number and its validated
:class:`~pilotdata.descriptions.ComputeUnitDescription`, read once when the CU is claimed.
:class:`CUFailed` carries the reason a run failed, whether the failed-task retry policy may rerun it,
and the exit code if there was one.
"""

from __future__ import annotations

from dataclasses import dataclass

from pilotdata.coordination import EntityRecord
from pilotdata.descriptions import ComputeUnitDescription
from pilotdata.errors import PilotDataError
from pilotdata.records import cu_description


class CUFailed(PilotDataError):
    """A CU run failed; ``reason`` is what goes into the CU's data and the Failed event.

    ``retryable``: the failed-task retry policy may rerun it (non-zero exit, timeout); failures that
    would fail the same way again (missing executable, bad working directory) are not retryable.
    """

    def __init__(self, reason: str, *, retryable: bool = False, exit_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.exit_code = exit_code


@dataclass(frozen=True)
class Task:
    """The agent's view of one CU (see the module docstring)."""

    id: str
    attempt: int
    description: ComputeUnitDescription

    @property
    def processes(self) -> int:
        """Slots the CU takes (``number_of_processes``)."""
        return self.description.number_of_processes

    @property
    def is_mpi(self) -> bool:
        """Whether the CU is launched through an MPI launcher."""
        return self.description.spmd_variation == "mpi"

    @classmethod
    def from_record(cls, record: EntityRecord) -> Task:
        """Build a Task from a CU record; :class:`~pilotdata.errors.DescriptionError` names the bad field."""
        return cls(record.id, record.attempt, cu_description(record))
