"""DataUnit replicas (upload, replicate, move, export, verify, remove) through the Pilot-API and
:class:`pilotdata.data.ReplicaManager`, against real stores: local, sshd (SFTP) and moto_server (S3)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import boto3
import pytest

from pilotdata import ComputeDataService, PilotComputeService, PilotDataService, State
from pilotdata.data import ReplicaManager, default_checksum
from pilotdata.descriptions import DataUnitDescription
from pilotdata.errors import DescriptionError, NotFoundError, StoreError
from pilotdata.session import Session
from pilotdata.states import Kind
from tests import servers
from transfer.digests import new_hash


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


def _digest(path: Path, algorithm: str) -> str:
    hasher = new_hash(algorithm)
    hasher.update(path.read_bytes())
    return hasher.hexdigest()


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
    algorithm = default_checksum()  # blake3 where installed, else sha256
    assert listing["refs/db.fa"]["algorithm"] == algorithm
    assert listing["refs/db.fa"][algorithm] == _digest(inputs / "refs" / "db.fa", algorithm)
    du.add_replica(sftp)                  # local -> sftp
    du.remove_replica(local)
    du.add_replica(s3)                    # sftp -> s3, streamed store to store
    assert set(du.list_pilot_data()) == {sftp.id, s3.id}
    assert du.verify() == {sftp.id: [], s3.id: []}
    written = du.export(str(tmp_path / "out"), pd_id=s3.id)
    assert len(written) == 3
    for rel in listing:
        assert _digest(tmp_path / "out" / rel, algorithm) == listing[rel][algorithm]
    # no secret reached coordination
    pd_ids = sqlite_session.coord.list_ids(Kind.PD)
    records = [r for r in sqlite_session.coord.get_many(Kind.PD, pd_ids) if r is not None]
    assert len(records) == len(pd_ids) == 3
    blob = repr([r.data for r in records])
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
    algorithm = default_checksum()
    assert {k: v[algorithm] for k, v in second.list().items()} == {k: v[algorithm] for k, v in first.list().items()}



def _sources(session: Session, du: str) -> dict[str, tuple[str, str]]:
    """``{destination PD: (source PD, byte category)}`` of the DU's replications, from its transfer records."""
    from tests.agent.harness import all_events

    return {e.detail["destination_pd"]: (e.detail["source_pd"], e.detail["category"])
            for e in all_events(session.coord) if e.entity == "transfer" and e.id == du and "source_pd" in e.detail}


def test_replication_reads_the_nearest_replica_not_the_first_by_name(
    sqlite_session: Session, inputs: Path, tmp_path: Path, s3_env: str
) -> None:
    """An S3 replica (first by name) and a local one: a copy to a local store links the local one, and
    ``get`` reads it; with datacenter labels the tree distance decides first, as for the agent."""
    pds = PilotDataService(session=sqlite_session)
    pds.create_pilot({"service_url": f"s3://{s3_env}/pd"}, pd_id="a-s3")
    pds.create_pilot({"service_url": str(tmp_path / "local")}, pd_id="b-local")
    pds.create_pilot({"service_url": str(tmp_path / "dest")}, pd_id="c-dest")
    ops = ReplicaManager(sqlite_session.coord)
    du = ops.register(DataUnitDescription(file_urls=(str(inputs / "refs"),)))
    ops.upload(du, "a-s3")
    ops.replicate(du, "b-local")
    assert ops.best_source(du) == "b-local"  # read on this host: the local file system first
    ops.replicate(du, "c-dest")  # same file system as b-local: a hard link, no byte moved
    assert _sources(sqlite_session, du)["c-dest"] == ("b-local", "linked")
    ops.export(du, str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == ["db.fa", "note.txt"]
    assert ops.best_source(du, near="a-s3") == "a-s3"  # an explicit choice still wins

    # labels: the S3 replica is in the destination's datacenter, the local ones far away
    pds.create_pilot({"service_url": f"s3://{s3_env}/near", "affinity_datacenter_label": "eu"}, pd_id="d-s3-eu")
    pds.create_pilot({"service_url": str(tmp_path / "eu-disk"), "affinity_datacenter_label": "eu"}, pd_id="e-eu")
    far = ops.register(DataUnitDescription(file_urls=(str(inputs / "query.fa"),)))
    ops.upload(far, "b-local")
    ops.replicate(far, "c-dest")
    ops.replicate(far, "d-s3-eu")
    assert ops.best_source(far, dst=ops.store("e-eu")) == "d-s3-eu"
    ops.replicate(far, "e-eu")
    assert _sources(sqlite_session, far)["e-eu"] == ("d-s3-eu", "replicated")

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
    du.remove()
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
        ReplicaManager(sqlite_session.coord).record("du-nope")


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
            "arguments": ["-c", "ls -R > listing.txt; wc -c < refs/db.fa > size.out"], "shell": False,
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


def _other_file_system(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the temp dir")
    return Path(tempfile.mkdtemp(prefix="pd-test-", dir=shm))


def test_a_replica_on_another_file_system_is_a_copy_that_outlives_its_source(
    sqlite_session: Session, inputs: Path, tmp_path: Path
) -> None:
    """'pdata mv' across file systems used to leave a symlink to the replica it then deleted: the
    DataUnit's only replica was gone. A replica is a hard link on one file system, a copy otherwise."""
    other = _other_file_system(tmp_path)
    try:
        pds = PilotDataService(session=sqlite_session)
        pds.create_pilot({"service_url": str(tmp_path / "disk")}, pd_id="disk")
        pds.create_pilot({"service_url": str(other / "shm")}, pd_id="shm")
        pds.create_pilot({"service_url": str(tmp_path / "disk2")}, pd_id="disk2")
        ops = ReplicaManager(sqlite_session.coord)
        du = ops.register(DataUnitDescription(file_urls=(str(inputs / "refs"),)))
        ops.upload(du, "disk")
        ops.replicate(du, "disk2")  # same file system: a hard link, read-only
        linked = tmp_path / "disk2" / du / "refs" / "db.fa"
        assert not linked.is_symlink() and linked.stat().st_nlink == 2
        ops.move(du, "shm")  # to the other file system, then the two sources are removed
        moved = other / "shm" / du / "refs" / "db.fa"
        assert not moved.is_symlink() and moved.read_bytes() == (inputs / "refs" / "db.fa").read_bytes()
        assert ops.verify(du) == {"shm": []}
        assert not (tmp_path / "disk" / du).exists() and not (tmp_path / "disk2" / du).exists()
    finally:
        shutil.rmtree(other, ignore_errors=True)
