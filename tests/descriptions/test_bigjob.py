"""BigJob compatibility: BigJob's own description dicts read as they are, and stored explicitly."""

from __future__ import annotations

from typing import Any

from pilotdata.descriptions import DataUnitRef, affinity_labels, affinity_path
from tests.descriptions.helpers import CU, DU, PC, PD, REQUIRED, roundtrip

BIGJOB_PILOT = {
    "service_url": "fork://localhost",
    "number_of_processes": 2,
    "working_directory": "/tmp/x",
    "affinity_datacenter_label": "eu-de-south",
    "affinity_machine_label": "mymachine-1",
}
BIGJOB_SLURM_PILOT = {
    "service_url": "slurm+ssh://login1.cluster.example.org",
    "number_of_processes": 32,
    "processes_per_node": 16,
    "queue": "normal",
    "project": "TG-MCB090174",
    "walltime": 60,
    "working_directory": "/scratch/u/agent",
}
BIGJOB_PILOT_DATA = {
    "service_url": "ssh://localhost/tmp/pilotstore/",
    "size": 100,
    "affinity_datacenter_label": "eu-de-south",
    "affinity_machine_label": "mymachine-1",
}
BIGJOB_DATA_UNIT = {
    "file_urls": ["/home/u/db/nt.00.nhr", "/home/u/db/nt.00.nin", "ssh://host/data/query.fa"],
    "affinity_datacenter_label": "eu-de-south",
    "affinity_machine_label": "mymachine-1",
}
BIGJOB_COMPUTE_UNIT = {
    "executable": "/usr/bin/blastn",
    "arguments": ["-db", "nt.00", "-query", "query.fa", "-evalue", 1e-5],
    "environment": ["BLASTDB=.", "OMP_NUM_THREADS=1"],
    "number_of_processes": 1,
    "spmd_variation": "single",
    "output": "stdout.txt",
    "error": "stderr.txt",
    "input_data": ["redis://localhost:6379/bigdata:du-db", {"du-queries": ["query.fa"]}],
    "output_data": [{"du-results": ["std*", "*.out"]}],
    "affinity_datacenter_label": "eu-de-south",
    "affinity_machine_label": "mymachine-1",
}


def test_bigjob_pilot_compute_example() -> None:
    pcd = PC.from_dict(BIGJOB_PILOT)
    assert pcd.service_url == "fork://localhost"
    assert pcd.number_of_processes == 2
    assert pcd.working_directory == "/tmp/x"
    assert affinity_path(pcd) == ("eu-de-south", "mymachine-1")
    assert affinity_labels(pcd) == {"datacenter": "eu-de-south", "machine": "mymachine-1"}
    assert pcd.to_dict() == {**BIGJOB_PILOT, "labels": {}}
    roundtrip(pcd)


def test_bigjob_slurm_pilot_example() -> None:
    pcd = PC.from_dict(BIGJOB_SLURM_PILOT)
    assert (pcd.queue, pcd.project, pcd.walltime) == ("normal", "TG-MCB090174", 60)
    assert pcd.processes_per_node == 16
    assert affinity_path(pcd) == ()
    roundtrip(pcd)


def test_bigjob_pilot_data_example_size_is_megabytes() -> None:
    pdd = PD.from_dict(BIGJOB_PILOT_DATA)
    assert pdd.service_url == "ssh://localhost/tmp/pilotstore/"
    assert pdd.size_bytes == 100 * 10**6
    assert pdd.to_dict()["size"] == "100MB"
    roundtrip(pdd)


def test_bigjob_data_unit_example() -> None:
    dud = DU.from_dict(BIGJOB_DATA_UNIT)
    assert dud.file_urls == tuple(BIGJOB_DATA_UNIT["file_urls"])
    assert affinity_path(dud) == ("eu-de-south", "mymachine-1")
    roundtrip(dud)


def test_bigjob_compute_unit_example() -> None:
    cud = CU.from_dict(BIGJOB_COMPUTE_UNIT)
    assert cud.arguments == ("-db", "nt.00", "-query", "query.fa", "-evalue", "1e-05")
    assert dict(cud.environment) == {"BLASTDB": ".", "OMP_NUM_THREADS": "1"}
    assert cud.input_data == (DataUnitRef("du-db"), DataUnitRef("du-queries", ("query.fa",)))
    assert cud.output_data == (DataUnitRef("du-results", ("std*", "*.out")),)
    data = cud.to_dict()
    assert data["input_data"] == ["du-db", {"du-queries": ["query.fa"]}]
    assert data["output_data"] == [{"du-results": ["std*", "*.out"]}]
    assert data["environment"] == {"BLASTDB": ".", "OMP_NUM_THREADS": "1"}
    roundtrip(cud)


def test_defaults_are_explicit_in_the_stored_form() -> None:
    data = CU.from_dict({"executable": "/bin/true"}).to_dict()
    assert data == {
        "executable": "/bin/true",
        "arguments": [],
        "shell": False,
        "environment": {},
        "number_of_processes": 1,
        "spmd_variation": "single",
        "input_data": [],
        "output_data": [],
        "output": "stdout",
        "error": "stderr",
        "labels": {},
    }
    assert PC.from_dict(REQUIRED[PC]).to_dict() == {
        "service_url": "fork://localhost",
        "number_of_processes": 1,
        "labels": {},
    }
    assert DU.from_dict({}).to_dict() == {"file_urls": [], "labels": {}}


def test_bigjob_style_dict_subclass_is_accepted() -> None:
    class BigJobDescription(dict[str, Any]):
        """BigJob's descriptions were dict subclasses with attribute access."""

    legacy = BigJobDescription(BIGJOB_PILOT)
    assert PC.coerce(legacy) == PC.from_dict(BIGJOB_PILOT)
