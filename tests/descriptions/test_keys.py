"""Keys: unknown keys are named with a suggestion, missing required keys are named, BigJob synonyms."""

from __future__ import annotations

from typing import Any

import pytest

from pilotdata.descriptions import ComputeUnitDescription, Description
from pilotdata.errors import DescriptionError
from tests.descriptions.helpers import ALL_KINDS, CU, DU, PC, PD, error_of


@pytest.mark.parametrize(
    ("cls", "key", "suggestion"),
    [
        (PC, "number_of_process", "number_of_processes"),
        (PC, "wall_time", "walltime"),
        (PC, "serviceurl", "service_url"),
        (PD, "storage_option", "storage_options"),
        (CU, "argument", "arguments"),
        (CU, "enviroment", "environment"),
        (CU, "input_dat", "input_data"),
        (DU, "file_url", "file_urls"),
        (DU, "affinity_datacentre_label", "affinity_datacenter_label"),
    ],
)
def test_unknown_key_names_it_and_suggests(cls: type[Description], key: str, suggestion: str) -> None:
    err = error_of(cls, **{key: 1})
    assert repr(key) in str(err)
    assert f"did you mean {suggestion!r}" in str(err)
    assert err.field == key
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("cls", ALL_KINDS)
def test_unknown_key_without_near_match_has_no_hint(cls: type[Description]) -> None:
    err = error_of(cls, gpu_flavour=4)
    assert "'gpu_flavour'" in str(err) and "did you mean" not in str(err)


def test_old_bigjob_total_core_count_is_a_synonym() -> None:
    assert ComputeUnitDescription.from_dict({"executable": "/bin/cat", "total_core_count": 3}).number_of_processes == 3
    same = {"executable": "/bin/cat", "total_core_count": 2, "number_of_processes": 2}
    assert ComputeUnitDescription.from_dict(same).number_of_processes == 2
    with pytest.raises(DescriptionError, match="contradicts number_of_processes") as info:
        ComputeUnitDescription.from_dict({"executable": "/bin/cat", "total_core_count": 2, "number_of_processes": 1})
    assert info.value.field == "total_core_count"


def test_non_string_key_is_rejected() -> None:
    with pytest.raises(DescriptionError, match="unknown key 3"):
        PC.from_dict({"service_url": "fork://localhost", 3: "x"})  # type: ignore[dict-item]


@pytest.mark.parametrize(("cls", "key"), [(PC, "service_url"), (PD, "service_url"), (CU, "executable")])
def test_missing_required_key(cls: type[Description], key: str) -> None:
    for data in ({}, {key: None}):
        with pytest.raises(DescriptionError, match=f"missing required key '{key}'") as info:
            cls.from_dict(data)
        assert info.value.field == key


def test_none_counts_as_absent() -> None:
    cud = CU.from_dict({"executable": "x", "output": None, "timeout": None})
    assert cud == CU.from_dict({"executable": "x"}) and cud.output == "stdout"
    assert PC.from_dict({"service_url": "fork://localhost", "queue": None}).queue is None


@pytest.mark.parametrize("bad", [["service_url"], "fork://localhost", None, 3])
def test_description_must_be_a_dict(bad: Any) -> None:
    with pytest.raises(DescriptionError, match="PilotComputeDescription: expected a dict"):
        PC.from_dict(bad)
