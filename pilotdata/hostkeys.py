"""Host-key verification shared by every SSH connection pilot-data opens (SFTP stores, SSH launchers).

Host keys are always verified against a ``known_hosts`` file: an unknown host is refused with its
SHA256 fingerprint and the ``ssh-keyscan`` line that would trust it. Callers pass the error class of
their layer (a store raises a :class:`~pilotdata.errors.StoreAuthError`, a launcher a
:class:`~pilotdata.errors.LaunchError`).
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import paramiko

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


def fingerprint(key: Any) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class RejectUnknownHost(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, raising ``error`` with the key's fingerprint and how to trust it."""

    def __init__(self, host: str, port: int, known_hosts: str, error: type[Exception], where: str = "") -> None:
        self.host, self.port, self.known_hosts, self.error = host, port, known_hosts, error
        self.where = f"{where}: " if where else ""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        missing = "" if os.path.exists(self.known_hosts) else " (that file does not exist)"
        raise self.error(
            f"{self.where}the host key of {hostname} ({key.get_name()} {fingerprint(key)}) is not in known_hosts "
            f"file {self.known_hosts}{missing}; refusing to connect to an unverified host. Check that fingerprint "
            f"with the host's administrator, then add the key: "
            f"ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts}"
        )


def verifying_client(
    host: str, port: int, known_hosts: str, error: type[Exception], where: str = ""
) -> paramiko.SSHClient:
    """A paramiko client that knows ``known_hosts`` and refuses any host not in it (not yet connected)."""
    client = paramiko.SSHClient()
    if os.path.exists(known_hosts):
        client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(RejectUnknownHost(host, port, known_hosts, error, where))
    return client
