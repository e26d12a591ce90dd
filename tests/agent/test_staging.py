"""Input staging through the pilot cache and output staging into DataUnits, on a real agent process.

PilotData stores and DataUnits are made with the real services (``PilotDataService``,
:class:`pilotdata.data.ReplicaManager`); the agent reads their records from coordination, fetches
each input DU once into ``<workdir>/.cache`` and links it into the sandboxes, and uploads outputs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pilotdata.data import ReplicaManager
from pilotdata.descriptions import DataUnitDescription
from pilotdata.records import du_entries
from pilotdata.services.pilot_data import PilotDataService
from pilotdata.session import Session
from pilotdata.states import Kind
from tests import servers
from tests.agent.conftest import Backend, SharedAgent
from tests.agent.harness import AgentProcess, all_events, sh, submit, wait_final


@dataclass
class Data:
    """A session on the shared agent's namespace, a file:// PilotData and the DataUnit operations."""

    session: Session
    pd: str
    pd_root: Path
    units: ReplicaManager

    def input_du(self, directory: Path, files: dict[str, str]) -> str:
        """Upload ``files`` (name -> text) as a new DataUnit on the PD; return its id."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (directory / name).write_text(text)
        desc = DataUnitDescription.from_dict({"file_urls": [str(directory / n) for n in files]})
        du = self.units.register(desc, du_id=f"du-{uuid.uuid4().hex[:8]}")
        self.units.upload(du, self.pd)
        return du

    def output_du(self) -> str:
        """An empty DataUnit open for output on the PD."""
        du = self.units.register(DataUnitDescription.from_dict({}), du_id=f"out-{uuid.uuid4().hex[:8]}")
        self.units.open_empty(du, self.pd)
        return du


@pytest.fixture
def data(shared_agent: SharedAgent, tmp_path: Path) -> Iterator[Data]:
    """A fresh file:// PilotData in the shared agent's namespace."""
    session = Session(shared_agent.backend.url, namespace=shared_agent.backend.namespace)
    root = tmp_path / "pd"
    pd = PilotDataService(session=session).create_pilot({"service_url": f"file://{root}"}).get_url()
    yield Data(session, pd, root, ReplicaManager(session.coord))
    session.close()


def _fetches(shared_agent: SharedAgent, du: str) -> int:
    return sum(
        1
        for e in all_events(shared_agent.coord)
        if e.entity == "transfer" and e.id == du and e.detail.get("destination") == f"pilot-cache:{shared_agent.pilot}"
    )


def test_input_du_is_fetched_once_and_linked_into_each_sandbox(
    shared_agent: SharedAgent, data: Data, tmp_path: Path
) -> None:
    coord = shared_agent.coord
    du = data.input_du(tmp_path / "src", {"db.txt": "ACGT" * 1000, "query.txt": "ACGTACGT\n"})
    whole, subset = f"whole-{du}", f"subset-{du}"
    submit(coord, whole, sh("cat query.txt; wc -c < db.txt", input_data=[du]))
    submit(coord, subset, sh("ls", input_data=[{du: ["query.txt"]}]))
    assert wait_final(coord, whole, agent=shared_agent.agent) == "Done", coord.get(Kind.CU, whole).data
    assert wait_final(coord, subset, agent=shared_agent.agent) == "Done", coord.get(Kind.CU, subset).data
    whole_box = Path(coord.get(Kind.CU, whole).data["sandbox"])
    assert (whole_box / "stdout").read_text().split() == ["ACGTACGT", "4000"]
    subset_box = Path(coord.get(Kind.CU, subset).data["sandbox"])
    assert (subset_box / "stdout").read_text().split() == ["query.txt", "stderr", "stdout"]
    assert du in coord.get(Kind.PILOT, shared_agent.pilot).data["cached_dus"]
    assert _fetches(shared_agent, du) == 1  # two CUs, one fetch per pilot
    assert (shared_agent.workdir / ".cache").is_dir()


def test_outputs_are_uploaded_into_the_du_and_added_to_its_manifest(
    shared_agent: SharedAgent, data: Data
) -> None:
    coord = shared_agent.coord
    out = data.output_du()
    cus = [f"writer{i}-{out}" for i in range(3)]
    for i, cu in enumerate(cus):
        script = f"mkdir -p res; echo result {i} > res/r{i}.txt; echo scratch > tmp{i}.log"
        submit(coord, cu, sh(script, output_data=[{out: ["res/*.txt"]}]))
    for cu in cus:
        assert wait_final(coord, cu, agent=shared_agent.agent) == "Done", coord.get(Kind.CU, cu).data
    manifest = {e.path: e for e in du_entries(coord.get(Kind.DU, out))}
    assert sorted(manifest) == ["res/r0.txt", "res/r1.txt", "res/r2.txt"]
    for i in range(3):
        stored = data.pd_root / out / "res" / f"r{i}.txt"
        assert stored.read_text() == f"result {i}\n"
        assert manifest[f"res/r{i}.txt"].size == stored.stat().st_size
    assert data.units.verify(out) == {data.pd: []}


def test_missing_input_du_fails_the_cu(shared_agent: SharedAgent) -> None:
    coord, cu = shared_agent.coord, f"noinput-{uuid.uuid4().hex[:8]}"
    submit(coord, cu, {"executable": "/bin/true", "input_data": ["du-does-not-exist"]})
    assert wait_final(coord, cu, agent=shared_agent.agent) == "Failed"
    record = coord.get(Kind.CU, cu)
    assert record.data["reason"] == "input staging failed: input DataUnit 'du-does-not-exist' does not exist"
    assert [e.to_state for e in all_events(coord) if e.id == cu][-2:] == ["StagingInput", "Failed"]


