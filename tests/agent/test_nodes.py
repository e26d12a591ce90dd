"""Node awareness without a cluster: what each batch system's variables say, where CUs go, the node processes.

The allocation is read from the variables each batch system sets (values as SLURM, the PBS family,
Grid Engine and LSF write them); placement on the nodes is pure; the node process (``python -m
agent.nodeexec``) runs for real as a subprocess, reached through its pipe as the agent reaches it
through ``srun`` on a cluster, with its peer server on loopback.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from agent.allocation import cache_dir
from agent.cores import NodeSlots, Placement
from agent.executors import LocalExecutor, NodeLost, RemoteExecutor, choose_launcher, node_command
from agent.launch import mpi_prefix
from agent.main import too_long_for
from agent.nodecache import NodeCaches, StoreSource
from agent.nodes import (
    Allocation,
    AllocationError,
    Node,
    discover,
    expand_counts,
    expand_hostlist,
    from_lsf,
    from_nodefile,
    from_pe_hostfile,
)
from agent.peers import CacheServer, PeerFileSystem
from agent.task import Task
from pilotdata.descriptions import ComputeUnitDescription
from pilotdata.services.pilot_compute import agent_walltime, walltime_from_environment
from tests.agent.harness import REPO
from tests.servers import wait_until as servers_wait_until


# ------------------------------------------------------------------------------- discovery
def test_slurm_host_lists_and_counts_expand_as_slurm_writes_them() -> None:
    assert expand_hostlist("node[1-3,7]") == ["node1", "node2", "node3", "node7"]
    assert expand_hostlist("gpu[08-10],login") == ["gpu08", "gpu09", "gpu10", "login"]
    assert expand_hostlist("r[1-2]n[1-2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]
    assert expand_counts("16(x2),8") == [16, 16, 8]
    with pytest.raises(ValueError):
        expand_hostlist("node[3-1]")
    with pytest.raises(ValueError):
        expand_hostlist("node[1-2")


def test_each_batch_system_names_its_nodes_and_cores(tmp_path: Path) -> None:
    slurm = discover({"SLURM_JOB_NODELIST": "node[1-2]", "SLURM_JOB_CPUS_PER_NODE": "2(x2)"}, "node1", 1)
    assert (slurm.nodes, slurm.source, slurm.local_node("node1.cluster")) == (
        (Node("node1", 2), Node("node2", 2)), "slurm", "node1")
    nodefile = tmp_path / "nodes"
    nodefile.write_text("c01\nc01\nc01\nc02\nc02\nc02\n")  # PBS: one line per core
    pbs = discover({"PBS_NODEFILE": str(nodefile)}, "c01", 1)
    assert (pbs.nodes, pbs.source) == ((Node("c01", 3), Node("c02", 3)), "pbs")
    hostfile = tmp_path / "pe_hostfile"
    hostfile.write_text("sgehost1 4 all.q@sgehost1 UNDEFINED\nsgehost2 2 all.q@sgehost2 UNDEFINED\n")
    sge = discover({"PE_HOSTFILE": str(hostfile)}, "sgehost1", 1)
    assert (sge.nodes, sge.source) == ((Node("sgehost1", 4), Node("sgehost2", 2)), "sge")
    lsf = discover({"LSB_MCPU_HOSTS": "hostA 4 hostB 2"}, "hostA", 1)
    assert (lsf.nodes, lsf.source) == ((Node("hostA", 4), Node("hostB", 2)), "lsf")
    assert from_lsf(None, "hostA hostA hostB").nodes == (Node("hostA", 2), Node("hostB", 1))
    local = discover({}, "laptop.example.org", 8)
    assert (local.nodes, local.source) == ((Node("laptop", 8),), "local")


def test_slurm_wins_under_the_pbs_wrappers_and_bad_variables_name_themselves(tmp_path: Path) -> None:
    # slurm-wlm-torque's qsub sets only SLURM_* (no PBS_NODEFILE): SLURM's variables are read
    env = {"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_JOB_CPUS_PER_NODE": "4,2", "PBS_NODEFILE": "/nonexistent"}
    assert discover(env, "n1", 1).nodes == (Node("n1", 4), Node("n2", 2))
    with pytest.raises(AllocationError, match=r"SLURM_JOB_NODELIST names 2 node.* gives 1"):
        discover({"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_JOB_CPUS_PER_NODE": "4"}, "n1", 1)
    with pytest.raises(AllocationError, match=r"PBS_NODEFILE=.*cannot read"):
        discover({"PBS_NODEFILE": str(tmp_path / "missing")}, "n1", 1)
    with pytest.raises(AllocationError, match="PE_HOSTFILE"):
        from_pe_hostfile("host notanumber q\n")
    with pytest.raises(AllocationError, match="LSB_MCPU_HOSTS"):
        from_lsf("hostA 4 hostB", None)
    assert from_nodefile("# comment\nx\n").nodes == (Node("x", 1),)


def test_the_pilot_uses_what_it_asked_for_of_the_allocation() -> None:
    whole = Allocation((Node("a", 16), Node("b", 16), Node("c", 16)), "slurm")
    assert whole.limited(32, 16).nodes == (Node("a", 16), Node("b", 16))
    assert whole.limited(6, 2).nodes == (Node("a", 2), Node("b", 2), Node("c", 2))
    assert whole.limited(None, None).total_cores == 48


# ------------------------------------------------------------------------------- placement
def test_single_process_cus_spread_over_nodes_and_never_span_one() -> None:
    slots = NodeSlots([Node("n1", 2), Node("n2", 2)])
    first = slots.place(1)
    second = slots.place(1)
    assert first is not None and second is not None and {first.node, second.node} == {"n1", "n2"}
    assert slots.place(2) is None  # two free cores, but on two nodes: a non-MPI CU waits
    assert slots.unfit(3, mpi=False, pilot="p") == (
        "needs 3 cores on one node (number_of_processes; only MPI CUs span nodes) but the largest node of pilot p "
        "has 2"
    )
    mpi = slots.place(2, mpi=True)
    assert mpi is not None and mpi.spans and sorted(mpi.nodes) == ["n1", "n2"] and mpi.cores == 2
    assert slots.free == 0
    for p in (first, second, mpi):
        slots.release(p)
    assert slots.free == 4
    assert slots.unfit(5, mpi=True, pilot="p") == "needs 5 slots (number_of_processes) but pilot p has 4"


def test_placement_prefers_nodes_holding_the_inputs_and_drops_a_lost_node() -> None:
    slots = NodeSlots([Node("n1", 4), Node("n2", 2)])
    assert slots.place(1, prefer={"n2"}) == Placement((("n2", 1),))
    held = slots.place(1, prefer={"n2"})
    assert held == Placement((("n2", 1),))
    assert slots.remove("n2") and slots.total == 4 and slots.nodes == ["n1"]
    slots.release(held)  # a lost node's cores do not come back
    assert slots.free == 4
    woke = threading.Event()

    def wait() -> None:
        slots.wait_for_room(5, True, 10)
        woke.set()

    t = threading.Thread(target=wait)
    t.start()
    slots.remove("n1")  # removing a node wakes the main loop, which then hands back what no longer fits
    t.join(5)
    assert woke.is_set() and slots.unfit(1, mpi=False) is not None


def test_mpi_launchers_get_the_host_list() -> None:
    env = {"PATH": os.environ.get("PATH", "")}
    argv = mpi_prefix(4, "mpirun", env, hosts=[("node1", 2), ("node2", 2)])
    assert argv[-4:] == ["-host", "node1:2,node2:2", "-np", "4"]
    assert node_command("srun", "node2", 8, "/py")[:8] == ["srun", "--overlap", "-N1", "-n1", "-c8", "-w", "node2",
                                                           "--kill-on-bad-exit=0"]
    assert node_command("qrsh", "h2", 1, "/py") == ["qrsh", "-inherit", "h2", "/py", "-m", "agent.nodeexec"]
    assert (choose_launcher("auto", "slurm"), choose_launcher("auto", "sge"), choose_launcher("auto", "lsf"),
            choose_launcher("auto", "pbs"), choose_launcher("off", "slurm"), choose_launcher("auto", "local")) == (
        "srun", "qrsh", "blaunch", "ssh", None, None)


def test_node_cache_defaults_to_local_scratch_on_several_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    scratch = cache_dir(None, pilot="p1", node="n2", workdir=tmp_path, several=True)
    assert scratch == tmp_path / "scratch/pilot-data-p1/n2"
    assert cache_dir(None, pilot="p1", node="n2", workdir=tmp_path, several=False) == tmp_path / ".cache"
    assert cache_dir("/local/{pilot}-{node}", pilot="p1", node="n2", workdir=tmp_path, several=True) == Path(
        "/local/p1-n2")


# ------------------------------------------------------------------------------- walltime
def test_walltime_defaults_margin_and_cus_too_long_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PDATA_DEFAULT_WALLTIME", raising=False)
    assert walltime_from_environment() == 60.0
    monkeypatch.setenv("PDATA_DEFAULT_WALLTIME", "none")
    assert walltime_from_environment() is None
    monkeypatch.setenv("PDATA_DEFAULT_WALLTIME", "90")
    assert walltime_from_environment() == 90.0
    monkeypatch.setenv("PDATA_DEFAULT_WALLTIME", "soon")
    with pytest.raises(Exception, match="PDATA_DEFAULT_WALLTIME"):
        walltime_from_environment()
    assert agent_walltime(60) == 57.0  # 5 %
    assert agent_walltime(10) == 9.0  # at least a minute
    assert agent_walltime(2) == 1.5  # never more than a quarter
    assert agent_walltime(600) == 590.0  # at most ten minutes
    task = Task("cu", 0, ComputeUnitDescription.from_dict({"executable": "x", "timeout": 120}))
    assert too_long_for(task, 60.0) and not too_long_for(task, 600.0) and not too_long_for(task, None)
    untimed = Task("cu", 0, ComputeUnitDescription.from_dict({"executable": "x"}))
    assert not too_long_for(untimed, 1.0)


# ------------------------------------------------------------------------------- peers and node processes
def _du(tmp_path: Path, size: int) -> tuple[Any, str, list[dict[str, Any]]]:
    """A file:// store holding DU ``du1`` (one file of ``size`` bytes) and its manifest."""
    from pilotdata.stores import open_store

    root = tmp_path / "store"
    data = os.urandom(size)
    (root / "du1").mkdir(parents=True)
    (root / "du1" / "db.bin").write_bytes(data)
    entries = [{"path": "db.bin", "size": size, "sha256": hashlib.sha256(data).hexdigest()}]
    return open_store(f"file://{root}"), "du1", entries


