"""Which node of the pilot holds which DataUnit, and where each node fetches one from.

Every node has its own cache on node-local scratch (:class:`agent.nodeexec.NodeService`). When a CU
placed on node N needs DataUnit D (:meth:`NodeCaches.ensure`):

1. N holds D already: nothing moves (a cache hit).
2. Another node of the pilot holds D: N copies it from that peer (the one serving the fewest copies
   at the moment), inside the allocation. If that peer fails (it was lost), the next one, then the store.
3. A node is fetching D from the store right now: N waits for that copy, then takes it from the peer.
4. Nobody has it: N fetches it from the PilotData store (the nearest complete replica first).

So a DataUnit crosses the wide-area link from its store once per pilot, however many nodes read it
(TaskVine's peer transfers). Every copy is recorded as a ``transfer`` event (destination
``pilot-cache:<pilot>``; source the store's URL, or ``pilot-cache:<pilot>@<peer node>``) with ``origin``
``store`` or ``peer``, ``node`` (where it went) and ``peer`` (where it came from), which the history
keeps; :meth:`NodeCaches.held` says what every node holds (the agent publishes it as the pilot's
``node_caches`` and the union as ``cached_dus``, which placement counts as local to the pilot).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.executors import NodeLost
from pilotdata.errors import PilotDataError

log = logging.getLogger(__name__)


class NodeExecutor(Protocol):
    """What :class:`NodeCaches` needs of a node (:mod:`agent.executors`)."""

    node: str
    alive: bool

    @property
    def peer_url(self) -> str | None:
        """Where the other nodes fetch this node's cache (None: it serves none)."""

    def fetch(self, key: str, entries: Sequence[Mapping[str, Any]], source: Mapping[str, Any]) -> dict[str, Any]:
        """Fill the node's cache entry ``key`` from ``source``."""

    def link(self, key: str, sandbox: Path, files: Iterable[str] | None, copy: bool = False) -> None:
        """Link ``key``'s files into a sandbox on the node."""


@dataclass(frozen=True)
class StoreSource:
    """One complete replica to fetch from: its PilotData id, record data and (public) URL."""

    pd_id: str
    data: Mapping[str, Any]
    url: str


Recorder = Callable[[str, Mapping[str, Any]], None]
"""``record(du_id, transfer_detail)``: append a transfer event."""