def test_failed_input_du_fails_the_cu_with_its_reason(shared_agent: SharedAgent, data: Data) -> None:
    coord = shared_agent.coord
    du = data.units.register(DataUnitDescription.from_dict({}), du_id=f"dead-{uuid.uuid4().hex[:8]}")
    coord.transition(Kind.DU, du, "Failed", detail={"reason": "upload exploded"})
    cu = f"deadinput-{du}"
    submit(coord, cu, {"executable": "/bin/true", "input_data": [du]})
    assert wait_final(coord, cu, agent=shared_agent.agent) == "Failed"
    reason = coord.get(Kind.CU, cu).data["reason"]
    assert reason == f"input staging failed: input DataUnit {du} is Failed with no complete replica (upload exploded)"


def test_truncated_local_replica_fails_the_cu_instead_of_running_on_bad_data(
    shared_agent: SharedAgent, data: Data, tmp_path: Path
) -> None:
    coord = shared_agent.coord
    du = data.input_du(tmp_path / "src", {"db.txt": "GOOD" * 100})
    replica = data.pd_root / du / "db.txt"
    replica.unlink()  # (the upload may have hard-linked the source: replace, do not write through)
    replica.write_text("GOOD" * 50)
    cu = f"corrupt-{du}"
    submit(coord, cu, sh("cat db.txt", input_data=[du]))
    assert wait_final(coord, cu, agent=shared_agent.agent) == "Failed"
    reason = coord.get(Kind.CU, cu).data["reason"]
    assert reason.startswith(f"input staging failed: input DataUnit {du}: every replica failed: from {data.pd}:")
    assert "size" in reason
    assert du not in coord.get(Kind.PILOT, shared_agent.pilot).data["cached_dus"]
    assert [e.to_state for e in all_events(coord) if e.id == cu][-2:] == ["StagingInput", "Failed"]


def test_output_pattern_matching_nothing_fails_the_cu(shared_agent: SharedAgent, data: Data) -> None:
    coord = shared_agent.coord
    out = data.output_du()
    cu = f"nooutput-{out}"
    submit(coord, cu, sh("echo hi > real.txt", output_data=[{out: ["*.dat"]}]))
    assert wait_final(coord, cu, agent=shared_agent.agent) == "Failed"
    record = coord.get(Kind.CU, cu)
    sandbox = record.data["sandbox"]
    assert record.data["reason"] == (
        f"output staging failed: output pattern '*.dat' matches no file in the sandbox {sandbox!r}"
    )
    assert record.data["exit_code"] == 0
    assert [e.to_state for e in all_events(coord) if e.id == cu][-2:] == ["StagingOutput", "Failed"]
    assert du_entries(coord.get(Kind.DU, out)) == []


def test_input_du_on_s3_is_streamed_verified_and_a_corrupt_object_fails_the_cu(
    backend: Backend, moto_server: servers.MotoServer, tmp_path: Path
) -> None:
    import boto3

    bucket = "pd-" + uuid.uuid4().hex[:12]
    s3 = boto3.client(
        "s3", endpoint_url=moto_server.endpoint_url, aws_access_key_id="testing",
        aws_secret_access_key="testing", region_name="us-east-1",
    )
    s3.create_bucket(Bucket=bucket)
    session = Session(backend.url, namespace=backend.namespace)
    pd = PilotDataService(session=session).create_pilot(
        {"service_url": f"s3://{bucket}/pd", "storage_options": moto_server.storage_options()}
    ).get_url()
    units = ReplicaManager(session.coord)
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.txt").write_text("GOOD" * 100)
    (src / "bad.txt").write_text("GOOD" * 100)
    good = units.register(DataUnitDescription.from_dict({"file_urls": [str(src / "good.txt")]}), du_id="du-good")
    bad = units.register(DataUnitDescription.from_dict({"file_urls": [str(src / "bad.txt")]}), du_id="du-bad")
    units.upload(good, pd)
    units.upload(bad, pd)
    s3.put_object(Bucket=bucket, Key=f"pd/{bad}/bad.txt", Body=b"EVIL" * 100)  # same size
    coord = backend.coord
    coord.create(Kind.PILOT, "p-s3", {})
    submit(coord, "reads-good", sh("cat good.txt", input_data=[good]))
    submit(coord, "reads-bad", sh("cat bad.txt", input_data=[bad]))
    # the agent finds credentials where a resource would: in its environment, never in coordination
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
             "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    agent = AgentProcess(backend.url, backend.namespace, "p-s3", tmp_path / "work", env=creds)
    try:
        assert wait_final(coord, "reads-good", agent=agent) == "Done", coord.get(Kind.CU, "reads-good").data
        assert wait_final(coord, "reads-bad", agent=agent) == "Failed"
        assert agent.terminate(30) == 0, agent.log
    finally:
        agent.stop()
        session.close()
    assert (tmp_path / "work" / "reads-good" / "stdout").read_text() == "GOOD" * 100
    assert not (tmp_path / "work" / "reads-bad" / "stdout").exists()  # never ran on bad data
    reason = coord.get(Kind.CU, "reads-bad").data["reason"]
    assert reason.startswith(f"input staging failed: input DataUnit {bad}: every replica failed: from {pd}:")
    assert "the manifest says" in reason  # a checksum mismatch (in the DU's algorithm; the middle is cut)
    assert coord.get(Kind.PILOT, "p-s3").data["cached_dus"] == [good]
    assert "testing" not in repr(coord.get(Kind.PD, pd))
