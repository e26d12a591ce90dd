"""Affinity and labels: the datacenter/machine path, reserved labels folded into it."""

from __future__ import annotations

import pytest

from pilotdata.descriptions import Description, affinity_labels, affinity_path
from tests.descriptions.helpers import ALL_KINDS, PC, error_of, make, roundtrip


@pytest.mark.parametrize("cls", ALL_KINDS)
def test_affinity_path_levels(cls: type[Description]) -> None:
    assert affinity_path(make(cls)) == ()
    assert affinity_path(make(cls, affinity_datacenter_label="eu")) == ("eu",)
    both = make(cls, affinity_datacenter_label="eu", affinity_machine_label="m1", labels={"gpu": "yes"})
    assert affinity_path(both) == ("eu", "m1")
    assert affinity_labels(both) == {"gpu": "yes", "datacenter": "eu", "machine": "m1"}


def test_machine_label_needs_datacenter_label() -> None:
    err = error_of(PC, affinity_machine_label="m1")
    assert err.field == "affinity_machine_label" and "needs affinity_datacenter_label" in str(err)


def test_reserved_labels_fold_into_affinity() -> None:
    pcd = make(PC, labels={"datacenter": "eu", "machine": "m1", "gpu": "yes"})
    assert (pcd.affinity_datacenter_label, pcd.affinity_machine_label) == ("eu", "m1")
    assert dict(pcd.labels) == {"gpu": "yes"}
    assert pcd == make(PC, affinity_datacenter_label="eu", affinity_machine_label="m1", labels={"gpu": "yes"})
    assert make(PC, affinity_datacenter_label="eu", labels={"datacenter": "eu"}).labels == {}
    roundtrip(pcd)


def test_contradicting_reserved_label_is_an_error() -> None:
    err = error_of(PC, affinity_datacenter_label="eu", labels={"datacenter": "us"})
    assert err.field == "labels.datacenter" and "contradicts affinity_datacenter_label='eu'" in str(err)
