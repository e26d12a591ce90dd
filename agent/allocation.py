"""The pilot's nodes at run time: discovery, one executor per node, the core pool and the node caches.

:func:`start_nodes` is what the agent calls at registration:

* learn the allocation (:func:`agent.nodes.discover`); in a multi-node allocation each node offers
  the cores the batch system gave the job there (at most the pilot's ``processes_per_node``, and
  ``--slots`` in all); on one node, outside a batch job, or with ``--node-launch off`` the pilot is
  one node offering ``--slots`` cores (what agents always did);
* start one executor per node (:mod:`agent.executors`: the agent's own node in-process, the others
  through ``srun``/``ssh``/``qrsh``/``blaunch``, in parallel); a node whose process cannot start is
  left out with an error in the log, the rest of the pilot runs;
* give each node a cache directory (:data:`DEFAULT_NODE_CACHE` for several nodes, ``<workdir>/.cache``
  for one; ``--node-cache`` with ``{pilot}`` and ``{node}`` placeholders overrides both).

:class:`PilotNodes` then answers where a placed CU is spawned and takes a lost node out of the pool.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.cores import NodeSlots, Placement
from agent.executors import LocalExecutor, NodeLost, RemoteExecutor, choose_launcher, find_launcher, node_command
from agent.nodecache import NodeCaches, Recorder
from agent.nodeexec import StoreOpener
from agent.nodes import Allocation, AllocationError, Node, discover

log = logging.getLogger(__name__)

DEFAULT_NODE_CACHE = "{tmpdir}/pilot-data-{pilot}/{node}"
"""Where each node of a multi-node pilot keeps its cache: node-local scratch (``$TMPDIR``, else /tmp)."""

Executor = LocalExecutor | RemoteExecutor


@dataclass
class PilotNodes:
    """The nodes of a running pilot (see the module docstring)."""

    allocation: Allocation
    launcher: str | None
    local: str | None
    executors: dict[str, Executor]
    slots: NodeSlots
    caches: NodeCaches
    lost: dict[str, str] = field(default_factory=dict)
    on_lost: Callable[[str, str], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def executor(self, placement: Placement, *, launcher_here: bool = False) -> Executor:
        """Where a placed CU's process starts: its node; with ``launcher_here`` (an MPI CU, whose launcher
        reaches its hosts itself: ``srun -w``, ``mpirun -host``) the agent's own node when it runs."""
        if launcher_here and self.local is not None and self.local in self.executors:
            return self.executors[self.local]
        node = placement.node
        executor = self.executors.get(node)
        if executor is None or not executor.alive:
            raise NodeLost(node, self.lost.get(node, "not running"))
        return executor

    def node_lost(self, node: str, why: str) -> None:
        """Take ``node`` out: no more CUs go there, its cache no longer counts."""
        with self._lock:
            if node in self.lost:
                return
            self.lost[node] = why
        self.slots.remove(node)
        self.caches.forget_node(node)
        if self.on_lost is not None:
            self.on_lost(node, why)

    def describe(self) -> dict[str, Any]:
        """What the pilot record shows: nodes and cores, the launcher, lost nodes."""
        return {
            "nodes": {n.name: n.cores for n in self.allocation.nodes if n.name in self.executors
                      and n.name not in self.lost},
            "node_launch": self.launcher or "local",
            "lost_nodes": dict(self.lost),
        }

    def close(self) -> None:
        """Stop every node process (their CUs are killed) and the peer servers."""
        threads = [threading.Thread(target=ex.close, daemon=True) for ex in self.executors.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)


def cache_dir(template: str | None, *, pilot: str, node: str, workdir: Path, several: bool) -> Path:
    """A node's cache directory from ``template`` (``{pilot}``, ``{node}``, ``{tmpdir}``, ``{workdir}``)."""
    if template is None:
        if not several:
            return workdir / ".cache"
        template = DEFAULT_NODE_CACHE
    tmpdir = os.environ.get("TMPDIR") or "/tmp"
    return Path(template.format(pilot=pilot, node=node, tmpdir=tmpdir, workdir=workdir)).expanduser()


def start_nodes(
    *,
    pilot: str,
    slots: int,
    per_node: int | None,
    workdir: Path,
    node_launch: str,
    node_cache: str | None,
    opener: StoreOpener,
    record: Recorder,
    env: Mapping[str, str] | None = None,
    hostname: str | None = None,
) -> PilotNodes:
    """Discover the allocation and start its executors (see the module docstring)."""
    env = dict(os.environ if env is None else env)
    hostname = hostname or socket.gethostname()
    try:
        found = discover(env, hostname, slots)
    except AllocationError as exc:
        log.error("%s; running on this node only", exc)
        found = Allocation((Node(hostname.split(".")[0], slots),), "local")
    launcher = choose_launcher(node_launch, found.source) if len(found.nodes) > 1 else None
    if launcher is not None and find_launcher(launcher, env) is None:
        log.error("%s not found on PATH: running on this node only (--node-launch names another)", launcher)
        launcher = None
    local = found.local_node(hostname)
    if launcher is None:
        name = local or hostname.split(".")[0]
        allocation = Allocation((Node(name, slots),), found.source if len(found.nodes) == 1 else "local")
        local = name
    else:
        allocation = found.limited(slots, per_node)
    several = launcher is not None
    token = secrets.token_urlsafe(24)
    executors: dict[str, Executor] = {}
    lost: dict[str, str] = {}
    holder: list[PilotNodes] = []

    def lost_callback(node: str, why: str) -> None:
        if holder:
            holder[0].node_lost(node, why)

    def start(node: Node) -> None:
        directory = cache_dir(node_cache, pilot=pilot, node=node.name, workdir=workdir, several=several)
        try:
            if node.name == local:
                executors[node.name] = LocalExecutor(node.name, directory, token, serve=several, opener=opener)
            else:
                assert launcher is not None
                argv = node_command(launcher, node.name, node.cores)
                executors[node.name] = RemoteExecutor(node.name, argv, directory, token, lost_callback, env=env,
                                                      log_file=workdir / f"node-{node.name}.log")
        except Exception as exc:  # a node that cannot start is left out; the others run
            lost[node.name] = f"could not start: {exc}"
            log.error("node %s: could not start its executor: %s", node.name, exc)

    threads = [threading.Thread(target=start, args=(n,), daemon=True) for n in allocation.nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alive = [n for n in allocation.nodes if n.name in executors]
    if not alive:
        why = "; ".join(f"{k}: {v}" for k, v in lost.items())
        raise AllocationError(f"no node of the allocation could start: {why}")
    nodes = PilotNodes(allocation, launcher, local, executors, NodeSlots(alive),
                       NodeCaches(pilot, executors, record), lost=lost)
    holder.append(nodes)
    log.info("pilot %s: %d node(s) (%s) from %s, %s", pilot, len(alive),
             ", ".join(f"{n.name}:{n.cores}" for n in alive), found.source,
             f"other nodes through {launcher}" if launcher else "all CUs on this node")
    return nodes
