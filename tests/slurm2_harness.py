"""A real two-node SLURM cluster for the tests: slurmctld on a bridge, one slurmd per network namespace.

Recipe: ``../shared/TESTING.md`` ("Two-node SLURM on one machine"). A bridge on a private
``10.233.N.0/24`` (:mod:`tests.netns_harness`) holds the controller's address ``.1`` (host ``ctl``);
``node1`` (``.11``) and ``node2`` (``.12``) are network namespaces, each running a slurmd, each with
2 CPUs (both share this machine's cores: fine for function, not for timing). One munged serves
all (its socket is a file). slurmctld runs with hostname ``ctl`` and the cluster's hosts file in a
private mount namespace, because with ``NoCtldInAddrAny`` it binds the address its hostname
resolves to. ``sbatch``, ``squeue``, ``scontrol`` and ``scancel`` work from the root namespace
(they connect to the address in ``SlurmctldHost``); ``srun``/``salloc`` there would hang (the
nodes cannot call back to 127.0.0.1). Jobs reach root-namespace services at :attr:`gateway`.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.netns_harness import Subnet, machine_names, make_subnet
from tests.servers import free_port, log_tail, require_binary, wait_until
from tests.slurm_harness import SlurmClient, _start_munge, _stop_pidfile, shared_settings

NODES = ("node1", "node2")
CPUS_PER_NODE = 2
START_TIMEOUT = 30.0


@dataclass
class Slurm2Cluster(SlurmClient):
    """A running two-node cluster: nodes ``node1`` and ``node2`` with 2 CPUs each, partition ``debug``."""

    directory: Path
    conf: Path
    subnet: Subnet
    ctld_port: int
    startup_seconds: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    nodes = NODES
    cpus_per_node = CPUS_PER_NODE

    @property
    def gateway(self) -> str:
        """The controller's address; services jobs must reach listen here."""
        return self.subnet.gateway

    def node_states(self) -> dict[str, str]:
        """``{node: state}`` as ``sinfo`` prints them (``idle``, ``mixed``, ``down*``...)."""
        out = self.run("sinfo", "-h", "-N", "-o", "%N %T").stdout
        return dict(line.split(None, 1) for line in out.splitlines() if len(line.split()) == 2)

    def stop(self) -> None:
        """Stop the slurmds (with everything in the node namespaces), slurmctld and munged (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self.subnet.remove()
        for name in ("slurmctld.pid", "munge/munged.pid"):
            _stop_pidfile(self.directory / name)


def _config(d: Path, subnet: Subnet, ctld_port: int, slurmd_port: int) -> str:
    nodes = "".join(
        f"NodeName={node} NodeAddr={subnet.addresses[node]} NodeHostname={node} CPUs={CPUS_PER_NODE} Boards=1 "
        f"SocketsPerBoard=1 CoresPerSocket={CPUS_PER_NODE} ThreadsPerCore=1 RealMemory=2000 State=UNKNOWN\n"
        for node in NODES
    )
    return f"""ClusterName=pdtest2
SlurmctldHost=ctl({subnet.gateway})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
{shared_settings(d, per_node=True)}TmpFS={d}/tmp/%n
{nodes}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def start_slurm2(directory: Path) -> Slurm2Cluster:
    """Start munged, slurmctld and a slurmd per node namespace in ``directory``; return once both nodes are idle.

    Raises ``AssertionError`` with the daemons' log tails if the nodes are not idle within
    :data:`START_TIMEOUT` seconds (after tearing down what was started).
    """
    began = time.monotonic()
    slurmctld = require_binary("slurmctld", "slurm-wlm")
    slurmd = require_binary("slurmd", "slurm-wlm")
    d = directory.resolve()
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    for sub in ("state", *(f"spool/{n}" for n in NODES), *(f"tmp/{n}" for n in NODES)):
        (d / sub).mkdir(parents=True, exist_ok=True)
    subnet = make_subnet(d / "net")
    ctld_port, slurmd_port = free_port(), free_port()
    conf = d / "slurm.conf"
    cluster = Slurm2Cluster(d, conf, subnet, ctld_port)
    env = {**os.environ, **cluster.env()}
    try:
        for node in NODES:
            subnet.add_host(node)
        subnet.write_hosts(["ctl", *machine_names()])
        conf.write_text(_config(d, subnet, ctld_port, slurmd_port))
        _start_munge(d)
        # -i: ignore saved state (there is none); slurmctld and slurmd daemonize.
        ctld = subnet.with_hosts(f"exec {slurmctld} -f {conf} -i", hostname="ctl")
        subprocess.run(ctld, check=True, env=env, capture_output=True, timeout=30)
        wait_until(lambda: "UP" in cluster.run("scontrol", "ping").stdout, 15, "slurmctld to answer")
        for node in NODES:
            command = subnet.in_host(node, f"exec {slurmd} -f {conf} -N {node}")
            subprocess.run(command, check=True, env=env, capture_output=True, timeout=30)
        wait_until(lambda: _nodes_ready(cluster), START_TIMEOUT, "both SLURM nodes to become idle")
    except (AssertionError, subprocess.CalledProcessError, OSError, RuntimeError) as exc:
        logs = "\n".join(log_tail(d / name, 15) for name in ("slurmctld.log", *(f"slurmd-{n}.log" for n in NODES)))
        cluster.stop()
        raise AssertionError(f"two-node SLURM did not start: {exc}\n{logs}") from exc
    cluster.startup_seconds = time.monotonic() - began
    return cluster


def _nodes_ready(cluster: Slurm2Cluster) -> bool:
    states = cluster.node_states()
    for node, state in states.items():
        if state.startswith(("down", "drain")):
            cluster.run("scontrol", "update", f"nodename={node}", "state=resume")
    return sorted(states) == list(NODES) and all(s == "idle" for s in states.values())
