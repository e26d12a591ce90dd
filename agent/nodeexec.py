"""What runs on each node of a multi-node pilot: its cache, its peer server, and its CU processes.

:class:`NodeService` is one node's share of the pilot: a :class:`transfer.PilotCache` on the node's
local scratch, a :class:`~agent.peers.CacheServer` offering that cache to the other nodes, fetches
into the cache (from a PilotData store or from a peer node) and links from it into CU sandboxes. The
agent's own node has one in the agent's process (:class:`agent.executors.LocalExecutor`); every other
node runs ``python -m agent.nodeexec``, started once per node by the agent (``srun``, ``ssh``,
``qrsh -inherit``, ``blaunch``), which serves one :class:`NodeService` and the CU processes of that
node over its standard input and output.

The protocol is one JSON object per line. The agent sends requests ``{"req": N, "op": ..., ...}``;
the node answers each ``{"req": N, "ok": true, ...}`` or ``{"req": N, "ok": false, "error": "..."}``
and reports a CU process's end as ``{"event": "exit", "id": CU, "code": C}``:

=========  ====================================================  =====================================
op         request fields                                        answer fields
=========  ====================================================  =====================================
hello      ``node``, ``cache`` (directory), ``token``            ``address``, ``port`` (peer server)
spawn      ``id``, ``argv``, ``cwd``, ``env`` (added to the      ``pid``
           node's own environment), ``stdout``, ``stderr``
kill       ``id``, ``grace`` (SIGTERM, then SIGKILL)             (the exit event follows)
fetch      ``key``, ``entries``, ``source``: ``{"store": PD,     ``bytes``, ``seconds``, ``method``
           "data": PD record, "du": DU}`` or ``{"peer": URL}``
link       ``key``, ``sandbox``, ``files`` (or null), ``copy``   (nothing)
=========  ====================================================  =====================================

When its standard input closes (the agent exited, however it died, or the connection through the
launcher broke) the node SIGKILLs every CU process group it started and exits: nothing outlives the
agent. The node's CU processes get the allow-list of the node's own environment
(:func:`agent.environment.passed`: no secret) plus the CU's variables, each in its own session, as on
the agent's node.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

from agent.environment import passed
from agent.launch import Launched, spawn
from agent.peers import CacheServer, PeerFileSystem
from agent.task import CUFailed

log = logging.getLogger(__name__)

StoreOpener = Callable[[str, Mapping[str, Any]], Any]
"""``opener(pd_id, pd_record_data)`` -> a :class:`pilotdata.stores.Store`."""


def node_address(node: str) -> str:
    """The address this node is reached at by its peers (its name resolved; never a wildcard)."""
    try:
        address = socket.gethostbyname(node)
    except OSError:
        address = socket.gethostbyname(socket.gethostname())
    return address


def _open_from_record(pd_id: str, data: Mapping[str, Any]) -> Any:
    from pilotdata.stores import store_from_record

    return store_from_record(data, name=pd_id)


class NodeService:
    """One node's cache, peer server, fetches and links (see the module docstring)."""

    def __init__(self, node: str, cache_dir: Path, token: str, *, serve: bool,
                 opener: StoreOpener = _open_from_record) -> None:
        import transfer

        self.node = node
        self.cache = transfer.PilotCache(cache_dir)
        self._opener = opener
        self._stores: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.server = CacheServer(self.cache, token, node_address(node)) if serve else None
        self.token = token

    @property
    def peer_url(self) -> str | None:
        """Where the other nodes fetch from this one (None when not serving)."""
        return self.server.url if self.server else None

    def _store(self, pd_id: str, data: Mapping[str, Any]) -> Any:
        with self._lock:
            store = self._stores.get(pd_id)
            if store is None:
                store = self._stores[pd_id] = self._opener(pd_id, data)
            return store

    def fetch(self, key: str, entries: Iterable[Mapping[str, Any]], source: Mapping[str, Any]) -> dict[str, Any]:
        """Make ``key`` complete in this node's cache from a store or a peer; bytes, seconds and method, and
        ``reread_bytes`` / ``retries`` when failed attempts were retried (their bytes moved once more)."""
        import transfer

        items = [transfer.FileEntry.from_dict(e) for e in entries]
        started = time.monotonic()
        if self.cache.contains(key):
            return {"bytes": 0, "seconds": 0.0, "method": "hit"}
        if "peer" in source:
            fs: Any = PeerFileSystem(str(source["peer"]), self.token)
            root, method = key, "peer"
        else:
            store = self._store(str(source["store"]), source.get("data") or {})
            fs, root = store.fs, store.path(str(source["du"]))
            method = "link" if store.scheme == "file" and _same_device(store.root, self.cache.root) else "copy"
        taken_back = [0, 0]  # bytes of failed attempts that were retried, and how many there were

        def progress(delta: int, files_done: int) -> None:
            if delta < 0:  # the copy engine takes a failed attempt's bytes back before it retries
                taken_back[0] -= delta
                taken_back[1] += 1

        try:
            self.cache.ensure(key, fs, root, items, progress=progress)
        except Exception as exc:  # the transfer layer's errors, converted at this boundary
            from pilotdata.data import convert_transfer_error

            where = f"node {source['peer']}" if "peer" in source else str(source["store"])
            raise convert_transfer_error(exc, f"fetch of DataUnit {source.get('du') or key} from {where}") from exc
        result: dict[str, Any] = {"bytes": sum(e.size or 0 for e in items), "seconds": time.monotonic() - started,
                                  "method": method}
        if taken_back[1]:  # those bytes moved twice: the record says so (a link's counters show them)
            result["reread_bytes"], result["retries"] = taken_back
        return result

    def link(self, key: str, sandbox: str, files: Iterable[str] | None, copy: bool = False) -> None:
        """Link (or, with ``copy``, copy: for sandboxes other nodes read) ``key``'s files into ``sandbox``."""
        if not copy:
            self.cache.link_into(key, sandbox, files)
            return
        data = self.cache.path(key)
        names = [e.path for e in self.cache.entries(key)]
        if files is not None:
            wanted = list(files)
            names = [n for n in names if any(n == w or n.startswith(w.rstrip("/") + "/") for w in wanted)]
        for name in names:
            target = Path(sandbox) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            shutil.copyfile(data / name, tmp)
            os.replace(tmp, target)

    def close(self) -> None:
        """Stop the peer server."""
        if self.server is not None:
            self.server.close()


