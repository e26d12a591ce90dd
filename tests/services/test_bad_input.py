"""Bad input through the Python API: a clear DescriptionError naming the field and value, raised before
anything is recorded (a CU that could never run, or that names a DataUnit that does not exist, used to be
recorded and then sit Pending forever or end Failed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pilotdata import ComputeDataService, PilotComputeService, PilotDataService
from pilotdata.errors import DescriptionError
from pilotdata.session import Session
from pilotdata.states import Kind


def _everything(session: Session) -> dict[str, Any]:
    coord = session.coord
    return {"ids": {k.value: coord.list_ids(k) for k in Kind}, "shared": coord.queued(None),
            "unbound": coord.unbound(), "cursor": coord.last_cursor()}


BAD_UNITS = [
    ({"executable": "/bin/tr\0ue"}, "executable"),
    ({"executable": "/bin/true", "working_directory": "/tmp/\0x"}, "working_directory"),
    ({"executable": "/bin/true", "name": "x" * 100_000}, "name"),
    ({"executable": "/bin/true", "name": "two\nlines"}, "name"),
    ({"executable": "/bin/true", "number_of_processes": 99999999999999999999}, "number_of_processes"),
    ({"executable": "/bin/true", "input_data": ["du-missing"]}, "input_data"),
    ({"executable": "/bin/true", "output_data": [{"du-missing": ["*.txt"]}]}, "output_data"),
]


@pytest.mark.parametrize(("description", "field"), BAD_UNITS, ids=[f for _, f in BAD_UNITS])
def test_a_bad_compute_unit_is_refused_before_it_is_recorded(session: Session, description: dict[str, Any],
                                                              field: str) -> None:
    cds = ComputeDataService(session=session)
    before = _everything(session)
    submits: list[Callable[[], object]] = [
        lambda: cds.submit_compute_unit(description),
        lambda: cds.submit_compute_units([{"executable": "/bin/true"}, description]),
    ]
    for submit in submits:
        with pytest.raises(DescriptionError) as info:
            submit()
        assert info.value.field == field, info.value
        assert field in str(info.value)
    assert "compute unit #1" in str(info.value)  # in a batch, which one
    assert _everything(session) == before


def test_a_pilot_bound_cu_naming_a_missing_du_is_refused_too(session: Session, tmp_path: Path) -> None:
    pcs = PilotComputeService(session=session)
    session.coord.create(Kind.PILOT, "p-bound", {})
    before = _everything(session)
    with pytest.raises(DescriptionError, match="input_data: DataUnit 'du-nope' does not exist"):
        pcs.get_pilot("p-bound").submit_compute_unit({"executable": "/bin/true", "input_data": ["du-nope"]})
    assert _everything(session) == before


def test_bad_data_unit_and_store_input_records_nothing(session: Session, tmp_path: Path) -> None:
    cds = ComputeDataService(session=session)
    pds = PilotDataService(session=session)
    pd = pds.create_pilot({"service_url": str(tmp_path / "pd")})
    source = tmp_path / "f.txt"
    source.write_text("x")
    before = _everything(session)
    # ("" in a dict leaves the name unset, as BigJob scripts write it: see pilotdata.descriptions)
    for name, field in (("a\0b", "name"), ("y" * 257, "name"), ("tab\there", "name")):
        with pytest.raises(DescriptionError) as info:
            cds.submit_data_unit({"file_urls": [str(source)], "name": name}, pilot_data=pd)
        assert info.value.field == field
    with pytest.raises(DescriptionError, match=r"pd_id.*'\.\./evil'"):
        pds.create_pilot({"service_url": str(tmp_path / "evil")}, pd_id="../evil")
    with pytest.raises(DescriptionError, match=r"storage_options\.auto_mkdir: expected true or false, got 'maybe'"):
        pds.create_pilot({"service_url": str(tmp_path / "pd2"), "storage_options": {"auto_mkdir": "maybe"}})
    assert _everything(session) == before
    assert not (tmp_path / "evil").exists() and not (tmp_path / "pd2").exists()


def test_an_explicit_empty_namespace_is_an_error_not_the_default(tmp_path: Path) -> None:
    with pytest.raises(DescriptionError, match=r"namespace: .*got ''"):
        Session(f"sqlite:///{tmp_path / 'c.sqlite'}", namespace="")
