"""Two "sites" on one machine for benchmarks: a network namespace behind a throttled veth link.

Owns the testbed of ``benchmarks/locality.py``:

* site-a is the root network namespace; site-b is a namespace of its own (``ip netns add``), joined
  to site-a by a veth pair whose two ends get the two addresses of a private ``/30`` chosen in
  ``10.231.0.0/24`` (one not already on this host; a lock file keeps concurrent runs apart);
* both ends of the pair get a ``tbf`` qdisc at the wide-area rate, so traffic between the sites is
  throttled in each direction (``netem`` is not built into this kernel; ``tbf`` shapes the rate but
  adds no propagation delay);
* an sshd per site, listening only on that site's veth address (site-b's runs inside the namespace),
  with one user key authorised for root and one ``known_hosts`` file holding both host keys;
* a password-protected redis-server bound to loopback and site-a's veth address, so agents inside
  site-b reach coordination across the link.

Bytes crossing the link are read from the kernel's counters of site-a's veth end
(``/sys/class/net/<veth>/statistics``): measured, not estimated. Nothing here contacts any address
but loopback and the two ends of its own veth pair. :meth:`TwoSites.close` removes everything
(servers by PID, processes left in the namespace by PID, the link, the namespace), also after errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import servers

SUBNET = ipaddress.IPv4Network("10.231.0.0/24")
"""The private range the /30 of a link is taken from (only between our own namespaces)."""
_LOCK_FILE = Path("/tmp/pdata-bench-netns.lock")
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_RATE_UNITS = {"BIT": 1, "KBIT": 10**3, "MBIT": 10**6, "GBIT": 10**9}


class SetupError(RuntimeError):
    """The machine cannot host the two sites (not root, no ``ip netns``, no ``tbf``); says why."""


def parse_size(text: str) -> int:
    """Bytes of ``"200MB"``, ``"1GB"``, ``"64KiB"``, ``"4096"`` (decimal units, and binary ``*iB``)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"size {text!r}: expected a number with B, KB, MB, GB, KiB, MiB or GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_rate(text: str) -> int:
    """Bits per second of a tc-style rate ``"200mbit"``, ``"1gbit"``, ``"500kbit"``."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*", text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _RATE_UNITS:
        raise ValueError(f"rate {text!r}: expected a number with bit, kbit, mbit or gbit (e.g. 200mbit)")
    bits = int(float(match.group(1)) * _RATE_UNITS[unit])
    if bits < 8000:
        raise ValueError(f"rate {text!r}: at least 8kbit")
    return bits


def fmt_bytes(n: float) -> str:
    """``1.23 GB`` style, decimal units."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def _run(argv: list[str], what: str) -> str:
    """Run a command; :class:`SetupError` naming ``what`` and its stderr if it fails."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"{what}: {' '.join(argv)}: {exc}") from exc
    if proc.returncode != 0:
        raise SetupError(f"{what}: {' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def check_prerequisites() -> None:
    """Refuse early, with the reason, when the two sites cannot be built here."""
    if not sys.platform.startswith("linux"):
        raise SetupError("needs Linux network namespaces (ip netns); this is " + sys.platform)
    if os.geteuid() != 0:
        raise SetupError("needs root for ip netns, veth pairs and tc; run it as root (or in a root container)")
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2")):
        if shutil.which(tool) is None:
            raise SetupError(f"`{tool}` not found: install the Debian package {package}")
    _run(["ip", "netns", "list"], "`ip netns` is unavailable")
    servers.require_binary("sshd", "openssh-server")
    servers.require_binary("ssh", "openssh-client")
    servers.require_binary("redis-server", "redis-server")


def _used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Networks of this namespace's IPv4 addresses and routes (a new /30 must not overlap them)."""
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in _run(["ip", "-4", "-o", "addr", "show"], "listing addresses").splitlines():
        match = re.search(r"inet ([0-9./]+)", line)
        if match:
            nets.append(ipaddress.ip_interface(match.group(1)).network)
    for line in _run(["ip", "-4", "route", "show", "table", "all"], "listing routes").splitlines():
        first = line.split()[0] if line.split() else ""
        if first in ("broadcast", "local", "unicast") and len(line.split()) > 1:
            first = line.split()[1]
        with contextlib.suppress(ValueError):
            if first != "default":
                nets.append(ipaddress.ip_network(first, strict=False))
    return nets