def test_peer_server_serves_only_complete_entries_to_the_token(tmp_path: Path) -> None:
    import transfer

    store, du, entries = _du(tmp_path, 300_000)
    cache = transfer.PilotCache(tmp_path / "cache")
    cache.ensure("k1", store.fs, store.path(du), [transfer.FileEntry.from_dict(e) for e in entries])
    server = CacheServer(cache, "s3cret", "127.0.0.1")
    try:
        peer = PeerFileSystem(server.url, "s3cret")
        assert peer.info("k1/db.bin")["size"] == 300_000
        with pytest.raises(FileNotFoundError):
            peer.info("k1/../../etc/passwd")
        with pytest.raises(FileNotFoundError):
            peer.info("nokey/db.bin")
        with pytest.raises(OSError, match="403"):
            PeerFileSystem(server.url, "wrong").info("k1/db.bin")
        other = transfer.PilotCache(tmp_path / "other")
        other.ensure("k1", peer, "k1", [transfer.FileEntry.from_dict(e) for e in entries])  # verified sha256
        assert (other.path("k1") / "db.bin").read_bytes() == (tmp_path / "store/du1/db.bin").read_bytes()
    finally:
        server.close()


def _node_process(tmp_path: Path, name: str, lost: list[str]) -> RemoteExecutor:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return RemoteExecutor("localhost", [sys.executable, "-m", "agent.nodeexec"], tmp_path / f"cache-{name}", "tok",
                          lambda node, why: lost.append(why), env=env, log_file=tmp_path / f"{name}.log")


