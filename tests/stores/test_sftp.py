"""ssh:// and sftp:// stores against a real OpenSSH sshd on loopback, host keys verified."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pilotdata.errors import StoreAuthError, StoreUnreachableError, UnsafePathError
from pilotdata.stores import InvalidStoreURLError, open_store
from pilotdata.stores.sftp import SFTPStore, UnknownHostKeyError
from tests import servers
from tests.stores.conformance import MakeStore, StoreConformance, read, write


@pytest.fixture
def make_store(sshd_server: servers.SshServer, tmp_path: Path) -> MakeStore:
    def make(size: int | None = None) -> Any:
        root = tmp_path / f"pd-{uuid.uuid4().hex[:8]}"
        return open_store(
            f"ssh://127.0.0.1{root}", size=size, labels={"site": "sshd"},
            storage_options=sshd_server.storage_options(),
        )

    return make


@pytest.fixture
def secret_options() -> dict[str, Any]:
    return {}


class TestSFTPStoreConformance(StoreConformance):
    """The shared store behaviour over a real sshd."""


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def test_url_forms(sshd_server: servers.SshServer) -> None:
    store = open_store(f"sftp://root@127.0.0.1:{sshd_server.port}/srv//pd/", storage_options={
        "key_filename": str(sshd_server.key_file), "known_hosts": str(sshd_server.known_hosts)})
    assert isinstance(store, SFTPStore)
    assert (store.scheme, store.root, store.url) == ("sftp", "/srv/pd", f"sftp://root@127.0.0.1:{sshd_server.port}/srv/pd")
    assert store.public_options() == {
        "key_filename": str(sshd_server.key_file), "known_hosts": str(sshd_server.known_hosts),
        "username": "root", "port": sshd_server.port,
    }
    store.ping()


@pytest.mark.parametrize(
    ("url", "options"),
    [("ssh:///data", {}), ("ssh://host", {}), ("ssh://host/data?x=1", {}), ("ssh://host:notaport/d", {}),
     ("ssh://alice@host/d", {"username": "bob"}), ("ssh://host/d", {"host_key_policy": "auto_add"})],
)
def test_bad_urls_and_options(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidStoreURLError):
        open_store(url, storage_options=options)


def test_files_land_on_the_server_and_unsafe_names_do_not(
    sshd_server: servers.SshServer, tmp_path: Path
) -> None:
    root = tmp_path / "pd"
    store = open_store(f"ssh://127.0.0.1{root}", storage_options=sshd_server.storage_options())
    write(store, "in/side.txt", b"remote bytes")
    assert (root / "in" / "side.txt").read_bytes() == b"remote bytes"
    before = sorted(p.name for p in tmp_path.iterdir())
    for name in ("../outside.txt", "in/../../outside.txt"):
        with pytest.raises(UnsafePathError):
            write(store, name, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_wrong_key_is_an_auth_error(sshd_server: servers.SshServer, tmp_path: Path) -> None:
    options = {**sshd_server.storage_options(), "key_filename": str(_keygen(tmp_path / "wrong")),
               "look_for_keys": False, "allow_agent": False}
    store = open_store(f"ssh://127.0.0.1{tmp_path}/pd", storage_options=options)
    with pytest.raises(StoreAuthError) as caught:
        store.ping()
    assert store.url in str(caught.value) and "authentication failed" in str(caught.value)
    with pytest.raises(StoreAuthError):  # every operation, not only ping
        store.files()


def test_missing_key_file_is_an_auth_error(sshd_server: servers.SshServer, tmp_path: Path) -> None:
    options = {**sshd_server.storage_options(), "key_filename": str(tmp_path / "no-such-key")}
    with pytest.raises(StoreAuthError, match="no-such-key does not exist"):
        open_store(f"ssh://127.0.0.1{tmp_path}/pd", storage_options=options).ping()


def test_unknown_host_key_is_refused_with_instructions(
    sshd_server: servers.SshServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    options = {**sshd_server.storage_options(), "known_hosts": str(empty)}
    store = open_store(f"ssh://127.0.0.1{tmp_path}/pd", storage_options=options)
    with pytest.raises(UnknownHostKeyError) as caught:
        store.ping()
    message = str(caught.value)
    assert isinstance(caught.value, StoreAuthError)
    assert f"ssh-keyscan -p {sshd_server.port} 127.0.0.1 >> {empty}" in message
    assert "SHA256:" in message and f"[127.0.0.1]:{sshd_server.port}" in message
    assert empty.read_text() == ""  # nothing was added behind the user's back


def test_absent_known_hosts_file_is_refused(sshd_server: servers.SshServer, tmp_path: Path) -> None:
    options = {**sshd_server.storage_options(), "known_hosts": str(tmp_path / "absent")}
    with pytest.raises(UnknownHostKeyError, match="that file does not exist"):
        open_store(f"ssh://127.0.0.1{tmp_path}/pd", storage_options=options).ping()


def test_changed_host_key_is_refused(sshd_server: servers.SshServer, tmp_path: Path) -> None:
    other = _keygen(tmp_path / "impostor")
    kind, blob = Path(f"{other}.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd_server.port} {kind} {blob}\n")
    options = {**sshd_server.storage_options(), "known_hosts": str(known)}
    with pytest.raises(StoreAuthError, match="does not match"):
        open_store(f"ssh://127.0.0.1{tmp_path}/pd", storage_options=options).ping()


def test_closed_port_is_unreachable(sshd_server: servers.SshServer, tmp_path: Path) -> None:
    options = {**sshd_server.storage_options(), "port": servers.free_port()}
    store = open_store(f"ssh://127.0.0.1{tmp_path}/pd", storage_options=options)
    with pytest.raises(StoreUnreachableError) as caught:
        store.ping()
    assert store.url in str(caught.value)


def test_password_never_leaves_memory(sshd_server: servers.SshServer, tmp_path: Path) -> None:
    secret = "hunter2-" + uuid.uuid4().hex
    options = {k: v for k, v in sshd_server.storage_options().items() if k != "key_filename"}
    store = open_store(f"ssh://root:{secret}@127.0.0.1{tmp_path}/pd",
                       storage_options={**options, "look_for_keys": False, "allow_agent": False,
                                        "passphrase": secret + "-pp"})
    with pytest.raises(StoreAuthError) as caught:  # sshd allows keys only
        store.ping()
    shown = str(caught.value) + store.url + repr(store) + json.dumps(store.record())
    assert secret not in shown
    assert store.url == f"ssh://root@127.0.0.1{tmp_path}/pd"
    assert "password" not in store.public_options() and "passphrase" not in store.public_options()


def test_password_from_environment_is_used_not_stored(
    sshd_server: servers.SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PDATA_SSH_PASSPHRASE", "from-env-" + uuid.uuid4().hex)
    store = open_store(f"ssh://127.0.0.1{tmp_path}/pd", storage_options=sshd_server.storage_options())
    assert "passphrase" not in json.dumps(store.record())
    write(store, "ok", b"unencrypted key still works")  # the passphrase is offered, not required
    assert read(store, "ok") == b"unencrypted key still works"


@pytest.mark.timeout(120)
def test_one_store_shared_by_many_threads(sshd_server: servers.SshServer, tmp_path: Path) -> None:
    """paramiko deadlocks on concurrent requests over one SFTP channel; the store's fs must not.

    More threads than sshd's default MaxSessions (10), so some threads need their own connection.
    """
    store = open_store(f"ssh://127.0.0.1{tmp_path}/pd", storage_options=sshd_server.storage_options())
    payloads = {f"d{i % 3}/f{i}": os.urandom(100_000 + i) for i in range(36)}

    def roundtrip(name: str) -> bool:
        write(store, name, payloads[name])
        return read(store, name) == payloads[name]

    with ThreadPoolExecutor(max_workers=14) as pool:
        assert all(pool.map(roundtrip, payloads))
    assert store.files() == {name: len(data) for name, data in payloads.items()}