def _rate_to_burst(rate_bits: int) -> int:
    """tbf bucket size: at least 256 KiB (GSO packets on a veth reach 64 KiB), else 20 ms of rate."""
    return max(256 * 1024, rate_bits // 8 // 50)


@dataclass
class WanLink:
    """A veth pair between this namespace (site-a) and ``netns`` (site-b), both directions throttled."""

    netns: str
    veth_a: str
    veth_b: str
    ip_a: str
    ip_b: str
    rate_bits: int
    _created: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def create(cls, rate_bits: int) -> WanLink:
        """Make the namespace, the pair, the addresses and the qdiscs; undone on any failure."""
        tag = f"{os.getpid() % 100000}"
        link = cls(f"pdbench-{tag}", f"pdb{tag}a", f"pdb{tag}b", "", "", rate_bits)
        try:
            link._build()
        except BaseException:
            link.destroy()
            raise
        return link

    def _build(self) -> None:
        _LOCK_FILE.touch(exist_ok=True)
        with open(_LOCK_FILE) as lock:  # two runs must not pick the same /30
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = _used_networks()
            candidates = list(SUBNET.subnets(new_prefix=30))
            start = os.getpid() % len(candidates)
            for block in candidates[start:] + candidates[:start]:
                if not any(block.overlaps(net) for net in used):
                    break
            else:
                raise SetupError(f"no free /30 left in {SUBNET} on this host")
            hosts = list(block.hosts())
            self.ip_a, self.ip_b = str(hosts[0]), str(hosts[1])
            _run(["ip", "netns", "add", self.netns], "`ip netns add` failed (ip netns unavailable?)")
            self._created.append("netns")
            _run(["ip", "link", "add", self.veth_a, "type", "veth", "peer", "name", self.veth_b,
                  "netns", self.netns], "creating the veth pair")
            self._created.append("veth")
            _run(["ip", "addr", "add", f"{self.ip_a}/30", "dev", self.veth_a], "addressing site-a")
            _run(["ip", "link", "set", self.veth_a, "up"], "bringing site-a's end up")
        inside = ["ip", "netns", "exec", self.netns]
        _run([*inside, "ip", "addr", "add", f"{self.ip_b}/30", "dev", self.veth_b], "addressing site-b")
        _run([*inside, "ip", "link", "set", self.veth_b, "up"], "bringing site-b's end up")
        _run([*inside, "ip", "link", "set", "lo", "up"], "bringing site-b's loopback up")
        burst = _rate_to_burst(self.rate_bits)
        shape = ["root", "tbf", "rate", f"{self.rate_bits}bit", "burst", str(burst), "latency", "50ms"]
        try:
            _run(["tc", "qdisc", "add", "dev", self.veth_a, *shape], "tc tbf on site-a's end")
            _run([*inside, "tc", "qdisc", "add", "dev", self.veth_b, *shape], "tc tbf on site-b's end")
        except SetupError as exc:
            raise SetupError(f"{exc} (the kernel needs CONFIG_NET_SCH_TBF)") from exc

    def inside(self, argv: list[str]) -> list[str]:
        """``argv`` run inside site-b's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def counters(self) -> tuple[int, int]:
        """``(bytes site-a -> site-b, bytes site-b -> site-a)`` so far, from site-a's veth counters."""
        stats = Path("/sys/class/net") / self.veth_a / "statistics"
        return int((stats / "tx_bytes").read_text()), int((stats / "rx_bytes").read_text())

    def namespace_pids(self) -> list[int]:
        """PIDs of the processes running in site-b's namespace (all started by this benchmark)."""
        if "netns" not in self._created:
            return []
        proc = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False)
        return [int(p) for p in proc.stdout.split() if p.isdigit()]

    def destroy(self) -> None:
        """Stop what still runs in the namespace (by PID), delete the pair (and its qdiscs) and the namespace."""
        pids = self.namespace_pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if _alive(p)]
                if pids:
                    time.sleep(0.05)
            if not pids:
                break
        if "veth" in self._created:
            subprocess.run(["ip", "link", "del", self.veth_a], capture_output=True, check=False)
        if "netns" in self._created:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
        self._created.clear()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has ended
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class SiteSshd:
    """An sshd listening on one site's veth address."""

    host: str
    port: int
    directory: Path
    host_public_key: str

    def stop(self) -> None:
        """Stop it by the PID in its pidfile, and its sessions (a client at site-b cannot close its own once
        the namespace is gone)."""
        servers.kill_server_and_sessions(self.directory / "sshd.pid")


