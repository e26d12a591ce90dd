"""A real single-node SLURM cluster for the tests: munged + slurmctld + slurmd on loopback.

Recipe: ``../shared/TESTING.md``. Everything lives in one temporary directory (config, munge key
and socket, state, spool, logs, the ``jobcomp`` file); the daemons listen on free loopback ports
and are stopped by PID. Client commands find the cluster through ``SLURM_CONF``
(:meth:`SlurmCluster.env`); the ``slurm_cluster`` fixture in ``tests/launchers/conftest.py`` also
sets it in ``os.environ`` for the session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import free_port, log_tail, process_alive, require_binary, unix_socket_open, wait_until

START_TIMEOUT = 30.0
"""Bound on the wait for the node to become idle (it usually takes 2-5 s)."""


class SlurmClient:
    """What both test clusters share: the client commands' environment and the ``jobcomp`` log.

    Subclasses (dataclasses) have ``directory`` (everything of the cluster) and ``conf`` (its slurm.conf).
    """

    directory: Path
    conf: Path
    partition = "debug"
    """The only (default) partition."""

    @property
    def jobcomp(self) -> Path:
        """The ``jobcomp/filetxt`` log: one line per finished job (``JobId=.. JobState=..``)."""
        return self.directory / "jobcomp.txt"

    def env(self) -> dict[str, str]:
        """Environment variables client commands need (``SLURM_CONF``)."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command (``sbatch``, ``squeue``, ``scontrol``...) against this cluster (output
        captured, never raises)."""
        return subprocess.run(
            list(argv), env={**os.environ, **self.env()}, capture_output=True, text=True, timeout=30, check=False
        )


@dataclass
class SlurmCluster(SlurmClient):
    """A running single-node cluster; ``host`` is the node name (``hostname -s``)."""

    directory: Path
    conf: Path
    host: str
    ctld_port: int
    slurmd_port: int
    startup_seconds: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    def node_state(self) -> str:
        """The node's state as ``sinfo`` prints it (``idle``, ``mixed``, ``down*``...)."""
        return self.run("sinfo", "-h", "-n", self.host, "-o", "%T").stdout.strip()

    def stop(self) -> None:
        """Stop slurmd, slurmctld and munged by PID (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        for name in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            _stop_pidfile(self.directory / name)


def _stop_pidfile(pidfile: Path) -> None:
    """SIGTERM the PID in ``pidfile``, wait (bounded) for it to go, then SIGKILL."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait_until(lambda: not process_alive(pid), 10, f"pid {pid} from {pidfile.name} to exit")
    except AssertionError:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def shared_settings(d: Path, *, per_node: bool) -> str:
    """The slurm.conf lines both test clusters use: munge in ``d``, state, controller files and logs there,
    no cgroups, no accounting, backfill on cores, fast scheduling; ``per_node``: one slurmd spool, pid and
    log file per node (``%n``), for several slurmds sharing ``d``."""
    spool, files = ("/%n", "slurmd-%n") if per_node else ("", "slurmd")
    return f"""SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.sock
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool{spool}
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/{files}.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/{files}.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/jobcomp.txt
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MessageTimeout=5
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
"""


def _config(d: Path, host: str, ctld_port: int, slurmd_port: int) -> str:
    return f"""ClusterName=pdtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
{shared_settings(d, per_node=False)}NodeName={host} NodeAddr=127.0.0.1 CPUs=2 Boards=1 SocketsPerBoard=1 \
CoresPerSocket=2 ThreadsPerCore=1 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _start_munge(d: Path) -> Path:
    munged = require_binary("munged", "munge")
    mungekey = require_binary("mungekey", "munge")
    mdir = d / "munge"
    mdir.mkdir(mode=0o755)
    os.chmod(mdir, 0o755)  # non-root submitters must reach the socket
    key = mdir / "munge.key"
    subprocess.run([mungekey, "--create", f"--keyfile={key}"], check=True, capture_output=True)
    os.chmod(key, 0o400)
    sock = mdir / "munge.sock"
    subprocess.run(
        [
            munged,
            "--force",
            f"--socket={sock}",
            f"--key-file={key}",
            f"--pid-file={mdir / 'munged.pid'}",
            f"--log-file={mdir / 'munged.log'}",
            f"--seed-file={mdir / 'munged.seed'}",
        ],
        check=True,
        capture_output=True,
    )
    wait_until(lambda: unix_socket_open(sock), 10, f"munged accepting on {sock}")
    return sock


def start_slurm(directory: Path) -> SlurmCluster:
    """Start munged, slurmctld and slurmd in ``directory``; return once the node is idle.

    Raises ``AssertionError`` (with the daemon logs' tails) if the node is not idle within
    :data:`START_TIMEOUT` seconds; the daemons started so far are stopped first.
    """
    began = time.monotonic()
    slurmctld = require_binary("slurmctld", "slurm-wlm")
    slurmd = require_binary("slurmd", "slurm-wlm")
    d = directory.resolve()
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    for sub in ("state", "spool"):
        (d / sub).mkdir(exist_ok=True)
    host = socket.gethostname().split(".")[0]
    ctld_port, slurmd_port = free_port(), free_port()
    while slurmd_port == ctld_port:
        slurmd_port = free_port()
    conf = d / "slurm.conf"
    conf.write_text(_config(d, host, ctld_port, slurmd_port))
    cluster = SlurmCluster(d, conf, host, ctld_port, slurmd_port)
    env = {**os.environ, **cluster.env()}
    try:
        _start_munge(d)
        # -i: ignore saved state (there is none); both daemonize and write their pid files.
        subprocess.run([slurmctld, "-f", str(conf), "-i"], check=True, env=env, capture_output=True)
        wait_until(lambda: cluster.run("scontrol", "ping").stdout.count("UP") > 0, 15, "slurmctld to answer")
        subprocess.run([slurmd, "-f", str(conf)], check=True, env=env, capture_output=True)
        wait_until(lambda: _node_ready(cluster), START_TIMEOUT, f"SLURM node {host} to become idle")
    except (AssertionError, subprocess.CalledProcessError) as exc:
        logs = "\n".join(log_tail(d / name, 15) for name in ("slurmctld.log", "slurmd.log", "munge/munged.log"))
        cluster.stop()
        raise AssertionError(f"SLURM did not start: {exc}\n{logs}") from exc
    cluster.startup_seconds = time.monotonic() - began
    return cluster


def _node_ready(cluster: SlurmCluster) -> bool:
    state = cluster.node_state()
    if state.startswith(("down", "drain")):  # ReturnToService=2 should avoid this; resume if not
        cluster.run("scontrol", "update", f"nodename={cluster.host}", "state=resume")
        return False
    return state == "idle"