def test_a_node_process_fetches_from_the_store_once_then_peers_copy_it(tmp_path: Path) -> None:
    store, du, entries = _du(tmp_path, 2_000_000)
    events: list[dict[str, Any]] = []
    lost: list[str] = []
    head = LocalExecutor("localhost", tmp_path / "cache-head", "tok", serve=True, opener=lambda pd, data: store)
    remote = _node_process(tmp_path, "n2", lost)
    try:
        caches = NodeCaches("p1", {"n1": head, "n2": remote}, lambda du_id, d: events.append(dict(d)))
        head.node, remote.node = "n1", "n2"
        source = [StoreSource("pd1", store.record(), store.url)]
        caches.ensure(du, "k1", entries, "n1", source)
        caches.ensure(du, "k1", entries, "n2", source)
        caches.ensure(du, "k1", entries, "n2", source)  # held: nothing moves
        assert [(e["origin"], e["node"], e["bytes"]) for e in events] == [("store", "n1", 2_000_000),
                                                                        ("peer", "n2", 2_000_000)]
        assert events[1]["peer"] == "n1" and events[1]["destination"] == "pilot-cache:p1"
        assert caches.held() == {"n1": ["du1"], "n2": ["du1"]}
        sandbox = tmp_path / "box"
        sandbox.mkdir()
        remote.link("k1", sandbox, None)
        assert (sandbox / "db.bin").stat().st_size == 2_000_000
        assert not lost
    finally:
        remote.close()
        head.close()


