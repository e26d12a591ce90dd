"""How the agent reaches each node of its allocation: one executor per node.

The agent's own node is a :class:`LocalExecutor`: CUs are spawned by the agent itself
(:func:`agent.launch.spawn`) and its cache lives in the agent's process. Every other node gets a
:class:`RemoteExecutor`: one ``python -m agent.nodeexec`` started on that node **once per pilot**
through the batch system's own remote launcher, with a pipe to it for requests (spawn, kill, fetch,
link) and answers (:mod:`agent.nodeexec` has the protocol):

=========  =================================================================================
launcher   command (``NODE``: the node's name; ``C``: its cores)
=========  =================================================================================
srun       ``srun --overlap -N1 -n1 -c C -w NODE --kill-on-bad-exit=0 PYTHON -m agent.nodeexec``
ssh        ``ssh -o BatchMode=yes NODE PYTHON -m agent.nodeexec`` (PBS/Torque; no stdin with pbsdsh)
qrsh       ``qrsh -inherit NODE PYTHON -m agent.nodeexec`` (Grid Engine, PE with control_slaves)
blaunch    ``blaunch NODE PYTHON -m agent.nodeexec`` (LSF)
=========  =================================================================================

Why one long-lived process per node rather than a launcher call per CU (``srun -N1 -n1 -w NODE``
each time): a step per CU costs the controller a round trip and the CU tens to hundreds of
milliseconds, which the many-short-task workloads pilots exist for cannot afford; the node process
also holds the node's cache and serves it to the other nodes, and its pipe is the node's liveness:
when it breaks (the node died, its processes were killed, the step was cancelled) the agent takes
that node out of the pool and requeues only the CUs that ran there. When the agent dies, the
pipes close and every node kills its CU process groups (the node-side reaper).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from agent.child import StrPath
from agent.launch import Launched, spawn
from agent.nodeexec import NodeService, StoreOpener
from pilotdata.errors import PilotDataError

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0
"""Seconds a node process may take to answer its hello."""
KILL_WAIT = 30.0
"""Seconds past the grace period to wait for a killed remote CU's exit."""

LAUNCHERS = ("srun", "ssh", "qrsh", "blaunch")
"""Remote launchers the agent knows (``auto`` picks one by the batch system, ``off`` uses none)."""
AUTO_LAUNCHER = {"slurm": "srun", "pbs": "ssh", "sge": "qrsh", "lsf": "blaunch"}


class NodeLost(PilotDataError):
    """The node (its process, its launcher step, its connection) is gone."""

    def __init__(self, node: str, why: str = "") -> None:
        super().__init__(f"node {node} lost" + (f": {why}" if why else ""))
        self.node = node


def node_command(launcher: str, node: str, cores: int, python: str = sys.executable) -> list[str]:
    """The argv that starts ``python -m agent.nodeexec`` on ``node`` through ``launcher``."""
    tail = [python, "-m", "agent.nodeexec"]
    if launcher == "srun":
        return ["srun", "--overlap", "-N1", "-n1", f"-c{cores}", "-w", node, "--kill-on-bad-exit=0", *tail]
    if launcher == "ssh":
        return ["ssh", "-o", "BatchMode=yes", "-T", node, *tail]
    if launcher == "qrsh":
        return ["qrsh", "-inherit", node, *tail]
    if launcher == "blaunch":
        return ["blaunch", node, *tail]
    raise ValueError(f"unknown node launcher {launcher!r}; known: {', '.join(LAUNCHERS)}")


def choose_launcher(setting: str, source: str) -> str | None:
    """The launcher for ``setting`` (``auto``, ``off`` or a name) in an allocation learnt from ``source``."""
    if setting == "off" or source == "local":
        return None
    if setting == "auto":
        return AUTO_LAUNCHER.get(source)
    if setting not in LAUNCHERS:
        raise ValueError(f"--node-launch: {setting!r} is not auto, off or one of {', '.join(LAUNCHERS)}")
    return setting


