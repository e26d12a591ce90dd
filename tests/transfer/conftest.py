"""Fixtures for the transfer engine tests: real local, SFTP (sshd) and S3 (moto_server) filesystems.

``Site`` is one place files can live: an fsspec filesystem and a root directory there. SFTP
connections verify the server's host key against the fixture's known_hosts (paramiko
``RejectPolicy``); fsspec's SFTPFileSystem would accept any key, hence the small subclass.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paramiko
import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.sftp import SFTPFileSystem

from tests import servers
from transfer import FileEntry

KINDS = ("file", "sftp", "s3")


class KnownHostsSFTP(SFTPFileSystem):  # type: ignore[misc]
    """SFTPFileSystem that only talks to servers whose host key is in ``known_hosts``."""

    cachable = False

    def __init__(self, host: str, known_hosts: str, **ssh_kwargs: Any) -> None:
        self.known_hosts = known_hosts
        super().__init__(host, **ssh_kwargs)

    def _connect(self) -> None:
        client = paramiko.SSHClient()
        client.load_host_keys(self.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(self.host, **self.ssh_kwargs)
        self.client = client
        self.ftp = client.open_sftp()


def sftp_fs(server: servers.SshServer, **extra: Any) -> KnownHostsSFTP:
    """A host-key-checking SFTP filesystem on the test sshd (``extra``: more paramiko connect options)."""
    return KnownHostsSFTP(
        server.host, known_hosts=str(server.known_hosts), port=server.port, username=server.user,
        key_filename=str(server.key_file), look_for_keys=False, allow_agent=False, **extra,
    )


def s3_fs(server: servers.MotoServer) -> Any:
    """A fresh s3fs filesystem on the test moto_server."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options())


@dataclass
class Site:
    """A root on a filesystem: where the test puts or expects files."""

    kind: str
    fs: Any
    root: str
    local_dir: Path | None = None
    """The same directory on the local disk (file and sftp sites; the sshd is this machine)."""
    spec: dict[str, Any] = field(default_factory=dict)
    """How a child process reaches this site (see ``tests/transfer/_child.py``)."""

    def write(self, rel: str, data: bytes) -> None:
        """Put a file (parents created)."""
        path = f"{self.root}/{rel}"
        if self.kind != "s3":
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(path, "wb") as f:
            f.write(data)

    def read(self, rel: str) -> bytes:
        """A file's bytes (from the local disk for file and sftp sites: fsspec's SFTP reads are slow)."""
        if self.local_dir is not None:
            return (self.local_dir / rel).read_bytes()
        self.fs.invalidate_cache()
        return bytes(self.fs.cat_file(f"{self.root}/{rel}"))

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` is visible."""
        self.fs.invalidate_cache()
        return bool(self.fs.exists(f"{self.root}/{rel}"))

    def listing(self) -> list[str]:
        """Every visible file under the root (relative names, sorted), part files included."""
        self.fs.invalidate_cache()
        base = self.fs._strip_protocol(self.root).rstrip("/")
        try:
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return []
        return sorted(p[len(base):].lstrip("/") for p in found)


class SiteFactory(Protocol):
    """What the ``site_factory`` fixture returns: ``site_factory(kind, name="site")`` -> a fresh site."""

    def __call__(self, kind: str, name: str = "site") -> Site: ...


def make_site(kind: str, tmp_path: Path, request: pytest.FixtureRequest, name: str = "site") -> Site:
    """A fresh, empty site of ``kind``."""
    if kind == "file":
        d = tmp_path / name
        d.mkdir()
        return Site(kind, LocalFileSystem(), str(d), d, {"kind": "file", "root": str(d)})
    if kind == "sftp":
        server = request.getfixturevalue("sshd_server")
        d = tmp_path / name
        d.mkdir()
        fs = sftp_fs(server)
        request.addfinalizer(fs.client.close)
        ssh = {"host": server.host, "port": server.port, "user": server.user, "key_file": str(server.key_file),
               "known_hosts": str(server.known_hosts)}
        return Site(kind, fs, str(d), d, {"kind": "sftp", "root": str(d), "ssh": ssh})
    if kind == "s3":
        server = request.getfixturevalue("moto_server")
        fs = s3_fs(server)
        bucket = "tr-" + uuid.uuid4().hex[:12]
        fs.mkdir(bucket)
        root = f"{bucket}/{name}"
        return Site(kind, fs, root, None, {"kind": "s3", "root": root, "s3": server.storage_options()})
    raise ValueError(kind)


@pytest.fixture
def site_factory(tmp_path: Path, request: pytest.FixtureRequest) -> SiteFactory:
    """``site_factory(kind, name)`` -> a fresh site."""

    def make(kind: str, name: str = "site") -> Site:
        return make_site(kind, tmp_path, request, name)

    return make


@pytest.fixture(autouse=True)
def _no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """botocore must not pick up the developer's credentials or config."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def dataset(seed: int, count: int, *, big: int = 0) -> dict[str, bytes]:
    """``count`` files of 0..200 KB in nested directories (plus one of ``big`` bytes)."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for i in range(count):
        depth = rng.randint(0, 3)
        dirs = "/".join(f"d{rng.randint(0, 2)}" for _ in range(depth))
        name = f"{dirs}/f{i}.bin" if dirs else f"f{i}.bin"
        files[name] = rng.randbytes(rng.choice([0, 1, 100, 4096, 65536, 200_000]))
    if big:
        files["big/blob.bin"] = rng.randbytes(big)
    return files


def manifest(files: dict[str, bytes]) -> list[FileEntry]:
    """The manifest of ``files``."""
    return [FileEntry(name, len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()]


def populate(site: Site, files: dict[str, bytes]) -> None:
    """Write ``files`` into ``site`` (directly on disk for local-backed sites: faster)."""
    for name, data in files.items():
        if site.local_dir is not None:
            p = site.local_dir / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        else:
            site.write(name, data)


@pytest.fixture
def cwd_repo() -> Iterator[Path]:
    """The repository root (for child processes that import ``tests`` and ``transfer``)."""
    yield Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """Environment for child processes: the repository on PYTHONPATH."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