class _FlakyStore:
    """A store whose first read of a file breaks after its first chunk (a dropped connection)."""

    scheme = "flaky"

    def __init__(self, root: Path) -> None:
        from fsspec.implementations.local import LocalFileSystem

        opened: list[str] = []

        class Flaky(LocalFileSystem):  # type: ignore[misc]  # fsspec is untyped
            def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
                f = super()._open(path, mode, **kwargs)
                if "r" in mode and path not in opened:
                    opened.append(path)
                    real = f.read

                    def read(n: int = -1) -> bytes:
                        if f.tell() > 0:
                            raise ConnectionResetError(104, "connection reset by peer")
                        return real(n)  # type: ignore[no-any-return]

                    f.read = read
                return f

        self.fs, self.root, self.url, self.opened = Flaky(), str(root), f"flaky://{root}", opened

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def record(self) -> dict[str, Any]:
        return {}


def test_a_retried_fetch_records_the_bytes_that_moved_again(tmp_path: Path) -> None:
    _, du, entries = _du(tmp_path, 3_000_000)
    store = _FlakyStore(tmp_path / "store")
    events: list[dict[str, Any]] = []
    head = LocalExecutor("n1", tmp_path / "cache-head", "tok", serve=False, opener=lambda pd, data: store)
    try:
        caches = NodeCaches("p1", {"n1": head}, lambda du_id, d: events.append(dict(d)))
        caches.ensure(du, "k1", entries, "n1", [StoreSource("pd1", {}, store.url)])
        assert store.opened == [f"{tmp_path}/store/du1/db.bin"]  # the first read broke, once
        (event,) = events
        assert event["origin"] == "store" and event["bytes"] == 3_000_000
        assert event["retries"] == 1 and 0 < event["reread_bytes"] <= 3_000_000
        assert (head.service.cache.path("k1") / "db.bin").read_bytes() == (tmp_path / "store/du1/db.bin").read_bytes()
        caches.ensure(du, "k1", entries, "n1", [StoreSource("pd1", {}, store.url)])  # held: no record
        assert len(events) == 1
    finally:
        head.close()


