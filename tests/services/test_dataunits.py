"""DataUnit lifecycle through the Pilot-API against real stores: local, sshd (SFTP) and moto_server (S3)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from pilotdata import ComputeDataService, PilotComputeService, PilotDataService, State
from pilotdata.dataunits import DataUnits
from pilotdata.errors import DescriptionError, NotFoundError, StoreError
from pilotdata.session import Session
from pilotdata.states import Kind
from tests import servers


@pytest.fixture
def s3_env(moto_server: servers.MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """S3 credentials and endpoint in the environment (never in coordination); returns a fresh bucket."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    bucket = f"pd-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=moto_server.endpoint_url, aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    src = tmp_path / "inputs"
    (src / "refs" / "deep").mkdir(parents=True)
    (src / "query.fa").write_text(">q1\nACGTACGT\n")
    (src / "refs" / "db.fa").write_bytes(os.urandom(300_000))
    (src / "refs" / "deep" / "note.txt").write_text("nested\n")
    return src


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cds(session: Session) -> tuple[ComputeDataService, PilotDataService]:
    pds = PilotDataService(session=session)
    cds = ComputeDataService(session=session)
    cds.add_pilot_data_service(pds)
    return cds, pds


def test_round_trip_across_file_sftp_and_s3(sqlite_session: Session, inputs: Path, tmp_path: Path,
                                            sshd_server: servers.SshServer, s3_env: str) -> None:
    cds, pds = _cds(sqlite_session)
    local = pds.create_pilot({"service_url": str(tmp_path / "pd-local"), "affinity_datacenter_label": "a"})
    sftp = pds.create_pilot({"service_url": f"ssh://127.0.0.1{tmp_path / 'pd-sftp'}",
                             "storage_options": sshd_server.storage_options()})
    s3 = pds.create_pilot({"service_url": f"s3://{s3_env}/pd"})
    du = cds.submit_data_unit({"file_urls": [str(inputs / "query.fa"), str(inputs / "refs")], "name": "db"},
                              pilot_data=local)
    assert du.wait(timeout=60) == State.Running
    listing = du.list()
    assert sorted(listing) == ["query.fa", "refs/db.fa", "refs/deep/note.txt"]
    assert listing["refs/db.fa"]["sha256"] == _sha(inputs / "refs" / "db.fa")
    du.add_replica(sftp)                  # local -> sftp
    du.remove_replica(local)
    du.add_replica(s3)                    # sftp -> s3, streamed store to store
    assert set(du.list_pilot_data()) == {sftp.id, s3.id}
    assert du.verify() == {sftp.id: [], s3.id: []}
    written = du.export(str(tmp_path / "out"), pd_id=s3.id)
    assert len(written) == 3
    for rel in listing:
        assert _sha(tmp_path / "out" / rel) == listing[rel]["sha256"]
    # no secret reached coordination
    blob = repr([r.data for r in sqlite_session.coord.get_many(Kind.PD, sqlite_session.coord.list_ids(Kind.PD))])
    assert "testing" not in blob and "secret" not in blob


def test_du_from_store_urls_and_export_to_url(sqlite_session: Session, inputs: Path, tmp_path: Path,
                                              s3_env: str) -> None:
    cds, pds = _cds(sqlite_session)
    local = pds.create_pilot({"service_url": str(tmp_path / "pd-local")})
    first = cds.submit_data_unit({"file_urls": [str(inputs / "refs")]}, pilot_data=local, background=False)
    first.export(f"s3://{s3_env}/staged")
    second = cds.submit_data_unit({"file_urls": [f"s3://{s3_env}/staged/refs"]}, pilot_data=local)
    assert second.wait(timeout=60) == State.Running
    assert second.list().keys() == first.list().keys()
    assert {k: v["sha256"] for k, v in second.list().items()} == {k: v["sha256"] for k, v in first.list().items()}


def test_move_remove_and_refusals(sqlite_session: Session, inputs: Path, tmp_path: Path) -> None:
    cds, pds = _cds(sqlite_session)
    a = pds.create_pilot({"service_url": str(tmp_path / "a")})
    b = pds.create_pilot({"service_url": str(tmp_path / "b")})
    du = cds.submit_data_unit({"file_urls": [str(inputs / "query.fa")]}, pilot_data=a, background=False)
    with pytest.raises(StoreError, match="last replica"):
        du.remove_replica(a)
    du.move(b)
    assert du.list_pilot_data() == [b.id]
    assert not (tmp_path / "a" / du.id).exists()
    assert (tmp_path / "b" / du.id / "query.fa").read_text() == ">q1\nACGTACGT\n"
    with pytest.raises(NotFoundError, match=r"nope\.txt"):
        du.export(str(tmp_path / "x"), files=["nope.txt"])
    du.cancel()
    assert du.get_state() == State.Canceled
    assert not (tmp_path / "b" / du.id).exists()


