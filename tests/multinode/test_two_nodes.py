"""A pilot of two nodes on a real two-node SLURM (a slurmd per network namespace): node-aware execution.

The pilot is made the way users make it (``PilotComputeService`` with ``slurm://localhost``, 4 processes,
2 per node); its agent runs as the batch job on ``node1`` and starts one node process on ``node2``
(``srun --overlap -w node2``). What the tests look at is where things happened: the host name each CU
printed, the node recorded for it, the transfer records of a shared input (bytes from the store once,
then node to node), an MPI CU's ranks on both nodes, and, when node2's processes are killed, that only
its CUs go back to the queue while node1 keeps running its own. Coordination is an SQLite file on the
file system both nodes share.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pilotdata.data import ReplicaManager
from pilotdata.descriptions import DataUnitDescription
from pilotdata.services.compute_unit import ComputeUnit
from pilotdata.services.pilot_compute import PilotCompute, PilotComputeService
from pilotdata.services.pilot_data import PilotDataService
from pilotdata.session import Session
from pilotdata.states import Kind, State
from tests.agent.harness import all_events, cu_events, sh
from tests.servers import require_binary, wait_until
from tests.slurm2_harness import Slurm2Cluster

WAIT = 90.0
DB_BYTES = 3_000_000


@dataclass
class TwoNodePilot:
    """A running pilot over both nodes, with its session and service."""

    session: Session
    service: PilotComputeService
    pilot: PilotCompute
    directory: Path

    def submit(self, description: dict[str, object]) -> ComputeUnit:
        return self.pilot.submit_compute_unit(description)

    def finish(self, cus: list[ComputeUnit]) -> list[str]:
        """Wait for every CU to end; their final states."""
        return [cu.wait(timeout=WAIT) for cu in cus]

    def stdout(self, cu: ComputeUnit) -> str:
        return (Path(self.session.coord.get(Kind.CU, cu.id).data["sandbox"]) / "stdout").read_text()


def _start(cluster: Slurm2Cluster, directory: Path) -> TwoNodePilot:
    session = Session(f"sqlite:///{directory / 'coord.sqlite'}", namespace="n" + uuid.uuid4().hex[:8])
    service = PilotComputeService(session=session, launcher_options={"env": cluster.env()})
    pilot = service.create_pilot({
        "service_url": "slurm://localhost", "number_of_processes": 4, "processes_per_node": 2, "walltime": 10,
        "working_directory": str(directory / "work"),
    })
    assert pilot.wait(state=State.Running, timeout=WAIT) == "Running", pilot.get_details()
    return TwoNodePilot(session, service, pilot, directory)


def _stop(tp: TwoNodePilot, cluster: Slurm2Cluster) -> None:
    job = (tp.pilot.get_details()["launcher"] or {}).get("job_id")
    tp.pilot.cancel()
    if job:
        wait_until(lambda: job not in cluster.run("squeue", "-h", "-o", "%i").stdout.split(), 60, f"job {job} to end")
    tp.session.close()


def _kill_node_processes(cluster: Slurm2Cluster, node: str, pilot: str) -> list[int]:
    """SIGKILL this pilot's processes on ``node`` (its node process and its CUs): the node is gone for it."""
    ns = cluster.subnet.namespaces[node]
    pids = [int(p) for p in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                           check=False).stdout.split()]
    killed = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"agent.nodeexec" in cmdline or f"PDATA_PILOT_ID={pilot}".encode() in environ:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


def test_killing_one_nodes_processes_requeues_only_its_cus(slurm2_cluster: Slurm2Cluster, tmp_path: Path) -> None:
    tp = _start(slurm2_cluster, tmp_path)
    coord = tp.session.coord
    try:
        cus = [tp.submit(sh("sleep 5; hostname")) for _ in range(4)]
        wait_until(lambda: all(coord.get(Kind.CU, cu.id).state == "Running" for cu in cus), WAIT, "4 CUs to run")
        where = {cu.id: coord.get(Kind.CU, cu.id).data["node"] for cu in cus}
        assert sorted(where.values()) == ["node1", "node1", "node2", "node2"]
        assert _kill_node_processes(slurm2_cluster, "node2", tp.pilot.id)
        assert tp.finish(cus) == ["Done"] * 4  # node1 ran the requeued ones after its own
        for cu in cus:
            record = coord.get(Kind.CU, cu.id)
            moves = [(e.from_state, e.to_state) for e in cu_events(coord, cu.id)]
            if where[cu.id] == "node1":  # untouched: one run, never requeued
                assert record.attempt == 0 and ("Running", "Pending") not in moves
            else:
                assert record.attempt == 1 and ("Running", "Pending") in moves
                events = cu_events(coord, cu.id)
                requeue = next(e for e in events if (e.from_state, e.to_state) == ("Running", "Pending"))
                assert "node node2 lost" in requeue.detail["reason"]
                assert record.data["node"] == "node1" and tp.stdout(cu).strip() == "node1"
        pilot = coord.get(Kind.PILOT, tp.pilot.id)
        assert pilot.state == "Running"  # the rest of the pilot goes on
        assert list(pilot.data["lost_nodes"]) == ["node2"] and pilot.data["nodes"] == {"node1": 2}
        again = tp.submit(sh("hostname"))
        assert tp.finish([again]) == ["Done"] and tp.stdout(again).strip() == "node1"
    finally:
        _stop(tp, slurm2_cluster)