def _same_device(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


# ---------------------------------------------------------------------------------- the process
class _Node:
    """The ``python -m agent.nodeexec`` side: requests from stdin, answers and events to stdout."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._out_lock = threading.Lock()
        self.service: NodeService | None = None
        self._procs: dict[str, Launched] = {}
        self._procs_lock = threading.Lock()
        base = {k: v for k, v in os.environ.items() if passed(k)}  # the same allow-list as the agent's
        self._env = base

    def send(self, message: Mapping[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self._out_lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the agent is gone: stdin's EOF ends us next

    def answer(self, req: Any, **fields: Any) -> None:
        self.send({"req": req, "ok": True, **fields})

    def refuse(self, req: Any, error: str) -> None:
        self.send({"req": req, "ok": False, "error": error})

    def handle(self, message: Mapping[str, Any]) -> None:
        op, req = message.get("op"), message.get("req")
        try:
            if op == "hello":
                self.service = NodeService(str(message["node"]), Path(str(message["cache"])), str(message["token"]),
                                           serve=bool(message.get("serve", True)))
                server = self.service.server
                self.answer(req, address=server.address if server else None, port=server.port if server else None,
                            host=socket.gethostname(), pid=os.getpid())
            elif op == "spawn":
                self._spawn(req, message)
            elif op == "kill":
                with self._procs_lock:
                    proc = self._procs.get(str(message["id"]))
                if proc is not None:
                    threading.Thread(target=proc.kill_group, args=(float(message.get("grace", 0)),),
                                     daemon=True).start()
                self.answer(req)
            elif op in ("fetch", "link"):
                threading.Thread(target=self._data, args=(req, op, message), daemon=True).start()
            else:
                self.refuse(req, f"unknown op {op!r}")
        except Exception as exc:  # answer every request, whatever went wrong
            self.refuse(req, f"{type(exc).__name__}: {exc}")

    def _spawn(self, req: Any, message: Mapping[str, Any]) -> None:
        cu = str(message["id"])
        env = {**self._env, **dict(message.get("env") or {})}
        try:
            launched = spawn(list(message["argv"]), Path(str(message["cwd"])), env,
                             Path(str(message["stdout"])), Path(str(message["stderr"])))
        except CUFailed as failure:
            self.refuse(req, failure.reason)
            return
        with self._procs_lock:
            self._procs[cu] = launched
        self.answer(req, pid=launched.pgid)
        threading.Thread(target=self._wait, args=(cu, launched), daemon=True).start()

    def _wait(self, cu: str, launched: Launched) -> None:
        code = launched.process.wait()
        launched.kill_group(0)  # the CU is over: nothing of its group stays behind
        with self._procs_lock:
            self._procs.pop(cu, None)
        self.send({"event": "exit", "id": cu, "code": code})

    def _data(self, req: Any, op: str, message: Mapping[str, Any]) -> None:
        try:
            if self.service is None:
                raise RuntimeError("no hello yet")
            if op == "fetch":
                result = self.service.fetch(str(message["key"]), message["entries"], message["source"])
                self.answer(req, **result)
            else:
                files = message.get("files")
                self.service.link(str(message["key"]), str(message["sandbox"]), files, bool(message.get("copy")))
                self.answer(req)
        except Exception as exc:  # the agent fails the CU (or tries another source) with this text
            self.refuse(req, f"{type(exc).__name__}: {exc}")

    def shutdown(self) -> None:
        """The agent is gone: kill every CU process group, stop serving."""
        with self._procs_lock:
            procs = list(self._procs.values())
        for proc in procs:
            proc.kill_group(0)
        if self.service is not None:
            self.service.close()


def serve(lines: Iterable[str], out: IO[str]) -> None:
    """Serve requests from ``lines`` until they end, then kill what is left (see the module docstring)."""
    node = _Node(out)
    try:
        for line in lines:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("node: ignoring a line that is not JSON")
                continue
            node.handle(message)
    finally:
        node.shutdown()


def main() -> int:
    """Entry point of ``python -m agent.nodeexec``."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s node[{socket.gethostname()}] %(name)s: %(message)s")
    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # through serve()'s finally: the CU groups are killed first

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    serve(sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
