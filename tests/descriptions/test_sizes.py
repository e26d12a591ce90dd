"""Sizes: BigJob megabytes, unit suffixes, and the stored form that reads back exactly."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilotdata.descriptions import format_size
from tests.descriptions.helpers import PD, make, roundtrip


@pytest.mark.parametrize(
    ("given", "nbytes", "stored"),
    [
        (100, 100 * 10**6, "100MB"),
        ("100", 100 * 10**6, "100MB"),
        ("10GB", 10 * 10**9, "10GB"),
        ("10 gb", 10 * 10**9, "10GB"),
        ("512MiB", 512 * 2**20, "512MiB"),
        ("1.5GiB", 3 * 2**29, "1536MiB"),
        ("2TB", 2 * 10**12, "2TB"),
        ("1kB", 1000, "1kB"),
        ("4KiB", 4096, "4KiB"),
        ("1234B", 1234, "1234B"),
        ("1024 b", 1024, "1KiB"),
        ("1PiB", 2**50, "1PiB"),
    ],
)
def test_size_units(given: Any, nbytes: int, stored: str) -> None:
    pdd = make(PD, size=given)
    assert isinstance(pdd, PD)
    assert pdd.size_bytes == nbytes
    assert pdd.to_dict()["size"] == stored
    roundtrip(pdd)


def test_size_bytes_attribute_takes_bytes_when_constructed_directly() -> None:
    assert PD(service_url="/pd", size_bytes=4096).size_bytes == 4096
    assert PD(service_url="/pd", size_bytes="4KiB").size_bytes == 4096  # type: ignore[arg-type]
    assert PD(service_url="/pd").size_bytes is None
    assert "size" not in PD(service_url="/pd").to_dict()


@given(st.integers(min_value=1, max_value=2**62))
def test_format_size_reads_back_exactly(nbytes: int) -> None:
    assert PD.from_dict({"service_url": "/pd", "size": format_size(nbytes)}).size_bytes == nbytes