@pytest.fixture(scope="module")
def two_nodes(slurm2_cluster: Slurm2Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodePilot]:
    """One two-node pilot for the tests that do not break it (made after the node-loss test has ended:
    the two nodes' four cores hold one pilot at a time)."""
    tp = _start(slurm2_cluster, tmp_path_factory.mktemp("twonode"))
    try:
        yield tp
    finally:
        _stop(tp, slurm2_cluster)


def test_the_pilot_learns_both_nodes_and_runs_cus_on_each(two_nodes: TwoNodePilot) -> None:
    details = two_nodes.session.coord.get(Kind.PILOT, two_nodes.pilot.id).data
    assert (details["nodes"], details["node_launch"], details["slots"]) == ({"node1": 2, "node2": 2}, "srun", 4)
    cus = [two_nodes.submit(sh("hostname; sleep 1")) for _ in range(8)]
    assert two_nodes.finish(cus) == ["Done"] * 8
    ran_on = [two_nodes.stdout(cu).strip() for cu in cus]
    assert sorted(set(ran_on)) == ["node1", "node2"]
    recorded = [two_nodes.session.coord.get(Kind.CU, cu.id).data["node"] for cu in cus]
    assert recorded == ran_on  # the record names the node the process really ran on
    assert all(ran_on.count(n) >= 2 for n in ("node1", "node2"))


def test_a_shared_input_crosses_from_the_store_once_then_node_to_node(two_nodes: TwoNodePilot) -> None:
    session, directory = two_nodes.session, two_nodes.directory
    pd = PilotDataService(session=session).create_pilot({"service_url": f"file://{directory / 'store'}"}).get_url()
    src = directory / "src"
    src.mkdir()
    blob = os.urandom(DB_BYTES)
    (src / "db.bin").write_bytes(blob)
    units = ReplicaManager(session.coord)
    du = units.register(DataUnitDescription.from_dict({"file_urls": [str(src / "db.bin")]}), du_id="du-db")
    units.upload(du, pd)
    cus = [two_nodes.submit(sh("hostname; sha256sum db.bin; sleep 1", input_data=[du])) for _ in range(6)]
    assert two_nodes.finish(cus) == ["Done"] * 6
    outputs = [two_nodes.stdout(cu).split() for cu in cus]
    assert {o[0] for o in outputs} == {"node1", "node2"}
    assert {o[1] for o in outputs} == {hashlib.sha256(blob).hexdigest()}  # every node read the right bytes
    transfers = [e.detail for e in all_events(session.coord) if e.entity == "transfer" and e.id == du
                 and e.detail.get("destination") == f"pilot-cache:{two_nodes.pilot.id}"]
    from_store = sum(t["bytes"] for t in transfers if t["origin"] == "store")
    from_peers = sum(t["bytes"] for t in transfers if t["origin"] == "peer")
    assert from_store == DB_BYTES  # once per pilot across the "wide-area" link
    assert from_peers == DB_BYTES  # and once inside the allocation, to the other node
    assert {t["node"] for t in transfers} == {"node1", "node2"}
    caches = session.coord.get(Kind.PILOT, two_nodes.pilot.id).data["node_caches"]
    assert caches == {"node1": [du], "node2": [du]}


def test_an_mpi_cu_spans_both_nodes(two_nodes: TwoNodePilot) -> None:
    mpicc = require_binary("mpicc", "libopenmpi-dev")
    directory = two_nodes.directory
    source = directory / "where.c"
    source.write_text(
        "#include <mpi.h>\n#include <stdio.h>\n"
        "int main(int argc, char **argv) { int rank, size, n; char name[256]; MPI_Init(&argc, &argv);\n"
        "  MPI_Comm_rank(MPI_COMM_WORLD, &rank); MPI_Comm_size(MPI_COMM_WORLD, &size);\n"
        "  MPI_Get_processor_name(name, &n); printf(\"rank %d of %d on %s\\n\", rank, size, name);\n"
        "  MPI_Finalize(); return 0; }\n"
    )
    subprocess.run([mpicc, "-o", str(directory / "where"), str(source)], check=True, timeout=120)
    cu = two_nodes.submit({"executable": str(directory / "where"), "number_of_processes": 4,
                           "spmd_variation": "mpi"})
    assert two_nodes.finish([cu]) == ["Done"], two_nodes.session.coord.get(Kind.CU, cu.id).data
    ranks = sorted(two_nodes.stdout(cu).splitlines())
    assert [r.split(" on ")[0] for r in ranks] == [f"rank {i} of 4" for i in range(4)]
    assert sorted(r.split(" on ")[1] for r in ranks) == ["node1", "node1", "node2", "node2"]
    assert two_nodes.session.coord.get(Kind.CU, cu.id).data["nodes"] == {"node1": 2, "node2": 2}