class NodeCaches:
    """The pilot's view of its node caches (see the module docstring). Thread-safe."""

    def __init__(self, pilot: str, executors: Mapping[str, NodeExecutor], record: Recorder) -> None:
        self.pilot = pilot
        self.executors = dict(executors)
        self._record = record
        self._cond = threading.Condition()
        self._held: dict[str, set[str]] = {}
        """cache key -> nodes holding it."""
        self._du_of: dict[str, str] = {}
        self._from_store: set[str] = set()
        """Keys being fetched from a store right now."""
        self._serving: dict[str, int] = {}
        """node -> peer copies it serves right now."""
        self._node_locks: dict[tuple[str, str], threading.Lock] = {}

    def held(self) -> dict[str, list[str]]:
        """``{node: [DU ids in its cache]}`` for the live nodes."""
        with self._cond:
            out: dict[str, set[str]] = {n: set() for n, ex in self.executors.items() if ex.alive}
            for key, nodes in self._held.items():
                for node in nodes:
                    if node in out:
                        out[node].add(self._du_of[key])
            return {n: sorted(d) for n, d in out.items()}

    def nodes_with(self, du_ids: Sequence[str]) -> set[str]:
        """Live nodes holding every one of ``du_ids`` (in some version)."""
        with self._cond:
            result: set[str] | None = None
            for du in du_ids:
                have = {n for k, ns in self._held.items() if self._du_of[k] == du for n in ns
                        if self.executors[n].alive}
                result = have if result is None else result & have
            return result or set()

    def forget_node(self, node: str) -> None:
        """A lost node holds nothing any more (wakes waiters)."""
        with self._cond:
            for nodes in self._held.values():
                nodes.discard(node)
            self._cond.notify_all()

    def _lock(self, key: str, node: str) -> threading.Lock:
        with self._cond:
            return self._node_locks.setdefault((key, node), threading.Lock())

    def ensure(self, du_id: str, key: str, entries: Sequence[Mapping[str, Any]], node: str,
               stores: Sequence[StoreSource], *, wait: float = 3600.0, cu: str | None = None) -> bool:
        """Make ``key`` (DataUnit ``du_id``) complete in ``node``'s cache (see the module docstring).

        True when this call moved bytes into the node's cache (recorded as a transfer for ``cu``, the
        ComputeUnit that needed them); False when the node held it already (a cache hit, which the caller
        records). Raises the executor's error (:class:`~agent.executors.NodeLost` when ``node`` is gone)
        or :class:`~pilotdata.errors.StagingError` when every source failed.
        """
        from pilotdata.errors import StagingError

        with self._lock(key, node):
            with self._cond:
                self._du_of[key] = du_id
                if node in self._held.get(key, ()):
                    return False
            errors: list[str] = []
            tried: set[str] = set()
            while True:
                peer = self._choose_peer(key, node, tried, wait)
                if peer is None:
                    break
                tried.add(peer)
                try:
                    return self._copy(du_id, key, entries, node, {"peer": self.executors[peer].peer_url}, peer=peer,
                                      cu=cu)
                except PilotDataError as exc:
                    if isinstance(exc, NodeLost) and exc.node == node:
                        raise  # this node is gone: the caller requeues
                    errors.append(f"from node {peer}: {exc}")
                    log.warning("DataUnit %s: copy from node %s to %s failed: %s", du_id, peer, node, exc)
                finally:
                    with self._cond:
                        self._serving[peer] = self._serving.get(peer, 1) - 1
            if not stores:
                raise StagingError(f"input DataUnit {du_id}: no complete replica to fetch")
            with self._cond:
                self._from_store.add(key)
            try:
                for store in stores:
                    try:
                        return self._copy(du_id, key, entries, node,
                                          {"store": store.pd_id, "data": dict(store.data), "du": du_id},
                                          store=store, cu=cu)
                    except PilotDataError as exc:
                        if isinstance(exc, NodeLost) and exc.node == node:
                            raise
                        errors.append(f"from {store.pd_id}: {exc}")
                        log.warning("input DataUnit %s: fetch from %s failed: %s", du_id, store.pd_id, exc)
            finally:
                with self._cond:
                    self._from_store.discard(key)
                    self._cond.notify_all()
            raise StagingError(f"input DataUnit {du_id}: every replica failed: " + "; ".join(errors))

    def _choose_peer(self, key: str, node: str, tried: set[str], wait: float) -> str | None:
        """A live node holding ``key`` (fewest copies in flight first); waits while a store fetch is on."""
        import time

        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                peers = [p for p in self._held.get(key, ()) if p != node and p not in tried
                         and self.executors[p].alive and self.executors[p].peer_url]
                if peers:
                    best = min(peers, key=lambda p: (self._serving.get(p, 0), p))
                    self._serving[best] = self._serving.get(best, 0) + 1
                    return best
                if key not in self._from_store or time.monotonic() >= deadline:
                    return None
                self._cond.wait(min(1.0, max(0.0, deadline - time.monotonic())))

    def _copy(self, du_id: str, key: str, entries: Sequence[Mapping[str, Any]], node: str,
              source: Mapping[str, Any], *, peer: str | None = None, store: StoreSource | None = None,
              cu: str | None = None) -> bool:
        """Fill ``node``'s entry from ``source``; record the copy (False: the node found it complete)."""
        from pilotdata.records import ByteCategory, transfer_record

        result = self.executors[node].fetch(key, entries, source)
        with self._cond:
            self._held.setdefault(key, set()).add(node)
            self._cond.notify_all()
        nbytes = int(result.get("bytes") or 0)
        method = str(result.get("method") or "copy")
        if method == "hit":
            return False
        category = ByteCategory.LINKED if method in ("link", "hardlink", "symlink") else ByteCategory.STAGED
        detail = transfer_record(
            du_id, nbytes, float(result.get("seconds") or 0.0), category=category,
            source=f"pilot-cache:{self.pilot}@{peer}" if peer is not None else (store.url if store else ""),
            destination=f"pilot-cache:{self.pilot}", cu=cu, source_pd=store.pd_id if store else None,
            method=method, origin="peer" if peer is not None else "store", node=node,
        )
        if peer is not None:
            detail["peer"] = peer
        if result.get("retries"):
            detail["retries"], detail["reread_bytes"] = int(result["retries"]), int(result.get("reread_bytes") or 0)
            log.warning("DataUnit %s: the copy to node %s was retried %d time(s); %d bytes moved again", du_id,
                        node, detail["retries"], detail["reread_bytes"])
        self._record(du_id, detail)
        log.info("DataUnit %s: %d bytes to node %s from %s", du_id, nbytes, node,
                 f"node {peer}" if peer else (store.pd_id if store else "?"))
        return True
