"""Description objects: construction validates, immutable, coerce, the public names, round trips."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilotdata import descriptions as d
from pilotdata.descriptions import Description
from pilotdata.errors import DescriptionError
from tests.descriptions.helpers import ALL_KINDS, CU, PC, PD, REQUIRED, make, roundtrip


def test_constructor_validates_like_from_dict() -> None:
    cud = CU(executable="/bin/echo", arguments=["hi", 1], environment=["A=1"])  # type: ignore[arg-type]
    assert cud.arguments == ("hi", "1") and dict(cud.environment) == {"A": "1"}
    with pytest.raises(DescriptionError, match="number_of_processes: expected an integer >= 1, got 0"):
        CU(executable="/bin/echo", number_of_processes=0)
    with pytest.raises(DescriptionError, match="executable: required"):
        CU(executable=None)  # type: ignore[arg-type]


def test_replace_revalidates() -> None:
    cud = CU.from_dict({"executable": "x", "number_of_processes": 2})
    assert dataclasses.replace(cud, number_of_processes="3").number_of_processes == 3  # type: ignore[arg-type]
    with pytest.raises(DescriptionError, match="spmd_variation"):
        dataclasses.replace(cud, spmd_variation="openmp")


def test_descriptions_are_immutable() -> None:
    cud = make(CU, environment={"A": "1"}, labels={"x": "y"})
    assert isinstance(cud, CU)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cud.executable = "/bin/rm"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cud.environment["A"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        cud.labels["x"] = "z"  # type: ignore[index]
    assert cud.to_dict()["environment"] == {"A": "1"}


def test_input_dict_is_not_kept_or_changed() -> None:
    source = {"executable": "x", "environment": {"A": "1"}, "arguments": ["a"]}
    cud = CU.from_dict(source)
    source["environment"]["A"] = "2"  # type: ignore[index]
    source["arguments"].append("b")  # type: ignore[attr-defined]
    assert dict(cud.environment) == {"A": "1"} and cud.arguments == ("a",)


def test_input_dict_is_left_untouched_on_error() -> None:
    source = {"executable": "x", "environment": ["A=1", "broken"], "spmd_variation": "MPI"}
    before = json.dumps(source)
    with pytest.raises(DescriptionError):
        CU.from_dict(source)
    assert json.dumps(source) == before


@pytest.mark.parametrize("cls", ALL_KINDS)
def test_coerce_accepts_dict_or_instance(cls: type[Description]) -> None:
    desc = cls.coerce(REQUIRED[cls])
    assert isinstance(desc, cls)
    assert cls.coerce(desc) is desc
    assert cls.coerce(desc.to_dict()) == desc


def test_coerce_rejects_the_wrong_kind() -> None:
    with pytest.raises(DescriptionError, match="expected a ComputeUnitDescription or a dict, got a Pilot"):
        CU.coerce(make(PC))  # type: ignore[arg-type]
    with pytest.raises(DescriptionError, match="expected a dict"):
        PD.coerce("file:///tmp/pd")  # type: ignore[arg-type]


def test_public_api() -> None:
    assert set(d.__all__) == {
        "ComputeUnitDescription",
        "DataUnitDescription",
        "DataUnitRef",
        "Description",
        "FileTransfer",
        "PilotComputeDescription",
        "PilotDataDescription",
        "affinity_labels",
        "affinity_path",
        "format_size",
        "is_secret_key",
        "site_of",
    }


_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)


@given(
    arguments=st.lists(st.one_of(st.text(max_size=10), st.integers())),
    environment=st.dictionaries(_label, st.text(alphabet="abc =:/", max_size=6), max_size=4),
    inputs=st.lists(st.one_of(_label.map(lambda s: "du-" + s), st.dictionaries(_label.map(lambda s: "du-" + s), st.lists(_name, min_size=1, max_size=3), min_size=1, max_size=1)), max_size=3),  # noqa: E501
    nproc=st.integers(min_value=1, max_value=64),
    labels=st.dictionaries(_label.filter(lambda s: s not in ("datacenter", "machine")), _label, max_size=3),
)  # fmt: skip
def test_compute_unit_round_trip_property(
    arguments: list[Any], environment: dict[str, str], inputs: list[Any], nproc: int, labels: dict[str, str]
) -> None:
    ids = [i if isinstance(i, str) else next(iter(i)) for i in inputs]
    data = {"executable": "/bin/x", "arguments": arguments, "environment": environment,
            "input_data": inputs, "number_of_processes": nproc, "labels": labels}  # fmt: skip
    if len(set(ids)) != len(ids):
        with pytest.raises(DescriptionError, match="listed twice"):
            CU.from_dict(data)
        return
    cud = CU.from_dict(data)
    assert cud.arguments == tuple(str(a) for a in arguments)
    assert cud.to_dict()["input_data"] == inputs
    roundtrip(cud)
