"""Shared by the descriptions tests: the required keys of each kind and small builders."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import pytest

from pilotdata.descriptions import (
    ComputeUnitDescription,
    DataUnitDescription,
    Description,
    PilotComputeDescription,
    PilotDataDescription,
)
from pilotdata.errors import DescriptionError

PC, PD, CU, DU = PilotComputeDescription, PilotDataDescription, ComputeUnitDescription, DataUnitDescription
REQUIRED: dict[type[Description], dict[str, Any]] = {
    PC: {"service_url": "fork://localhost"},
    PD: {"service_url": "file:///tmp/pd"},
    CU: {"executable": "/bin/date"},
    DU: {},
}
ALL_KINDS = [PC, PD, CU, DU]
D = TypeVar("D", bound=Description)


def make(cls: type[D], **fields: Any) -> D:
    """``cls.from_dict`` of its required keys plus ``fields``."""
    return cls.from_dict({**REQUIRED[cls], **fields})


def error_of(cls: type[Description], **fields: Any) -> DescriptionError:
    """The DescriptionError that ``make`` raises (fails the test if none)."""
    with pytest.raises(DescriptionError) as info:
        make(cls, **fields)
    return info.value


def roundtrip(desc: Description) -> None:
    """``to_dict`` is JSON, stable, and reads back to an equal description."""
    data = desc.to_dict()
    assert json.loads(json.dumps(data)) == data
    again = type(desc).from_dict(data)
    assert again == desc
    assert again.to_dict() == data
