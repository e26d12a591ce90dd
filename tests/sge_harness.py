"""A real Grid Engine (Debian's gridengine 8.1.9) for the tests: sge_qmaster + sge_execd in a network namespace.

Recipe: ``../shared/TESTING.md``. The daemons always bind 0.0.0.0, so they run inside a namespace
of the harness's own (host ``sgehost`` at ``10.233.N.11``; :mod:`tests.netns_harness`), in a cell of
its own under a temporary directory (``SGE_ROOT=D/sge``, classic spooling, ``admin_user none``,
``min_uid 0`` so root may submit, a 1 s scheduling interval, accounting flushed at once). The
client commands run in the root network namespace and find ``sgehost`` through the harness's
hosts file: ``D/bin`` holds ``qsub``, ``qstat``, ``qdel``, ``qacct``, ``qconf`` wrappers that see it
(as a login node's resolver would), so ``env()`` puts ``D/bin`` first on ``PATH``.

The queue ``all.q`` has 2 slots and the parallel environments ``smp`` (``$pe_slots``: all slots on
one host) and ``mpi`` (``$fill_up``). Jobs run inside the namespace; they reach services in the
root namespace at :attr:`SgeCluster.gateway`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.netns_harness import Subnet, machine_names, make_subnet
from tests.servers import log_tail, require_binary, wait_until

HOST = "sgehost"
QMASTER_PORT, EXECD_PORT = 6444, 6445  # inside the namespace: nothing else listens there
START_TIMEOUT = 30.0
CLIENTS = ("qsub", "qstat", "qdel", "qacct", "qconf", "qhost", "qmod")

_BOOTSTRAP = """admin_user              none
default_domain          none
ignore_fqdn             true
spooling_method         classic
spooling_lib            libspoolc
spooling_params         {common};{qmaster}
binary_path             /usr/sbin
qmaster_spool_dir       {qmaster}
security_mode           none
listener_threads        2
worker_threads          2
scheduler_threads       1
"""

_QUEUE = """qname all.q
hostlist {host}
seq_no 0
load_thresholds NONE
suspend_thresholds NONE
nsuspend 1
suspend_interval 00:05:00
priority 0
min_cpu_interval 00:05:00
processors UNDEFINED
qtype BATCH INTERACTIVE
ckpt_list NONE
pe_list smp mpi
rerun FALSE
slots 2
tmpdir /tmp
shell /bin/bash
prolog NONE
epilog NONE
shell_start_mode unix_behavior
starter_method NONE
suspend_method NONE
resume_method NONE
terminate_method NONE
notify 00:00:60
owner_list NONE
user_lists NONE
xuser_lists NONE
subordinate_list NONE
complex_values NONE
projects NONE
xprojects NONE
calendar NONE
initial_state default
""" + "".join(
    f"{limit} INFINITY\n"
    for kind in ("rt", "cpu", "fsize", "data", "stack", "core", "rss", "vmem")
    for limit in (f"s_{kind}", f"h_{kind}")
)


@dataclass
class SgeCluster:
    """A running Grid Engine cell: one execution host ``sgehost`` with 2 slots, in its own namespace."""

    directory: Path
    root: Path
    subnet: Subnet
    startup_seconds: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    cell = "default"
    host = HOST
    queue = "all.q"

    @property
    def bin(self) -> Path:
        """The client command wrappers (they resolve ``sgehost`` through the harness's hosts file)."""
        return self.directory / "bin"

    @property
    def gateway(self) -> str:
        """The root namespace's address as jobs see it: services jobs must reach listen here."""
        return self.subnet.gateway

    @property
    def spool(self) -> Path:
        """The qmaster spool directory (``messages`` is its log)."""
        return self.root / self.cell / "spool" / "qmaster"

    def env(self) -> dict[str, str]:
        """Variables the client commands need: ``SGE_ROOT``, ``SGE_CELL``, the ports, ``PATH`` with :attr:`bin`."""
        return {
            "SGE_ROOT": str(self.root),
            "SGE_CELL": self.cell,
            "SGE_QMASTER_PORT": str(QMASTER_PORT),
            "SGE_EXECD_PORT": str(EXECD_PORT),
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a client command (``qstat``, ``qconf -sp smp``...) against this cell; never raises."""
        return subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]],
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def queue_ready(self) -> bool:
        """Whether ``all.q@sgehost`` is up (listed by ``qstat -f`` without an alarm or unknown state)."""
        out = self.run("qstat", "-f").stdout
        for line in out.splitlines():
            if line.startswith(f"{self.queue}@{self.host}"):
                fields = line.split()
                return len(fields) == 5 and fields[3] != "-NA-"  # a sixth column holds states like "au"
        return False

    def stop(self) -> None:
        """Stop sge_execd and sge_qmaster by PID, then everything left in the namespace (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self.subnet.remove()


def _config(root: Path, cell: str) -> str:
    template = Path("/usr/share/gridengine/default-configuration").read_text()
    replacements = {
        "execd_spool_dir": str(root / cell / "spool" / "execd"),
        "min_uid": "0",
        "min_gid": "0",
        "mailer": "/bin/true",
        "load_report_time": "00:00:05",
        "reporting_params": "accounting=true reporting=false flush_time=00:00:01 joblog=false "
        "sharelog=00:00:00 accounting_flush_time=00:00:00",
    }
    lines = []
    for line in template.splitlines():
        key = line.split()[0] if line.strip() and not line.startswith("#") else None
        lines.append(f"{key} {replacements[key]}" if key in replacements else line)
    return "\n".join(lines) + "\n"


def _prepare_cell(d: Path, root: Path, cell: str, client_names: list[str]) -> dict[str, str]:
    for sub in ("bin", "lib", "utilbin"):
        (root / sub).symlink_to(f"/var/lib/gridengine/{sub}")
    (root / "util").symlink_to("/usr/share/gridengine/util")
    common, qmaster = root / cell / "common", root / cell / "spool" / "qmaster"
    for path in (common, qmaster, root / cell / "spool" / "execd"):
        path.mkdir(parents=True)
    (common / "bootstrap").write_text(_BOOTSTRAP.format(common=common, qmaster=qmaster))
    (common / "act_qmaster").write_text(f"{HOST}\n")
    env = {
        **os.environ,
        "SGE_ROOT": str(root),
        "SGE_CELL": cell,
        "SGE_QMASTER_PORT": str(QMASTER_PORT),
        "SGE_EXECD_PORT": str(EXECD_PORT),
    }
    utilbin = "/usr/lib/gridengine"

    def tool(*argv: str) -> None:
        subprocess.run([f"{utilbin}/{argv[0]}", *argv[1:]], env=env, check=True, capture_output=True, timeout=30)

    tool("spoolinit", "classic", "libspoolc", f"{common};{qmaster}", "init")
    conf = d / "configuration"
    conf.write_text(_config(root, cell))
    tool("spooldefaults", "configuration", str(conf))
    resources = "/usr/share/gridengine/util/resources"
    tool("spooldefaults", "complexes", f"{resources}/centry")
    tool("spooldefaults", "pes", f"{resources}/pe")
    tool("spooldefaults", "usersets", f"{resources}/usersets")
    tool("spooldefaults", "managers", "root")
    tool("spooldefaults", "operators", "root")
    for kind in ("adminhosts", "submithosts"):
        template = d / "templates" / kind
        template.mkdir(parents=True)
        for name in (HOST, client_names[0]):
            (template / name).write_text(f"hostname {name}\n")
        tool("spooldefaults", kind, str(template))
    return env


def start_sge(directory: Path) -> SgeCluster:
    """Start a Grid Engine cell in ``directory``: qmaster and execd in a namespace; return once all.q is up.

    Raises ``AssertionError`` with the qmaster's messages if the queue is not up within
    :data:`START_TIMEOUT` seconds (after tearing down what was started).
    """
    began = time.monotonic()
    qmaster_bin = require_binary("sge_qmaster", "gridengine-master")
    execd_bin = require_binary("sge_execd", "gridengine-exec")
    require_binary("qsub", "gridengine-client")
    d = directory.resolve()
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    root = d / "sge"
    root.mkdir()
    subnet = make_subnet(d / "net")
    cluster = SgeCluster(d, root, subnet)
    try:
        subnet.add_host(HOST)
        names = machine_names()
        subnet.write_hosts(names)
        env = _prepare_cell(d, root, cluster.cell, names)
        for client in CLIENTS:
            subnet.client_wrapper(cluster.bin, client, shutil.which(client) or f"/usr/bin/{client}")
        for daemon in (qmaster_bin, execd_bin):  # both daemonize
            subprocess.run(subnet.in_host(HOST, f"exec {daemon}"), env=env, check=True, capture_output=True, timeout=30)
            if daemon == qmaster_bin:
                wait_until(lambda: cluster.run("qconf", "-sh").returncode == 0, 15, "sge_qmaster to answer")
        _configure(cluster, d)
        wait_until(cluster.queue_ready, START_TIMEOUT, f"queue {cluster.queue}@{HOST} to come up")
    except (AssertionError, subprocess.CalledProcessError, OSError, RuntimeError) as exc:
        messages = log_tail(cluster.spool / "messages")
        cluster.stop()
        raise AssertionError(f"Grid Engine did not start: {exc}\n{messages}") from exc
    cluster.startup_seconds = time.monotonic() - began
    return cluster


def _configure(cluster: SgeCluster, d: Path) -> None:
    """A 1 s scheduler and the queue ``all.q`` on ``sgehost`` (2 slots, PEs smp and mpi)."""
    sconf = cluster.run("qconf", "-ssconf")
    if sconf.returncode != 0:
        raise RuntimeError(f"qconf -ssconf: {sconf.stderr}")
    text = re.sub(r"(?m)^schedule_interval\s+\S+", "schedule_interval 0:0:1", sconf.stdout)
    text = re.sub(r"(?m)^flush_submit_sec\s+\S+", "flush_submit_sec 1", text)
    text = re.sub(r"(?m)^flush_finish_sec\s+\S+", "flush_finish_sec 1", text)
    (d / "sched_configuration").write_text(text)
    (d / "queue").write_text(_QUEUE.format(host=HOST))
    for argv in (("qconf", "-Msconf", str(d / "sched_configuration")), ("qconf", "-Aq", str(d / "queue"))):
        done = cluster.run(*argv)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr or done.stdout}")