class LocalExecutor:
    """The agent's own node: CUs spawned here, the cache in this process."""

    local = True

    def __init__(self, node: str, cache_dir: Path, token: str, *, serve: bool, opener: StoreOpener) -> None:
        self.node = node
        self.service = NodeService(node, cache_dir, token, serve=serve, opener=opener)
        self.alive = True

    @property
    def peer_url(self) -> str | None:
        """Where the other nodes fetch this node's cache."""
        return self.service.peer_url

    def spawn(self, cu: str, argv: Sequence[str], cwd: StrPath, env: Mapping[str, str], extra: Mapping[str, str],
              stdout: StrPath, stderr: StrPath) -> Launched:
        """Start a CU here (``env`` is its whole environment)."""
        return spawn(argv, cwd, env, stdout, stderr)

    def fetch(self, key: str, entries: Sequence[Mapping[str, Any]], source: Mapping[str, Any]) -> dict[str, Any]:
        """Fill the cache entry ``key`` (see :meth:`NodeService.fetch`)."""
        return self.service.fetch(key, entries, source)

    def link(self, key: str, sandbox: Path, files: Iterable[str] | None, copy: bool = False) -> None:
        """Link ``key``'s files into a sandbox."""
        self.service.link(key, str(sandbox), files, copy)

    def close(self) -> None:
        """Stop serving peers."""
        self.service.close()


class RemoteProcess:
    """A CU process on another node, as far as its node process reports it."""

    local = False

    def __init__(self, executor: RemoteExecutor, cu: str) -> None:
        self.executor = executor
        self.cu = cu
        self.pgid: int | None = None
        self.code: int | None = None
        self._done = threading.Event()

    def ended(self, code: int | None) -> None:
        """Called by the executor's reader: the process exited (``None``: the node was lost)."""
        self.code = code
        self._done.set()

    def wait(self, timeout: float) -> int | None:
        """The exit code, ``None`` if still running after ``timeout``; :class:`NodeLost` if the node is gone."""
        if not self._done.wait(max(0.0, timeout)):
            return None
        if self.code is None:
            raise NodeLost(self.executor.node, self.executor.lost_reason)
        return self.code

    def kill_group(self, grace: float) -> int:
        """Ask the node to SIGTERM / SIGKILL the CU's group; its exit code (:class:`NodeLost` if the node is gone)."""
        if not self._done.is_set():
            self.executor.request({"op": "kill", "id": self.cu, "grace": grace})
            if not self._done.wait(grace + KILL_WAIT):
                raise NodeLost(self.executor.node, f"CU {self.cu} did not end after kill")
        if self.code is None:
            raise NodeLost(self.executor.node, self.executor.lost_reason)
        return self.code

    def close(self) -> None:
        """Nothing to release."""


