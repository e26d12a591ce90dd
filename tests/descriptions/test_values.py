"""Field values: what each field accepts and normalises to, and the error that names a bad one."""

from __future__ import annotations

import contextlib
import json
from dataclasses import MISSING
from typing import Any

import pytest

from pilotdata.descriptions import DataUnitRef, Description, _models
from pilotdata.errors import DescriptionError
from tests.descriptions.helpers import CU, DU, PC, PD, error_of, make, roundtrip

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
    (PC, "working_directory", " ", "working_directory", "non-empty string"),
    (PC, "queue", 3, "queue", "non-empty string"),
    (PC, "project", "  ", "project", "non-empty string"),
    (PC, "name", ["x"], "name", "non-empty string"),
    (PC, "labels", "gpu", "labels", "a dict of strings"),
    (PC, "labels", {"": "x"}, "labels['']", "non-empty string key"),
    (PC, "labels", {"gpu": True}, "labels.gpu", "a string (or a number)"),
    (PC, "labels", {"gpu": None}, "labels.gpu", "a string (or a number)"),
    (PC, "affinity_datacenter_label", "\t", "affinity_datacenter_label", "non-empty string"),
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


REQUIRED: dict[type[Description], dict[str, Any]] = {
    CU: {"executable": "/bin/true"}, DU: {}, PC: {"service_url": "fork://localhost"},
    PD: {"service_url": "file:///tmp/pd"},
}


@pytest.mark.parametrize("kind", [CU, DU, PC, PD])
def test_defaulted_fields_hold_their_checked_defaults_without_a_check_per_instance(kind: type[Description]) -> None:
    """A defaulted field normalises as if checked (``{}`` becomes a read-only mapping), an explicit value
    equal to the default gives the same, and only fields given a value other than the default are checked
    per instance (a bulk submission validates thousands of descriptions), also when the defaults are read
    back from JSON as new objects (an agent reads every CU's record)."""
    required = REQUIRED[kind]
    first = kind.from_dict(dict(required))
    specs = _models._specs(kind)
    explicit = dict(required)
    for spec in specs:
        if spec.default is not MISSING and spec.default is not None:
            assert getattr(first, spec.name) is spec.checked_default  # shared: it is immutable
            explicit[spec.key] = type(spec.default)(spec.default)  # an equal value, given explicitly
    assert kind.from_dict(explicit) == first
    for mapping in ("labels", "environment"):
        if hasattr(first, mapping):
            with pytest.raises(TypeError):
                getattr(first, mapping)["k"] = "v"
    checked: list[str] = []

    def counting(real: Any) -> Any:
        def check(key: str, value: Any) -> Any:
            checked.append(key)
            return real(key, value)
        return check

    stored = json.loads(json.dumps(first.to_dict()))  # as a record holds it: every default spelled out
    for spec in specs:  # the specs are frozen: swapped in place, and the class's caches dropped after
        object.__setattr__(spec, "check", counting(spec.check))
    try:
        assert kind.from_dict(dict(required)) == first
        assert sorted(checked) == sorted(required)
        checked.clear()
        assert kind.from_dict(stored) == first  # its defaults are new objects, equal to the defaults
        assert sorted(checked) == sorted(required)
        for key in [k for k, v in stored.items() if k not in required and isinstance(v, (str, list))]:
            checked.clear()
            value = stored[key] + "x" if isinstance(stored[key], str) else [*stored[key], "x"]
            with contextlib.suppress(DescriptionError):
                kind.from_dict({**stored, key: value})
            assert key in checked  # a value other than the default is checked
    finally:
        for cache in (_models._SPECS, _models._BY_KEY, _models._DUMP_ORDER):
            cache.pop(kind, None)
