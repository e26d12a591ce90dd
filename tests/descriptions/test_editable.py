"""BigJob's editable descriptions (filled by attribute or item), its other key names, unset values,
``file_transfer``, shell mode and credentials kept out of the stored form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pilotdata.descriptions import Description, FileTransfer
from pilotdata.descriptions import editable as e
from pilotdata.errors import DescriptionError
from tests.descriptions.helpers import CU, DU, PC, PD, error_of, make, roundtrip


def test_editable_description_is_filled_by_attribute_and_item_and_reads_like_a_dict() -> None:
    import pilotdata

    pcd = pilotdata.PilotComputeDescription()
    assert type(pcd) is e.PilotComputeDescription and pcd == {}
    pcd.service_url = "fork://localhost"
    pcd.number_of_processes = 4
    pcd["walltime"] = 10
    assert pcd.service_url == pcd["service_url"] == pcd.get("service_url") == "fork://localhost"
    assert "walltime" in pcd and pcd.walltime == 10 and "queue" not in pcd
    assert list(pcd) == ["service_url", "number_of_processes", "walltime"]
    assert dict(pcd) == {"service_url": "fork://localhost", "number_of_processes": 4, "walltime": 10}
    assert json.loads(json.dumps(pcd)) == dict(pcd) and {**pcd} == dict(pcd)
    assert not hasattr(pcd, "queue")
    with pytest.raises(AttributeError, match="'queue'"):
        _ = pcd.queue
    del pcd.walltime
    assert "walltime" not in pcd
    assert type(pcd.copy()) is e.PilotComputeDescription
    assert "service_url" in dir(pcd)
    typed = pcd.validate()
    assert isinstance(typed, PC) and typed.number_of_processes == 4
    assert PC.coerce(pcd) == typed


def test_editable_description_is_checked_when_used_with_a_did_you_mean() -> None:
    cud = e.ComputeUnitDescription()
    cud.executable = "/bin/date"
    cud.argumnets = ["x"]  # filled without complaint, like BigJob's dicts
    with pytest.raises(DescriptionError, match=r"unknown key 'argumnets'.*did you mean 'arguments'") as info:
        CU.coerce(cud)
    assert info.value.field == "argumnets"


def test_editable_description_repr_masks_secrets() -> None:
    pdd = e.PilotDataDescription(service_url="s3://bucket/pd", access_key_id="AKIDEXAMPLE",
                                 secret_access_key="wJalrXUtnFEMI-secret")
    shown = repr(pdd)
    assert "wJalrXUtnFEMI-secret" not in shown and "AKIDEXAMPLE" not in shown and "s3://bucket/pd" in shown


@pytest.mark.parametrize("key", ["queue", "project", "walltime", "working_directory", "processes_per_node",
                                 "affinity_machine_label", "spmd_variation", "name"])
def test_empty_string_leaves_an_optional_setting_unset(key: str) -> None:
    """BigJob's tutorials write ``pilot_description.queue = QUEUE`` with ``QUEUE = ""`` when unused."""
    pcd = make(PC, **{key: ""}, affinity_datacenter_label="dc")
    assert pcd == make(PC, affinity_datacenter_label="dc")


def test_empty_string_is_still_missing_for_a_required_key() -> None:
    err = error_of(CU, executable="")
    assert err.field == "executable" and "non-empty string" in str(err)


@pytest.mark.parametrize(
    ("cls", "bigjob", "ours"),
    [
        (PC, {"allocation": "TG-MCB090174"}, {"project": "TG-MCB090174"}),
        (PC, {"wall_time_limit": 30}, {"walltime": 30}),
        (PC, {"processes_per_host": 2, "number_of_processes": 4}, {"processes_per_node": 2, "number_of_processes": 4}),
        (PC, {"total_core_count": 8}, {"number_of_processes": 8}),
        (CU, {"total_cpu_count": 2}, {"number_of_processes": 2}),
        (CU, {"wall_time_limit": 10}, {"timeout": 600}),
        (CU, {"wall_time_limit": 0.5}, {"timeout": 30.0}),
    ],
)
def test_bigjob_names_are_read_as_ours(cls: type[Description], bigjob: dict[str, Any], ours: dict[str, Any]) -> None:
    assert make(cls, **bigjob) == make(cls, **ours)


def test_bigjob_name_and_ours_must_agree() -> None:
    err = error_of(PC, allocation="a", project="b")
    assert err.field == "allocation" and "contradicts project='b'" in str(err) and "account" in str(err)
    assert make(PC, allocation="a", project="a").project == "a"
    err = error_of(CU, wall_time_limit="ten")
    assert err.field == "wall_time_limit" and "number > 0" in str(err)


@pytest.mark.parametrize("key", ["vm_id", "vm_ssh_username", "vm_ssh_keyname", "vm_ssh_keyfile", "vm_type",
                                 "vm_location", "region", "access_key_id", "secret_access_key"])
def test_cloud_pilot_keys_say_why_they_are_not_supported(key: str) -> None:
    err = error_of(PC, **{key: "secret-value-1234"})
    assert err.field == key and str(err).startswith(f"{key}: applies to BigJob's cloud VM pilots")
    assert "ssh://user@host" in str(err) and "secret-value-1234" not in str(err)


def test_condor_and_stdin_keys_say_why_they_are_not_supported() -> None:
    assert "Condor" in str(error_of(PC, candidate_hosts=["node1"]))
    err = error_of(CU, input="data.in")
    assert err.field == "input" and "stdin" in str(err)


