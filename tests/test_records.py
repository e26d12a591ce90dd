"""The typed views of entity records: replica status, manifest, a CU's description, a record's site.

Records are written and read through a real embedded coordination file, as every process does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata.coordination import Coordination, connect
from pilotdata.descriptions import (
    ComputeUnitDescription,
    DataUnitRef,
    PilotComputeDescription,
    affinity_labels,
    affinity_path,
    site_of,
)
from pilotdata.errors import DescriptionError
from pilotdata.records import (
    DUFile,
    Replica,
    ReplicaStatus,
    complete_replicas,
    cu_description,
    du_entries,
    du_size,
    manifest_patch,
    pending_replicas,
    replica_patch,
    replica_removal,
    replicas,
)
from pilotdata.states import Kind


@pytest.fixture
def coord(tmp_path: Path, namespace: str) -> Iterator[Coordination]:
    backend = connect(f"sqlite:///{tmp_path / 'coord.sqlite'}", namespace)
    yield backend
    backend.close()


def test_replica_statuses_read_the_same_in_the_record_and_in_python(coord: Coordination) -> None:
    coord.create(Kind.DU, "du-1", {})
    coord.update_data(Kind.DU, "du-1", {**replica_patch("pd-a", ReplicaStatus.COMPLETE),
                                        **replica_patch("pd-b", ReplicaStatus.PENDING),
                                        **replica_patch("pd-c", ReplicaStatus.FAILED, "quota exceeded")})
    raw = coord.get(Kind.DU, "du-1").data
    assert {k: v["status"] for k, v in raw.items()} == {
        "replica:pd-a": "complete", "replica:pd-b": "pending", "replica:pd-c": "failed"}
    assert "reason" not in raw["replica:pd-a"] and raw["replica:pd-c"]["reason"] == "quota exceeded"

    rec = coord.get(Kind.DU, "du-1")
    reps = replicas(rec)
    assert list(reps) == ["pd-a", "pd-b", "pd-c"]
    assert reps["pd-c"] == Replica("pd-c", ReplicaStatus.FAILED, raw["replica:pd-c"]["time"], "quota exceeded")
    assert reps["pd-a"].complete and not reps["pd-b"].complete
    assert complete_replicas(rec) == ["pd-a"]
    assert pending_replicas(rec) == ["pd-b"]
    assert {pd: r.to_json() for pd, r in reps.items()} == {k[len("replica:"):]: v for k, v in raw.items()}


def test_a_removed_replica_is_gone_from_the_record(coord: Coordination) -> None:
    coord.create(Kind.DU, "du-1", replica_patch("pd-a", ReplicaStatus.COMPLETE))
    coord.update_data(Kind.DU, "du-1", replica_removal("pd-a"))
    rec = coord.get(Kind.DU, "du-1")
    assert replicas(rec) == {} and complete_replicas(rec) == []


def test_an_unknown_replica_status_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="verified"):
        Replica.from_json("pd-a", {"status": "verified", "time": 1.0})


def test_the_manifest_is_one_key_per_file_sorted_by_path(coord: Coordination) -> None:
    files = [DUFile("b/x.txt", 3, "b" * 64), DUFile("a.txt", 5, "a" * 64)]
    coord.create(Kind.DU, "du-1", manifest_patch(files[:1]))
    coord.update_data(Kind.DU, "du-1", manifest_patch(files[1:]))  # another writer, another key
    rec = coord.get(Kind.DU, "du-1")
    assert sorted(rec.data) == ["file:a.txt", "file:b/x.txt"]
    assert du_entries(rec) == sorted(files, key=lambda f: f.path)
    assert du_size(rec) == 8


def test_a_cu_description_is_read_back_typed_with_both_forms_of_data_reference(coord: Coordination) -> None:
    """A whole-DU id, a BigJob DU URL and ``{du: [files]}`` all come back as DataUnitRefs."""
    desc = ComputeUnitDescription.from_dict({
        "executable": "/bin/cat", "arguments": ["x"],
        "input_data": ["du-1", "redis://host:6379/bigdata:du-2", {"du-3": ["a.txt", "b/c.txt"]}],
        "output_data": [{"du-4": ["*.out"]}],
    })
    coord.create(Kind.CU, "cu-1", {"description": desc.to_dict()})
    back = cu_description(coord.get(Kind.CU, "cu-1"))
    assert back == desc
    assert back.input_data == (DataUnitRef("du-1"), DataUnitRef("du-2"), DataUnitRef("du-3", ("a.txt", "b/c.txt")))
    assert back.output_data == (DataUnitRef("du-4", ("*.out",)),)


def test_a_cu_record_without_a_usable_description_names_the_field(coord: Coordination) -> None:
    coord.create(Kind.CU, "cu-none", {})
    with pytest.raises(DescriptionError, match=r"cu-none.*no description") as missing:
        cu_description(coord.get(Kind.CU, "cu-none"))
    assert missing.value.field == "description"
    coord.create(Kind.CU, "cu-bad", {"description": {"executable": "/bin/true", "input_data": [{"du-1": []}]}})
    with pytest.raises(DescriptionError) as bad:
        cu_description(coord.get(Kind.CU, "cu-bad"))
    assert bad.value.field == "input_data[0].du-1"


@pytest.mark.parametrize("affinity", [{}, {"affinity_datacenter_label": "eu"},
                                      {"affinity_datacenter_label": "eu", "affinity_machine_label": "m1"},
                                      {"labels": {"datacenter": "eu", "machine": "m1", "gpu": "a100"}}])
def test_the_site_of_a_records_labels_is_the_affinity_path_of_its_description(affinity: dict[str, object]) -> None:
    """Pilots and PilotData keep ``affinity_labels`` in their records; placement reads them back with site_of."""
    desc = PilotComputeDescription.from_dict({"service_url": "fork://localhost", **affinity})
    assert site_of(affinity_labels(desc)) == affinity_path(desc)
    assert site_of({"machine": "m1"}) == ()  # a machine without its datacenter is no place in the tree
