"""Descriptions: BigJob dicts in, validated objects, normalised JSON out, clear errors, no secrets."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilotdata import descriptions as d
from pilotdata.descriptions import (
    ComputeUnitDescription,
    DataUnitDescription,
    DataUnitRef,
    Description,
    PilotComputeDescription,
    PilotDataDescription,
    affinity_labels,
    affinity_path,
    format_size,
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


def make(cls: type[Description], **fields: Any) -> Description:
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


# -- BigJob examples -----------------------------------------------------------------------------

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


# -- unknown and missing keys ------------------------------------------------------------------


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


# -- field values: good and bad ----------------------------------------------------------------

GOOD: list[tuple[type[Description], str, Any, Any]] = [
    # (kind, key, given, normalised attribute value)
    (PC, "service_url", "fork://localhost", "fork://localhost"),
    (PC, "service_url", "ssh://user@host:22", "ssh://user@host:22"),
    (PC, "service_url", "slurm://localhost", "slurm://localhost"),
    (PC, "service_url", "SLURM+SSH://host", "slurm+ssh://host"),
    (PC, "service_url", " ssh://host/home/u ", "ssh://host/home/u"),
    (PC, "number_of_processes", 4, 4),
    (PC, "number_of_processes", "4", 4),
    (PC, "number_of_processes", 4.0, 4),
    (PC, "processes_per_node", 1, 1),
    (PC, "walltime", 30, 30),
    (PC, "walltime", 0.5, 0.5),
    (PC, "walltime", "90", 90),
    (PC, "walltime", "1.5", 1.5),
    (PC, "working_directory", "/scratch/u", "/scratch/u"),
    (PC, "queue", "debug", "debug"),
    (PC, "project", "TG-1", "TG-1"),
    (PC, "name", "blast pilot", "blast pilot"),
    (PC, "labels", {"gpu": "a100", "cores": 64}, {"gpu": "a100", "cores": "64"}),
    (PD, "service_url", "/scratch/pd1", "file:///scratch/pd1"),
    (PD, "service_url", "file:///scratch/pd1", "file:///scratch/pd1"),
    (PD, "service_url", "file://localhost/scratch/pd1", "file:///scratch/pd1"),
    (PD, "service_url", "file:/scratch/pd1", "file:///scratch/pd1"),
    (PD, "service_url", "ssh://host/tmp/pilotstore/", "ssh://host/tmp/pilotstore/"),
    (PD, "service_url", "sftp://u@host:2222/data", "sftp://u@host:2222/data"),
    (PD, "service_url", "s3://bucket/prefix", "s3://bucket/prefix"),
    (PD, "service_url", "s3://bucket", "s3://bucket"),
    (PD, "service_url", "irods://zone/home/u/coll", "irods://zone/home/u/coll"),
    (CU, "executable", "blastn", "blastn"),
    (CU, "arguments", ["-n", 3, 2.5], ("-n", "3", "2.5")),
    (CU, "arguments", ("a", "b c"), ("a", "b c")),
    (CU, "arguments", [], ()),
    (CU, "environment", {"A": "1", "B": 2}, {"A": "1", "B": "2"}),
    (CU, "environment", ["A=1", "B=x=y", "C="], {"A": "1", "B": "x=y", "C": ""}),
    (CU, "working_directory", "/tmp/cu", "/tmp/cu"),
    (CU, "number_of_processes", 8, 8),
    (CU, "spmd_variation", "MPI", "mpi"),
    (CU, "spmd_variation", "Single", "single"),
    (CU, "input_data", ["du-1"], (DataUnitRef("du-1"),)),
    (CU, "input_data", ["redis://host/du-xyz"], (DataUnitRef("du-xyz"),)),
    (CU, "input_data", ["redis://h:6379/bigdata:du-9/"], (DataUnitRef("du-9"),)),
    (CU, "input_data", [{"du-1": ["a.txt", "sub/b.txt"]}], (DataUnitRef("du-1", ("a.txt", "sub/b.txt")),)),
    (CU, "input_data", [{"du-1": ["a"], "du-2": ["b"]}],
     (DataUnitRef("du-1", ("a",)), DataUnitRef("du-2", ("b",)))),
    (CU, "output_data", [{"du-out": ["*.out", "./res/*"]}], (DataUnitRef("du-out", ("*.out", "./res/*")),)),
    (CU, "output", "blast.out", "blast.out"),
    (CU, "error", "logs/blast.err", "logs/blast.err"),
    (CU, "timeout", 3600, 3600),
    (CU, "max_retries", 0, 0),
    (CU, "max_retries", 3, 3),
    (DU, "file_urls", ["a.txt", "/abs/b.txt", "s3://bucket/c.txt", "ssh://u@h/d"],
     ("a.txt", "/abs/b.txt", "s3://bucket/c.txt", "ssh://u@h/d")),
    (DU, "file_urls", [], ()),
    (DU, "name", "blast-db", "blast-db"),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "key", "given", "expected"), GOOD)
def test_good_value(cls: type[Description], key: str, given: Any, expected: Any) -> None:
    desc = make(cls, **{key: given})
    value = getattr(desc, "size_bytes" if key == "size" else key)
    assert (dict(value) if isinstance(expected, dict) else value) == expected
    roundtrip(desc)


BAD: list[tuple[type[Description], str, Any, str, str]] = [
    # (kind, key, given, field named in the error, fragment of the message)
    (PC, "service_url", "localhost", "service_url", "a URL such as 'fork://localhost'"),
    (PC, "service_url", "fork://", "service_url", "a URL with a host"),
    (PC, "service_url", 42, "service_url", "got 42"),
    (PC, "service_url", "ssh://host:port", "service_url", "numeric port"),
    (PC, "number_of_processes", "four", "number_of_processes", "expected an integer >= 1, got 'four'"),
    (PC, "number_of_processes", 0, "number_of_processes", "expected an integer >= 1, got 0"),
    (PC, "number_of_processes", -2, "number_of_processes", "integer >= 1"),
    (PC, "number_of_processes", 2.5, "number_of_processes", "got 2.5"),
    (PC, "number_of_processes", True, "number_of_processes", "got True"),
    (PC, "processes_per_node", 0, "processes_per_node", "integer >= 1"),
    (PC, "walltime", 0, "walltime", "expected a number > 0, got 0"),
    (PC, "walltime", -5, "walltime", "number > 0"),
    (PC, "walltime", "an hour", "walltime", "got 'an hour'"),
    (PC, "walltime", float("nan"), "walltime", "number > 0"),
    (PC, "walltime", float("inf"), "walltime", "number > 0"),
    (PC, "walltime", False, "walltime", "number > 0"),
    (PC, "working_directory", "", "working_directory", "non-empty string"),
    (PC, "queue", 3, "queue", "non-empty string"),
    (PC, "project", "  ", "project", "non-empty string"),
    (PC, "name", ["x"], "name", "non-empty string"),
    (PC, "labels", "gpu", "labels", "a dict of strings"),
    (PC, "labels", {"": "x"}, "labels['']", "non-empty string key"),
    (PC, "labels", {"gpu": True}, "labels.gpu", "a string (or a number)"),
    (PC, "labels", {"gpu": None}, "labels.gpu", "a string (or a number)"),
    (PC, "affinity_datacenter_label", "", "affinity_datacenter_label", "non-empty string"),
    (PC, "affinity_machine_label", 7, "affinity_machine_label", "non-empty string"),
    (PD, "service_url", "relative/dir", "service_url", "absolute path"),
    (PD, "service_url", "", "service_url", "absolute path"),
    (PD, "service_url", "file://otherhost/x", "service_url", "local file URL"),
    (PD, "service_url", "file://relative", "service_url", "local file URL"),
    (PD, "service_url", "s3://", "service_url", "host or bucket"),
    (PD, "service_url", None, "service_url", "missing required key"),
    (PD, "size", 0, "size", "a size > 0"),
    (PD, "size", -1, "size", "a size > 0"),
    (PD, "size", "10 parsecs", "size", "'10GB' or '512MiB'"),
    (PD, "size", "GB", "size", "got 'GB'"),
    (PD, "size", 1.5, "size", "got 1.5"),
    (PD, "size", True, "size", "got True"),
    (PD, "storage_options", "anon=true", "storage_options", "expected a dict"),
    (CU, "executable", "", "executable", "non-empty string"),
    (CU, "executable", ["/bin/ls", "-l"], "executable", "non-empty string"),
    (CU, "arguments", "-la /tmp", "arguments", "use a list such as ['-la', '/tmp']"),
    (CU, "arguments", "'unbalanced", "arguments", "got a single string"),
    (CU, "arguments", ["a", True], "arguments[1]", "a string (or a number)"),
    (CU, "arguments", ["a", None], "arguments[1]", "a string (or a number)"),
    (CU, "arguments", {"a": 1}, "arguments", "a list of strings"),
    (CU, "environment", ["A=1", "B=2", "C"], "environment[2]", "expected a 'NAME=value' string, got 'C'"),
    (CU, "environment", ["=x"], "environment[0]", "'NAME=value'"),
    (CU, "environment", [3], "environment[0]", "'NAME=value'"),
    (CU, "environment", {"A": None}, "environment.A", "a string"),
    (CU, "environment", {"A=B": "1"}, "environment.A=B", "without '='"),
    (CU, "environment", "A=1", "environment", "a dict of strings"),
    (CU, "number_of_processes", "many", "number_of_processes", "integer >= 1"),
    (CU, "spmd_variation", "openmp", "spmd_variation", "'single' or 'mpi'"),
    (CU, "spmd_variation", 1, "spmd_variation", "'single' or 'mpi'"),
    (CU, "input_data", "du-1", "input_data", "a list of"),
    (CU, "input_data", ["du 1"], "input_data[0]", "a DataUnit id"),
    (CU, "input_data", [""], "input_data[0]", "a DataUnit id"),
    (CU, "input_data", ["redis://host/"], "input_data[0]", "a DataUnit id"),
    (CU, "input_data", [3], "input_data[0]", "got 3"),
    (CU, "input_data", [{}], "input_data[0]", "got {}"),
    (CU, "input_data", [{"du-1": []}], "input_data[0].du-1", "a non-empty list"),
    (CU, "input_data", [{"du-1": "a.txt"}], "input_data[0].du-1", "a non-empty list"),
    (CU, "input_data", ["x", {"du-1": ["ok", "/etc/passwd"]}], "input_data[1].du-1[1]", "'/etc/passwd'"),
    (CU, "input_data", [{"du-1": ["a/../../b"]}], "input_data[0].du-1[0]", "without '..'"),
    (CU, "input_data", ["du-1", {"du-1": ["a"]}], "input_data", "'du-1' is listed twice"),
    (CU, "output_data", ["du-1"], "output_data[0]", "{'du-id': ['file or glob', ...]}"),
    (CU, "output_data", [{"du-1": ["../up"]}], "output_data[0].du-1[0]", "got '../up'"),
    (CU, "output_data", [{"du-1": ["~/x"]}], "output_data[0].du-1[0]", "relative file name"),
    (CU, "output_data", [{"du-1": ["C:\\x"]}], "output_data[0].du-1[0]", "relative file name"),
    (CU, "output_data", [{"du-1": ["a\\..\\..\\b"]}], "output_data[0].du-1[0]", "without '..'"),
    (CU, "output", "../stdout", "output", "relative file name without '..'"),
    (CU, "output", "./", "output", "a file name, not a directory"),
    (CU, "output_data", [{"du-1": ["."]}], "output_data[0].du-1[0]", "a file name, not a directory"),
    (CU, "error", "/tmp/err", "error", "relative file name"),
    (CU, "error", "stdout", "error", "same file as output"),
    (CU, "timeout", 0, "timeout", "number > 0"),
    (CU, "max_retries", -1, "max_retries", "expected an integer >= 0, got -1"),
    (CU, "max_retries", "twice", "max_retries", "integer >= 0"),
    (DU, "file_urls", "a.txt", "file_urls", "got a single string 'a.txt'"),
    (DU, "file_urls", ["a.txt", ""], "file_urls[1]", "a file path or URL"),
    (DU, "file_urls", ["x/a.txt", "y/a.txt"], "file_urls[1]", "same file name 'a.txt' as file_urls[0]"),
    (DU, "file_urls", ["a", 5j], "file_urls[1]", "a string"),
    (DU, "file_urls", ["sftp://h:port/x"], "file_urls[0]", "numeric port"),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "key", "given", "field", "fragment"), BAD)
def test_bad_value(cls: type[Description], key: str, given: Any, field: str, fragment: str) -> None:
    err = error_of(cls, **{key: given})
    assert fragment in str(err)
    assert err.field == field
    assert str(err).startswith(f"{field}: ") or "missing required key" in str(err)


def test_bad_value_carries_the_value() -> None:
    err = error_of(CU, environment=["A=1", "B=2", "oops"])
    assert (err.field, err.value) == ("environment[2]", "oops")
    err = error_of(PC, number_of_processes="four")
    assert (err.field, err.value) == ("number_of_processes", "four")
    assert str(err) == "number_of_processes: expected an integer >= 1, got 'four'"
    err = error_of(CU, output_data=[{"du-1": ["ok", "../../etc"]}])
    assert (err.field, err.value) == ("output_data[0].du-1[1]", "../../etc")


def test_long_values_are_shortened_in_messages() -> None:
    err = error_of(PC, queue=["q"] * 1000)
    assert len(str(err)) < 200
    assert err.value == ["q"] * 1000


@pytest.mark.parametrize("cls", [PC, CU])
def test_processes_per_node_cannot_exceed_processes(cls: type[Description]) -> None:
    err = error_of(cls, number_of_processes=4, processes_per_node=8)
    assert err.field == "processes_per_node" and "exceeds number_of_processes (4)" in str(err)
    assert make(cls, number_of_processes=8, processes_per_node=4).processes_per_node == 4  # type: ignore[attr-defined]


# -- sizes ----------------------------------------------------------------------------------------


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


# -- secrets ---------------------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"


def test_storage_options_secrets_never_reach_to_dict() -> None:
    options = {
        "key": SECRET,
        "secret": SECRET,
        "token": SECRET,
        "password": SECRET,
        "passphrase": SECRET,
        "pkey": object(),  # secret names may hold non-JSON objects (a paramiko key)
        "AWS_SESSION_TOKEN": SECRET,
        "aws_profile_name": SECRET,
        "client_kwargs": {"endpoint_url": f"http://u:{SECRET}@127.0.0.1:9000",
                          "aws_secret_access_key": SECRET},
        "username": "alice",
        "anon": False,
        "retries": [1, 2],
    }  # fmt: skip
    pdd = PD.from_dict({"service_url": "s3://bucket/pd", "storage_options": options})
    assert pdd.storage_options["key"] == SECRET  # kept in memory for the store
    data = pdd.to_dict()
    assert SECRET not in json.dumps(data)
    assert data["storage_options"] == {
        "client_kwargs": {"endpoint_url": "http://u:***@127.0.0.1:9000"},
        "username": "alice",
        "anon": False,
        "retries": [1, 2],
    }
    assert SECRET not in repr(pdd) and SECRET not in str(pdd)
    public = PD.from_dict(data)
    assert public.to_dict() == data
    assert public != pdd  # the documented exception to the round trip


def test_storage_options_only_secrets_are_left_out_entirely() -> None:
    pdd = PD.from_dict({"service_url": "s3://bucket", "storage_options": {"key": SECRET, "secret": SECRET}})
    assert "storage_options" not in pdd.to_dict()


def test_storage_options_public_values_must_be_json() -> None:
    with pytest.raises(DescriptionError, match=r"storage_options\.callback: expected a JSON value") as info:
        PD.from_dict({"service_url": "s3://b", "storage_options": {"callback": print, "key": SECRET}})
    assert SECRET not in str(info.value) and info.value.field == "storage_options.callback"
    with pytest.raises(DescriptionError, match="option names must be strings"):
        PD.from_dict({"service_url": "s3://b", "storage_options": {1: "x"}})


@pytest.mark.parametrize(
    ("cls", "key", "url"),
    [
        (PC, "service_url", f"ssh://bob:{SECRET}@host:22"),
        (PD, "service_url", f"s3://AKIA:{SECRET}@bucket/prefix"),
        (PD, "service_url", f"sftp://bob:{SECRET}@host/data"),
        (DU, "file_urls", [f"sftp://bob:{SECRET}@host/a.txt"]),
    ],
)
def test_passwords_in_urls_are_rejected_without_echo(cls: type[Description], key: str, url: Any) -> None:
    err = error_of(cls, **{key: url})
    assert "passwords in URLs are not accepted" in str(err)
    assert SECRET not in str(err) and SECRET not in repr(err.value)
    assert ":***@" in str(err)


def test_secret_key_rule() -> None:
    assert all(d.is_secret_key(k) for k in ["key", "secret", "Password", "api_token", "aws_region", "pkey"])
    assert not any(d.is_secret_key(k) for k in ["endpoint_url", "anon", "username", "client_kwargs"])


def test_du_reference_urls_keep_only_the_id() -> None:
    cud = make(CU, input_data=["redis://:pw@127.0.0.1:6379/bigdata:du-7"])
    assert cud.to_dict()["input_data"] == ["du-7"]  # the URL (and its password) is not stored


# -- affinity and labels --------------------------------------------------------------------------


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


# -- objects: construction, immutability, coerce -----------------------------------------------


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


def test_bigjob_style_dict_subclass_is_accepted() -> None:
    class BigJobDescription(dict[str, Any]):
        """BigJob's descriptions were dict subclasses with attribute access."""

    legacy = BigJobDescription(BIGJOB_PILOT)
    assert PC.coerce(legacy) == PC.from_dict(BIGJOB_PILOT)


def test_public_api() -> None:
    assert set(d.__all__) == {
        "ComputeUnitDescription",
        "DataUnitDescription",
        "DataUnitRef",
        "Description",
        "PilotComputeDescription",
        "PilotDataDescription",
        "SECRET_MARKERS",
        "affinity_labels",
        "affinity_path",
        "format_size",
        "is_secret_key",
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