def test_pilot_accepts_bigjob_only_settings() -> None:
    pcd = make(PC, number_executor_threads=16, spmd_variation="MPI", output="agent.out", error="agent.err")
    assert (pcd.number_executor_threads, pcd.spmd_variation) == (16, "mpi")
    assert pcd.to_dict()["output"] == "agent.out"
    roundtrip(pcd)
    err = error_of(PC, spmd_variation="12way")
    assert err.field == "spmd_variation"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("ssh://host/data/test.txt > BIGJOB_WORK_DIR", FileTransfer("ssh://host/data/test.txt", "test.txt")),
        ("ssh:///home/u/test.txt > BIGJOB_WORK_DIR/", FileTransfer("ssh:///home/u/test.txt", "test.txt")),
        ("s3://bucket/in/x.dat>data/y.dat", FileTransfer("s3://bucket/in/x.dat", "data/y.dat")),
        ("/abs/path/db.fa", FileTransfer("/abs/path/db.fa", "db.fa")),
        ("file:///abs/path/db.fa > inputs/", FileTransfer("file:///abs/path/db.fa", "inputs/db.fa")),
        ("sftp://u@h:2222/x/a.b > .", FileTransfer("sftp://u@h:2222/x/a.b", "a.b")),
    ],
)
def test_file_transfer_entries(entry: str, expected: FileTransfer) -> None:
    for desc in (make(CU, file_transfer=[entry]), make(PC, file_transfer=[entry])):
        assert desc.file_transfer == (expected,)
        assert desc.to_dict()["file_transfer"] == [f"{expected.source} > {expected.target}"]
        roundtrip(desc)


@pytest.mark.parametrize(
    ("value", "field", "fragment"),
    [
        (["out.txt < out.txt"], "file_transfer[0]", "copies a file back out"),
        (["ssh://h/a >> a"], "file_transfer[0]", "appends"),
        (["relative/a.txt"], "file_transfer[0]", "an absolute path"),
        (["ssh://h/a > ../escape"], "file_transfer[0]", "without '..'"),
        (["ssh://h/a > /etc/passwd"], "file_transfer[0]", "relative file name"),
        (["ssh://h/dir/ > x"], "file_transfer[0]", "naming a file"),
        (["ssh://u:pw@h/a"], "file_transfer[0]", "passwords in URLs are not accepted"),
        (["/x/a", "ssh://h/y/a"], "file_transfer[1]", "also the target of file_transfer[0]"),
        ("ssh://h/a > a", "file_transfer", "use ['ssh://h/a > a']"),
        ([3], "file_transfer[0]", "'SOURCE > TARGET'"),
    ],
)
def test_bad_file_transfer(value: Any, field: str, fragment: str) -> None:
    err = error_of(CU, file_transfer=value)
    assert err.field == field and fragment in str(err), str(err)
    assert "pw" not in str(err).replace("passwords", "")


def test_shell_is_a_strict_boolean() -> None:
    assert make(CU, shell=True).shell is True
    assert make(CU).shell is False
    for bad in ("true", 1, "yes"):
        err = error_of(CU, shell=bad)
        assert err.field == "shell" and "true or false" in str(err)


def test_s3_credentials_become_secret_storage_options_never_written() -> None:
    pdd = make(PD, service_url="s3://bucket/pd", access_key_id="AKIDEXAMPLE",
               secret_access_key="wJalrXUtnFEMI-secret", region="eu-central-1")
    assert dict(pdd.storage_options) == {"key": "AKIDEXAMPLE", "secret": "wJalrXUtnFEMI-secret",
                                         "client_kwargs": {"region_name": "eu-central-1"}}
    text = json.dumps(pdd.to_dict()) + repr(pdd)
    assert "wJalrXUtnFEMI-secret" not in text and "AKIDEXAMPLE" not in text
    assert pdd.to_dict()["storage_options"] == {"client_kwargs": {"region_name": "eu-central-1"}}
    # BigJob's walrus example leaves them empty: unset
    assert make(PD, service_url="s3://bucket/pd", access_key_id="", secret_access_key="").storage_options == {}


def test_s3_credentials_on_another_store_or_twice_are_errors_without_the_value() -> None:
    err = error_of(PD, service_url="ssh://host/pd", access_key_id="AKIDEXAMPLE")
    assert err.field == "access_key_id" and "only for s3://" in str(err) and "AKIDEXAMPLE" not in str(err)
    err = error_of(PD, service_url="s3://b/pd", secret_access_key="s1", storage_options={"secret": "s2"})
    assert err.field == "secret_access_key" and "s1" not in str(err) and "s2" not in str(err)
    err = error_of(PD, service_url="s3://b/pd", secret_access_key=1234)
    assert err.field == "secret_access_key" and "1234" not in str(err)


def test_userkey_is_kept_in_memory_only_and_only_for_ssh() -> None:
    pdd = make(PD, service_url="ssh://host/pd", userkey="/home/u/.ssh/pd_key")
    assert pdd.userkey == "/home/u/.ssh/pd_key"
    assert "pd_key" not in json.dumps(pdd.to_dict()) and "pd_key" not in repr(pdd)
    err = error_of(PD, service_url="s3://b/pd", userkey="/k")
    assert err.field == "userkey" and "only for ssh://" in str(err)


def test_number_of_replicas() -> None:
    assert make(DU, number_of_replicas=2).number_of_replicas == 2
    roundtrip(make(DU, number_of_replicas=3))
    assert error_of(DU, number_of_replicas=0).field == "number_of_replicas"