def start_site_sshd(directory: Path, host: str, user_public_key: str, netns: str | None = None) -> SiteSshd:
    """sshd on ``host`` (inside ``netns`` if given) with its own host key; root logs in with the user key.

    The config is the recipe of ``tests/servers.start_sshd`` with ``ListenAddress`` set to ``host``.
    """
    sshd = servers.require_binary("sshd", "openssh-server")
    keygen = servers.require_binary("ssh-keygen", "openssh-client")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    host_key = directory / "host_ed25519"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    auth_dir = directory / "authorized_keys"
    auth_dir.mkdir(exist_ok=True)
    (auth_dir / "root").write_text(user_public_key)
    port = _free_port(host) if netns is None else 22022  # nothing else listens in a namespace we just made
    config = directory / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress {host}
HostKey {host_key}
PidFile {directory}/sshd.pid
AuthorizedKeysFile {auth_dir}/%u
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 32
MaxStartups 64:30:128
ClientAliveInterval 15
ClientAliveCountMax 4
AcceptEnv PDATA_*
Subsystem sftp internal-sftp
"""
    )
    argv = [sshd, "-f", str(config), "-E", str(directory / "sshd.log")]
    subprocess.run(["ip", "netns", "exec", netns, *argv] if netns else argv, check=True)
    servers.wait_until(lambda: _port_open(host, port), 10, f"sshd on {host}:{port}")
    pub = (directory / "host_ed25519.pub").read_text().split()
    return SiteSshd(host, port, directory, f"{pub[0]} {pub[1]}")


@dataclass
class TwoSites:
    """The whole testbed: link, an sshd per site, redis reachable from both; see the module docstring."""

    directory: Path
    link: WanLink
    sshd_a: SiteSshd
    sshd_b: SiteSshd
    redis: servers.RedisServer
    user_key: Path
    known_hosts: Path

    @classmethod
    def start(cls, directory: Path, rate_bits: int) -> TwoSites:
        """Build everything (call :func:`check_prerequisites` first); partial set-ups are undone."""
        check_prerequisites()
        directory = directory.resolve()
        directory.mkdir(parents=True, exist_ok=True)
        link = WanLink.create(rate_bits)
        started: list[servers.RedisServer | SiteSshd] = []
        try:
            keygen = servers.require_binary("ssh-keygen", "openssh-client")
            user_key = directory / "user_ed25519"
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(user_key)], check=True)
            user_pub = (directory / "user_ed25519.pub").read_text()
            sshd_a = start_site_sshd(directory / "sshd-a", link.ip_a, user_pub)
            started.append(sshd_a)
            sshd_b = start_site_sshd(directory / "sshd-b", link.ip_b, user_pub, netns=link.netns)
            started.append(sshd_b)
            known_hosts = directory / "known_hosts"
            known_hosts.write_text("".join(f"[{s.host}]:{s.port} {s.host_public_key}\n" for s in (sshd_a, sshd_b)))
            redis = servers.start_redis(directory / "redis", password=secrets.token_hex(16),
                                        extra=["--bind", f"127.0.0.1 {link.ip_a}"])
            started.append(redis)
            servers.wait_until(lambda: _port_open(link.ip_a, redis.port), 10, "redis-server on site-a's address")
        except BaseException:
            for server in reversed(started):
                server.stop()
            link.destroy()
            raise
        return cls(directory, link, sshd_a, sshd_b, redis, user_key, known_hosts)

    @property
    def coordination_url(self) -> str:
        """Redis URL on site-a's address (holds the password: give it to agents through env only)."""
        return f"redis://:{self.redis.password}@{self.link.ip_a}:{self.redis.port}/0"

    def ssh_options(self) -> dict[str, str]:
        """Launcher / SFTP-store options: the user key and the known_hosts file with both host keys."""
        return {"key_filename": str(self.user_key), "known_hosts": str(self.known_hosts)}

    def close(self) -> None:
        """Stop redis and both sshds, then remove the link and the namespace."""
        for server in (self.redis, self.sshd_b, self.sshd_a):
            with contextlib.suppress(Exception):
                server.stop()
        self.link.destroy()