class RemoteExecutor:
    """A node reached through its ``python -m agent.nodeexec`` process (see the module docstring)."""

    local = False

    def __init__(self, node: str, argv: Sequence[str], cache_dir: Path, token: str,
                 on_lost: Callable[[str, str], None], *, env: Mapping[str, str] | None = None,
                 log_file: Path | None = None) -> None:
        self.node = node
        self.argv = list(argv)
        self._on_lost = on_lost
        self.alive = False
        self.lost_reason = ""
        self.peer_url: str | None = None
        self._lock = threading.Lock()
        self._next = 0
        self._waiting: dict[int, tuple[threading.Event, dict[str, Any]]] = {}
        self._procs: dict[str, RemoteProcess] = {}
        err: IO[bytes] | int = subprocess.DEVNULL
        self._err_file = open(log_file, "ab") if log_file is not None else None  # noqa: SIM115 - closed in close()
        if self._err_file is not None:
            err = self._err_file
        self._proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
            env=dict(env) if env is not None else None, start_new_session=True, close_fds=True,
        )
        self.alive = True
        self._reader = threading.Thread(target=self._read, name=f"node-{node}", daemon=True)
        self._reader.start()
        hello = self.request({"op": "hello", "node": node, "cache": str(cache_dir), "token": token},
                             timeout=START_TIMEOUT)
        if hello.get("address") and hello.get("port"):
            host = hello["address"]
            self.peer_url = f"http://{'[' + host + ']' if ':' in host else host}:{hello['port']}"
        log.info("node %s: node process %s on %s (pid %s), peers at %s", node, " ".join(self.argv[:1]),
                 hello.get("host"), hello.get("pid"), self.peer_url)

    # ------------------------------------------------------------------ plumbing
    def request(self, message: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a request and wait for its answer; :class:`NodeLost` when the node is gone."""
        done = threading.Event()
        reply: dict[str, Any] = {}
        with self._lock:
            if not self.alive:
                raise NodeLost(self.node, self.lost_reason)
            self._next += 1
            req = self._next
            self._waiting[req] = (done, reply)
            line = json.dumps({**message, "req": req}, separators=(",", ":")) + "\n"
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(line)
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as exc:
                self._waiting.pop(req, None)
                raise NodeLost(self.node, f"cannot write to its process: {exc}") from exc
        if not done.wait(timeout):
            with self._lock:
                self._waiting.pop(req, None)
            self._lose(f"no answer to {message.get('op')} in {timeout:g} s")
            raise NodeLost(self.node, self.lost_reason)
        if reply.get("lost"):
            raise NodeLost(self.node, self.lost_reason)
        if not reply.get("ok"):
            raise NodeRequestError(self.node, str(reply.get("error") or "refused"))
        return reply

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("node %s: ignoring output that is not the protocol: %.200s", self.node, line.rstrip())
                continue
            if message.get("event") == "exit":
                with self._lock:
                    proc = self._procs.pop(str(message.get("id")), None)
                if proc is not None:
                    code = message.get("code")
                    proc.ended(int(code) if isinstance(code, int) else -9)
                continue
            with self._lock:
                waiter = self._waiting.pop(message.get("req"), None)
            if waiter is not None:
                waiter[1].update(message)
                waiter[0].set()
        code = self._proc.wait()
        self._lose(f"its process ended (exit status {code})")

    def _lose(self, why: str) -> None:
        with self._lock:
            if not self.alive:
                return
            self.alive = False
            self.lost_reason = why
            waiting, self._waiting = self._waiting, {}
            procs, self._procs = self._procs, {}
        for done, reply in waiting.values():
            reply["lost"] = True
            done.set()
        for proc in procs.values():
            proc.ended(None)
        log.error("node %s lost: %s", self.node, why)
        self._on_lost(self.node, why)

    # ------------------------------------------------------------------- work
    def spawn(self, cu: str, argv: Sequence[str], cwd: StrPath, env: Mapping[str, str], extra: Mapping[str, str],
              stdout: StrPath, stderr: StrPath) -> RemoteProcess:
        """Start a CU on the node (``extra``: the CU's variables, added to the node's own environment)."""
        from agent.task import CUFailed

        proc = RemoteProcess(self, cu)
        with self._lock:
            self._procs[cu] = proc
        try:
            reply = self.request({"op": "spawn", "id": cu, "argv": list(argv), "cwd": str(cwd), "env": dict(extra),
                                  "stdout": str(stdout), "stderr": str(stderr)})
        except NodeRequestError as exc:
            with self._lock:
                self._procs.pop(cu, None)
            raise CUFailed(exc.error) from None
        except NodeLost:
            with self._lock:
                self._procs.pop(cu, None)
            raise
        proc.pgid = reply.get("pid")
        return proc

    def fetch(self, key: str, entries: Sequence[Mapping[str, Any]], source: Mapping[str, Any]) -> dict[str, Any]:
        """Fill the node's cache entry ``key`` from a store or a peer."""
        return self.request({"op": "fetch", "key": key, "entries": list(entries), "source": dict(source)})

    def link(self, key: str, sandbox: Path, files: Iterable[str] | None, copy: bool = False) -> None:
        """Link ``key``'s files into a sandbox, on the node."""
        self.request({"op": "link", "key": key, "sandbox": str(sandbox),
                      "files": list(files) if files is not None else None, "copy": copy})

    def close(self, timeout: float = 10.0) -> None:
        """Close the pipe (the node kills what it still runs and exits) and reap the launcher."""
        with self._lock:
            self.alive = False
            self.lost_reason = "the agent closed it"
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self._proc.pid, 9)
            except OSError:
                pass
            self._proc.wait()
        if self._err_file is not None:
            self._err_file.close()


class NodeRequestError(PilotDataError):
    """The node answered a request with an error."""

    def __init__(self, node: str, error: str) -> None:
        super().__init__(f"node {node}: {error}")
        self.node = node
        self.error = error


def find_launcher(launcher: str, env: Mapping[str, str]) -> str | None:
    """The launcher command's path on ``PATH``, or None."""
    return shutil.which(launcher, path=env.get("PATH"))
