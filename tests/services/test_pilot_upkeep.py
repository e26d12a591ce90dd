"""PilotComputeService upkeep: refresh polls each launcher once per round, default walltime, batch schemes' defaults.

Pilots are real fork pilots; the launcher is the fork launcher registered under a scheme of the test's
own (``register_launcher`` is the public way to add one) with its status calls counted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from pilotdata import PilotComputeService
from pilotdata.launchers import JobStatus, register_launcher
from pilotdata.launchers.fork import ForkLauncher
from pilotdata.services import FailurePolicy
from pilotdata.session import Session
from pilotdata.states import Kind


class CountingFork(ForkLauncher):
    """The fork launcher, counting its status calls and the ids each asked for."""

    schemes: ClassVar[tuple[str, ...]] = ("countfork",)
    calls: ClassVar[list[list[str]]] = []

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        CountingFork.calls.append(list(job_ids))
        return super().status(job_ids)


def test_refresh_asks_each_launcher_once_for_all_its_pilots(
    sqlite_session: Session, pcs_factory: list[PilotComputeService], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pilotdata.launchers as registry

    monkeypatch.setitem(registry._REGISTRY, "countfork", "x:y")  # restored after the test
    register_launcher("countfork", f"{__name__}:CountingFork")
    pcs = PilotComputeService(session=sqlite_session, policy=FailurePolicy(heartbeat_ttl=3),
                              launcher_options={"python": sys.executable})
    pcs_factory.append(pcs)
    pilots = [pcs.create_pilot({"service_url": "countfork://localhost", "working_directory": str(tmp_path / f"p{i}"),
                                "walltime": 5}) for i in range(3)]
    CountingFork.calls.clear()
    pcs.refresh()
    assert len(CountingFork.calls) == 1  # one round, one status call, however many pilots
    jobs = {sqlite_session.coord.get(Kind.PILOT, p.id).data["launcher"]["job_id"] for p in pilots}
    assert set(CountingFork.calls[0]) == jobs


def test_pilots_get_a_default_walltime_and_the_agent_a_shorter_one(
    sqlite_session: Session, pcs_factory: list[PilotComputeService], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("PDATA_DEFAULT_WALLTIME", raising=False)
    pcs = PilotComputeService(session=sqlite_session)
    pcs_factory.append(pcs)
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "working_directory": str(tmp_path / "p")})
    record = sqlite_session.coord.get(Kind.PILOT, pilot.id)
    assert record.data["description"]["walltime"] == 60.0
    unlimited = PilotComputeService(session=sqlite_session, default_walltime=None)
    pcs_factory.append(unlimited)
    with caplog.at_level("WARNING"):
        other = unlimited.create_pilot({"service_url": "fork://localhost", "working_directory": str(tmp_path / "q")})
    assert "walltime" not in sqlite_session.coord.get(Kind.PILOT, other.id).data["description"]
    assert "has no walltime" in caplog.text
    with pytest.raises(Exception, match="default_walltime"):
        PilotComputeService(session=sqlite_session, default_walltime=-5)


def test_batch_schemes_start_the_agent_from_this_host(sqlite_session: Session) -> None:
    from pilotdata.services.pilot_compute import _LOCAL_SCHEMES

    assert {"slurm", "pbs", "torque", "pbspro", "sge", "lsf"} <= set(_LOCAL_SCHEMES)