def test_corrupted_replica_is_caught_by_verify(sqlite_session: Session, inputs: Path, tmp_path: Path) -> None:
    cds, pds = _cds(sqlite_session)
    pd = pds.create_pilot({"service_url": str(tmp_path / "pd")})
    du = cds.submit_data_unit({"file_urls": [str(inputs / "refs")]}, pilot_data=pd, background=False)
    victim = tmp_path / "pd" / du.id / "refs" / "db.fa"
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0xFF
    victim.write_bytes(bytes(data))
    problems = du.verify()[pd.id]
    assert len(problems) == 1 and "refs/db.fa" in problems[0]


def test_quota_failure_fails_the_du_and_wait_returns(sqlite_session: Session, inputs: Path, tmp_path: Path) -> None:
    cds, pds = _cds(sqlite_session)
    small = pds.create_pilot({"service_url": str(tmp_path / "small"), "size": "100KB"})
    du = cds.submit_data_unit({"file_urls": [str(inputs / "refs")]}, pilot_data=small)
    assert du.wait(timeout=30) == State.Failed
    reason = du.get_details()["reason"] or ""
    assert "quota" in reason and small.id in reason
    assert not any((tmp_path / "small").rglob("*.fa"))  # nothing uploaded before the check


def test_bad_input_records_nothing(sqlite_session: Session, tmp_path: Path) -> None:
    cds, pds = _cds(sqlite_session)
    pds.create_pilot({"service_url": str(tmp_path / "pd")})
    with pytest.raises(DescriptionError, match=r"missing\.fa"):
        cds.submit_data_unit({"file_urls": [str(tmp_path / "missing.fa")]})
    with pytest.raises(DescriptionError, match="file_url"):
        cds.submit_data_unit({"file_url": ["x"]})
    assert sqlite_session.coord.list_ids(Kind.DU) == []
    with pytest.raises(NotFoundError, match="du-nope"):
        DataUnits(sqlite_session).record("du-nope")


def test_compute_reads_input_subset_and_writes_outputs_via_sftp(
        sqlite_session: Session, inputs: Path, tmp_path: Path, sshd_server: servers.SshServer) -> None:
    """Co-placement: pilot and PD share labels; the CU reads a subset of a DU and writes an output DU."""
    cds, pds = _cds(sqlite_session)
    pd = pds.create_pilot({"service_url": f"ssh://127.0.0.1{tmp_path / 'pd-sftp'}",
                           "storage_options": sshd_server.storage_options(), "affinity_datacenter_label": "a"})
    pcs = PilotComputeService(session=sqlite_session)
    cds.add_pilot_compute_service(pcs)
    try:
        pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2,
                          "working_directory": str(tmp_path / "pilot"), "affinity_datacenter_label": "a"})
        du = cds.submit_data_unit({"file_urls": [str(inputs / "query.fa"), str(inputs / "refs")]}, pilot_data=pd)
        out = cds.submit_data_unit({"file_urls": []}, pilot_data=pd)
        cu = cds.submit_compute_unit({
            "executable": "/bin/sh",
            "arguments": ["-c", "ls -R > listing.txt; wc -c < refs/db.fa > size.out"],
            "input_data": [{du.id: ["refs/db.fa"]}],
            "output_data": [{out.id: ["*.out", "listing.txt"]}],
            "affinity_datacenter_label": "a",
        })
        assert cu.wait(timeout=90) == State.Done, cu.get_details()["reason"]
        files: dict[str, Any] = out.list()
        assert sorted(files) == ["listing.txt", "size.out"]
        out.export(str(tmp_path / "result"))
        assert (tmp_path / "result" / "size.out").read_text().strip() == "300000"
        listing = (tmp_path / "result" / "listing.txt").read_text()
        assert "db.fa" in listing and "query.fa" not in listing  # only the named subset was linked
    finally:
        pcs.cancel()