def test_a_node_process_runs_kills_and_reports_and_its_death_is_a_lost_node(tmp_path: Path) -> None:
    lost: list[str] = []
    remote = _node_process(tmp_path, "n2", lost)
    box = tmp_path / "box"
    box.mkdir()
    orphans: list[int] = []
    try:
        quick = remote.spawn("cu1", ["/bin/sh", "-c", "echo $MARK"], box, {}, {"MARK": "ran"}, box / "o1", box / "e1")
        assert quick.wait(10) == 0 and (box / "o1").read_text() == "ran\n"
        assert "PDATA_URL" not in (box / "o1").read_text()
        slow = remote.spawn("cu2", ["/bin/sleep", "60"], box, {}, {}, box / "o2", box / "e2")
        assert slow.wait(0.2) is None
        assert slow.kill_group(0.5) == -signal.SIGTERM
        hung = remote.spawn("cu3", ["/bin/sleep", "60"], box, {}, {}, box / "o3", box / "e3")
        orphans.append(int(hung.pgid or 0))
        os.kill(remote._proc.pid, signal.SIGKILL)  # the node dies (its CU would too; here we kill it below)
        with pytest.raises(NodeLost):
            hung.wait(10)  # returns at once when the pipe breaks
        servers_wait_until(lambda: lost, 5, "the node's loss to be reported")  # reported just after its CUs are woken
        assert "ended" in lost[0]
        with pytest.raises(NodeLost):
            remote.spawn("cu4", ["/bin/true"], box, {}, {}, box / "o4", box / "e4")
    finally:
        remote.close()
        for pgid in orphans:
            if pgid > 0:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_a_cu_too_long_for_the_walltime_left_goes_back_untouched(tmp_path: Path) -> None:
    from pilotdata.coordination import connect
    from pilotdata.states import Kind
    from tests.agent.harness import AgentProcess, submit, wait_final
    from tests.servers import wait_until

    url, ns = f"sqlite:///{tmp_path / 'c.sqlite'}", "w1"
    coord = connect(url, ns)
    coord.create(Kind.PILOT, "pilot-short", {})
    coord.transition(Kind.PILOT, "pilot-short", "Pending")
    submit(coord, "long", {"executable": "/bin/true", "timeout": 600}, pilot="pilot-short")
    submit(coord, "short", {"executable": "/bin/true", "timeout": 5}, pilot="pilot-short")
    agent = AgentProcess(url, ns, "pilot-short", tmp_path / "work", "--slots", "1", "--walltime", "1")
    try:
        assert wait_final(coord, "short", 30, agent) == "Done"
        wait_until(lambda: "handed back 1 CU(s) whose timeout exceeds the walltime left" in agent.log, 20,
                   "the long CU to be handed back")
        record = coord.get(Kind.CU, "long")
        assert (record.state, record.attempt) == ("Pending", 0)  # untouched: another pilot takes it
        # it comes back to this pilot while it is the only one: claimed and returned less and less often
        handed = "handed back 1 CU(s) whose timeout exceeds the walltime left"
        lines = wait_until(lambda: (found := [ln for ln in agent.log.splitlines() if handed in ln])[3:] and found,
                           30, "four hand-backs")
        times = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() for line in lines[:4]]
        gaps = [b - a for a, b in pairwise(times)]
        # the first claim held the short CU too (no pause after it), then pauses of 1 and 2 s (up to 8)
        assert gaps[1] >= 0.9 and gaps[2] >= 1.9, gaps
        assert coord.get(Kind.CU, "long").attempt == 0
        assert agent.terminate(30) == 0
        assert "long" in coord.queued(None)  # on the shared queue, not this pilot's
    finally:
        agent.stop()
        coord.close()
