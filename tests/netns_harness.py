"""Hosts of our own on this machine: network namespaces joined to the root namespace by veth pairs.

Used by the SGE and two-node SLURM harnesses (recipes in ``../shared/TESTING.md``). Each
:class:`Subnet` takes a ``10.233.N.0/24`` no interface on this machine uses yet, a bridge in the
root namespace holding its ``.1`` address, and one namespace per host (``.11``, ``.12``, ...). A
``hosts`` file of its own names them; daemons and client commands see it through a private mount
namespace (``unshare --mount`` plus a bind mount over ``/etc/hosts``), never by editing the
machine's. :meth:`Subnet.remove` kills the processes left in its namespaces (ours: nothing else
runs there) and deletes the namespaces and the bridge.

Needs root (``ip netns``, ``unshare``, ``nsenter``): :func:`require_netns` skips the test with the
reason otherwise.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import process_alive, wait_until


def require_netns() -> None:
    """Skip the calling test unless this process can make network namespaces (root, iproute2, util-linux)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns) for the scheduler's hosts")
    for tool in ("ip", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} to create network namespaces for the scheduler's hosts")
    if not Path("/proc/self/ns/net").exists():
        pytest.skip("this kernel has no network namespaces")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _used_prefixes() -> set[str]:
    out = _ip("-o", "-4", "addr", check=False).stdout
    return {word.split("/")[0].rsplit(".", 1)[0] for word in out.split() if word.count(".") == 3 and "/" in word}


def machine_names() -> list[str]:
    """This machine's host names (short and full), as the client commands will look themselves up."""
    names = [socket.gethostname().split(".")[0], socket.gethostname(), socket.getfqdn()]
    return list(dict.fromkeys(n for n in names if n and n != "localhost"))


@dataclass
class Subnet:
    """A bridge (``.1``, the root side) and namespaces (``.11``...) on a private /24, with a hosts file."""

    directory: Path
    prefix: str
    tag: str
    bridge: str
    hosts_file: Path
    namespaces: dict[str, str] = field(default_factory=dict)
    """host name -> namespace name."""
    addresses: dict[str, str] = field(default_factory=dict)
    """host name -> its address (the root side is :attr:`gateway`)."""
    _removed: bool = field(default=False, repr=False)

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge: services jobs must reach listen here."""
        return f"{self.prefix}.1"

    def write_hosts(self, root_names: list[str]) -> None:
        """The hosts file: localhost, ``root_names`` on the gateway, each namespace host on its address."""
        lines = ["127.0.0.1 localhost", f"{self.gateway} {' '.join(root_names)}"]
        lines += [f"{address} {host}" for host, address in self.addresses.items()]
        self.hosts_file.write_text("\n".join(lines) + "\n")

    def add_host(self, host: str) -> str:
        """A namespace named for ``host`` with the next address, joined to the bridge; returns the address."""
        index = 11 + len(self.namespaces)
        ns = f"pd{self.tag}{host}"[:15]
        veth = f"v{self.tag}{index}"[:15]
        _ip("netns", "add", ns)
        self.namespaces[host] = ns
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", self.bridge, "up")
        address = f"{self.prefix}.{index}"
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        self.addresses[host] = address
        return address

    def in_host(self, host: str, command: str) -> list[str]:
        """argv running the shell ``command`` as ``host``: its namespace, hostname and the hosts file.

        ``nsenter --net`` (not ``ip netns exec``, which remounts /sys and breaks slurmd's cgroups)
        plus a private mount and UTS namespace.
        """
        inner = f"mount --bind {self.hosts_file} /etc/hosts && hostname {host} && {command}"
        net = f"--net=/run/netns/{self.namespaces[host]}"
        return ["nsenter", net, "unshare", "--mount", "--uts", "sh", "-c", inner]

    def with_hosts(self, command: str, hostname: str | None = None) -> list[str]:
        """argv running ``command`` in the root network namespace but resolving names through the hosts file."""
        if hostname:
            inner = f"mount --bind {self.hosts_file} /etc/hosts && hostname {hostname} && {command}"
            return ["unshare", "--mount", "--uts", "sh", "-c", inner]
        return ["unshare", "--mount", "sh", "-c", f"mount --bind {self.hosts_file} /etc/hosts && {command}"]

    def client_wrapper(self, bindir: Path, name: str, real: str) -> Path:
        """A ``bindir/name`` script that runs ``real`` with the hosts file (a login node that knows the cluster)."""
        bindir.mkdir(parents=True, exist_ok=True)
        path = bindir / name
        path.write_text(
            "#!/bin/sh\n"
            "# runs the real client command with this cluster's hosts file (tests only)\n"
            f"exec unshare --mount /bin/sh -c 'mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"' "
            f"sh {self.hosts_file} {real} \"$@\"\n"
        )
        path.chmod(0o755)
        return path

    def pids(self) -> list[int]:
        """Processes running in our namespaces (all started by the harness that made them)."""
        found: list[int] = []
        for ns in self.namespaces.values():
            out = _ip("netns", "pids", ns, check=False).stdout
            found += [int(p) for p in out.split() if p.isdigit() and process_alive(int(p))]
        return found

    def remove(self) -> None:
        """Kill what still runs in the namespaces, delete them and the bridge (idempotent)."""
        if self._removed:
            return
        self._removed = True
        for sig, grace in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 5.0)):  # nothing there needs to persist
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                wait_until(lambda: not self.pids(), grace, "the processes in the test namespaces to exit")
                break
            except AssertionError:
                continue
        for ns in self.namespaces.values():
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.bridge, check=False)


def make_subnet(directory: Path) -> Subnet:
    """A bridge on a ``10.233.N.0/24`` no interface uses yet; add hosts with :meth:`Subnet.add_host`."""
    used = _used_prefixes()
    free = [f"10.233.{n}" for n in range(1, 251) if f"10.233.{n}" not in used]
    if not free:
        raise RuntimeError("no free 10.233.N.0/24 for the test namespaces")
    directory.mkdir(parents=True, exist_ok=True)
    error = ""
    for _ in range(20):  # another run (or one killed earlier) may hold the name or the prefix: pick again
        prefix = random.choice(free)
        tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
        bridge = f"pdbr{tag}"
        added = _ip("link", "add", bridge, "type", "bridge", check=False)
        if added.returncode != 0:  # never remove a bridge this call did not create
            error = added.stderr.strip()
            continue
        subnet = Subnet(directory, prefix, tag, bridge, directory / "hosts")
        try:
            _ip("addr", "add", f"{subnet.gateway}/24", "dev", bridge)
            _ip("link", "set", bridge, "up")
        except subprocess.CalledProcessError as exc:
            subnet.remove()
            raise RuntimeError(f"cannot set up the test bridge {bridge}: {exc.stderr.strip()}") from exc
        return subnet
    raise RuntimeError(f"cannot create a test bridge (pdbr{os.getpid() % 10000:04d}NN): {error}")
