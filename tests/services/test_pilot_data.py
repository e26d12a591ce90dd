"""PilotData handles: BigJob's ``pd.submit_data_unit`` and ``pd.list_data_units`` on real file stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotdata import ComputeDataService, DataUnit, PilotDataService, State
from pilotdata.errors import DescriptionError
from pilotdata.session import Session
from pilotdata.states import Kind


def test_submit_data_unit_uploads_here_and_lists_it(
    sqlite_session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in.txt").write_text("hello\n")
    pds = PilotDataService(session=sqlite_session)
    pd = pds.create_pilot({"service_url": str(tmp_path / "pd")})
    other = pds.create_pilot({"service_url": str(tmp_path / "other")})

    def no_cds(*args: object, **kwargs: object) -> None:
        raise AssertionError("a PilotData uploads by itself, without a ComputeDataService")

    monkeypatch.setattr(ComputeDataService, "__init__", no_cds)
    du = pd.submit_data_unit({"file_urls": [str(tmp_path / "in.txt")], "name": "greeting"})
    assert isinstance(du, DataUnit)
    assert du.get_state() == State.Running  # returned once usable, no waiting needed
    listing = du.list()  # BigJob's shape: the file's URL on each PilotData holding it
    algorithm = listing["in.txt"]["algorithm"]  # the checksum under its algorithm's name
    assert listing == {"in.txt": {"size": 6, algorithm: listing["in.txt"][algorithm], "algorithm": algorithm,
                                  "local": None, "pilot_data": [f"file://{tmp_path / 'pd'}/{du.id}/in.txt"]}}
    assert (tmp_path / "pd" / du.id / "in.txt").read_text() == "hello\n"
    assert pd.list_data_units() == [du] and other.list_data_units() == []
    assert pd.get_details()["data_units"] == [du.id]


def test_submit_data_unit_with_a_missing_file_records_nothing(sqlite_session: Session, tmp_path: Path) -> None:
    pd = PilotDataService(session=sqlite_session).create_pilot({"service_url": str(tmp_path / "pd")})
    with pytest.raises(DescriptionError, match=r"nope\.txt"):
        pd.submit_data_unit({"file_urls": [str(tmp_path / "nope.txt")]})
    assert sqlite_session.coord.list_ids(Kind.DU) == []


def test_a_failed_upload_returns_the_du_failed_with_the_reason(sqlite_session: Session, tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * 4096)
    pd = PilotDataService(session=sqlite_session).create_pilot({"service_url": str(tmp_path / "pd"), "size": "1KB"})
    du = pd.submit_data_unit({"file_urls": [str(tmp_path / "big.bin")]})
    details = du.get_details()
    assert details["state"] == State.Failed
    assert "quota" in details["reason"] and pd.id in details["reason"]
    assert details["replicas"][pd.id]["status"] == "failed"
    assert pd.list_data_units() == []
