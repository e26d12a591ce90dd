"""irods:// stores and IRODSFileSystem, against a faked iRODS session.

No iRODS server can run on these machines (see shared/TESTING.md), so this module is the one place
where a stand-in is used: :class:`FakeSession` implements exactly the python-irodsclient calls
listed in ``pilotdata.stores.irods.SESSION_CALLS`` over a temporary directory, raising the real
``irods.exception`` classes. It is not a mock library; it has no behaviour the code under test can
configure beyond what a real session does. What this proves: the filesystem logic and the error
conversion. What it cannot prove: wire behaviour of a real iRODS server.
"""

from __future__ import annotations

import datetime
import json
import shutil
import uuid
from pathlib import Path
from typing import IO, Any

import pytest
from irods import exception as irods_errors

from pilotdata.errors import StoreAuthError, StoreUnreachableError
from pilotdata.stores import InvalidStoreURLError, open_store
from pilotdata.stores.irods import SESSION_CALLS, IRODSFileSystem, IRODSStore
from tests import servers
from tests.stores.conformance import MakeStore, StoreConformance, read, write


class _Item:
    """A collection or data object as python-irodsclient returns it (the attributes we read)."""

    def __init__(self, session: FakeSession, logical: str) -> None:
        self._session, self.path = session, logical
        self.name = logical.rsplit("/", 1)[-1]
        stat = session.local(logical).stat()
        self.size = stat.st_size
        self.modify_time = datetime.datetime.fromtimestamp(stat.st_mtime, tz=datetime.timezone.utc)
        self.checksum = None

    def _children(self) -> list[Path]:
        return sorted(self._session.local(self.path).iterdir())

    @property
    def subcollections(self) -> list[_Item]:
        return [_Item(self._session, f"{self.path}/{p.name}") for p in self._children() if p.is_dir()]

    @property
    def data_objects(self) -> list[_Item]:
        return [_Item(self._session, f"{self.path}/{p.name}") for p in self._children() if p.is_file()]


class _Collections:
    def __init__(self, session: FakeSession) -> None:
        self.s = session

    def get(self, path: str) -> _Item:
        self.s.check()
        if not self.s.local(path).is_dir():
            raise irods_errors.CollectionDoesNotExist()
        return _Item(self.s, path)

    def create(self, path: str, recurse: bool = True) -> _Item:
        self.s.check()
        local = self.s.local(path)
        if local.is_file():
            raise irods_errors.CAT_NAME_EXISTS_AS_DATAOBJ()
        if not recurse and not local.parent.is_dir():
            raise irods_errors.CAT_UNKNOWN_COLLECTION()
        local.mkdir(parents=True, exist_ok=True)
        return _Item(self.s, path)

    def remove(self, path: str, recurse: bool = True, force: bool = False) -> None:
        self.s.check()
        local = self.s.local(path)
        if not local.is_dir():
            raise irods_errors.CollectionDoesNotExist()
        if recurse:
            shutil.rmtree(local)
        elif any(local.iterdir()):
            raise irods_errors.CAT_COLLECTION_NOT_EMPTY()
        else:
            local.rmdir()

    def move(self, src: str, dest: str) -> None:
        self.s.check()
        target = self.s.local(dest)
        if target.is_dir():  # like irodsclient: into an existing collection
            target = target / self.s.local(src).name
        self.s.local(src).rename(target)


class _DataObjects:
    def __init__(self, session: FakeSession) -> None:
        self.s = session

    def get(self, path: str) -> _Item:
        self.s.check()
        local = self.s.local(path)
        if not local.parent.is_dir():
            raise irods_errors.CollectionDoesNotExist()
        if not local.is_file():
            raise irods_errors.DataObjectDoesNotExist()
        return _Item(self.s, path)

    def open(self, path: str, mode: str) -> IO[bytes]:
        self.s.check()
        local = self.s.local(path)
        if local.is_dir():
            raise irods_errors.CAT_NAME_EXISTS_AS_COLLECTION()
        if not local.parent.is_dir():
            raise irods_errors.CAT_UNKNOWN_COLLECTION()
        if mode.startswith("r") and not local.is_file():
            raise irods_errors.DataObjectDoesNotExist()
        return open(local, {"r": "rb", "r+": "r+b", "w": "wb", "a": "ab"}[mode])

    def unlink(self, path: str, force: bool = False) -> None:
        self.get(path)
        self.s.local(path).unlink()

    def move(self, src: str, dest: str) -> None:
        self.get(src)
        target = self.s.local(dest)
        if target.is_dir():
            target = target / self.s.local(src).name
        self.s.local(src).rename(target)

    def copy(self, src: str, dest: str) -> None:
        self.get(src)
        shutil.copyfile(self.s.local(src), self.s.local(dest))


class FakeSession:
    """The part of ``irods.session.iRODSSession`` the store uses, over a local directory.

    ``fail`` makes every call raise that exception, as a real session does when the server rejects
    the login or cannot be reached.
    """

    def __init__(self, directory: Path, fail: BaseException | None = None) -> None:
        self.directory, self.fail = directory, fail
        self.collections = _Collections(self)
        self.data_objects = _DataObjects(self)

    def check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def local(self, logical: str) -> Path:
        assert logical.startswith("/") and ".." not in logical.split("/"), logical
        return self.directory / logical.lstrip("/")


@pytest.fixture
def session(tmp_path: Path) -> FakeSession:
    fake = FakeSession(tmp_path / "irods")
    (tmp_path / "irods" / "tempZone" / "home" / "alice").mkdir(parents=True)
    return fake


@pytest.fixture
def secret_options(session: FakeSession) -> dict[str, Any]:
    """What another process supplies itself: the session (or the password to make one)."""
    return {"session": session, "password": "not-stored-" + uuid.uuid4().hex}


@pytest.fixture
def make_store(secret_options: dict[str, Any]) -> MakeStore:
    def make(size: int | None = None) -> Any:
        return open_store(
            f"irods://tempZone/home/alice/pd-{uuid.uuid4().hex[:8]}", size=size, labels={"site": "irods"},
            storage_options={"user": "alice", **secret_options},
        )

    return make


class TestIRODSStoreConformance(StoreConformance):
    """The shared store behaviour over the faked session."""


def test_fake_provides_exactly_the_documented_calls() -> None:
    managers = (("collections", _Collections), ("data_objects", _DataObjects))
    provided = {f"{manager}.{name}" for manager, cls in managers for name in vars(cls) if name[0] != "_"}
    assert provided == set(SESSION_CALLS)


def test_url_forms(session: FakeSession) -> None:
    store = open_store("irods://tempZone/home/alice//coll/", storage_options={"session": session})
    assert isinstance(store, IRODSStore)
    assert (store.scheme, store.root, store.url) == ("irods", "/tempZone/home/alice/coll",
                                                     "irods://tempZone/home/alice/coll")


@pytest.mark.parametrize(("url", "options"), [
    ("irods:///home/alice", {}), ("irods://alice@tempZone/home", {}), ("irods://host:1247/home", {}),
    ("irods://tempZone/home/alice", {"zone": "otherZone"}),
])
def test_bad_urls(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidStoreURLError):
        open_store(url, storage_options=options)


def test_record_and_messages_hold_no_password(session: FakeSession, monkeypatch: pytest.MonkeyPatch) -> None:
    password = "pw-" + uuid.uuid4().hex
    monkeypatch.setenv("PDATA_IRODS_PASSWORD", password)
    store = open_store("irods://tempZone/home/alice/pd", storage_options={
        "session": session, "host": "127.0.0.1", "user": "alice"})
    assert store.public_options() == {"host": "127.0.0.1", "user": "alice"}
    assert password not in json.dumps(store.record()) + repr(store)
    assert store.fs.session is session  # the password was read from the environment, a session was given


def test_filesystem_operations(session: FakeSession) -> None:
    fs = IRODSFileSystem(session=session, skip_instance_cache=True)
    base = "/tempZone/home/alice"
    fs.makedirs(f"{base}/a/b", exist_ok=False)
    with pytest.raises(FileExistsError):
        fs.makedirs(f"{base}/a/b")
    fs.makedirs(f"{base}/a/b", exist_ok=True)
    with pytest.raises(FileExistsError):
        fs.mkdir(f"{base}/a")
    with fs.open("irods://tempZone/home/alice/a/b/f.bin", "wb") as handle:
        for _ in range(4):
            handle.write(b"x" * 65536)
    with fs.open(f"{base}/a/b/f.bin", "rb") as handle:
        chunks = iter(lambda: handle.read(10000), b"")
        assert sum(len(chunk) for chunk in chunks) == 4 * 65536
    with fs.open(f"{base}/a/b/f.bin", "ab") as handle:
        handle.write(b"tail")
    assert fs.info(f"{base}/a/b/f.bin")["size"] == 4 * 65536 + 4
    with pytest.raises(FileExistsError):
        fs.open(f"{base}/a/b/f.bin", "xb")
    with pytest.raises(ValueError, match="unsupported mode"):
        fs.open(f"{base}/a/b/f.bin", "rb+x")
    assert fs.ls(f"{base}/a/b", detail=False) == [f"{base}/a/b/f.bin"]
    assert fs.ls(f"{base}/a/b/f.bin", detail=False) == [f"{base}/a/b/f.bin"]
    assert fs.info(base)["type"] == "directory" and fs.info("/")["type"] == "directory"
    assert fs.cat_file(f"{base}/a/b/f.bin")[-4:] == b"tail"

    fs.cp_file(f"{base}/a/b/f.bin", f"{base}/a/copy.bin")
    fs.mv(f"{base}/a/copy.bin", f"{base}/a/moved.bin")
    fs.mv(f"{base}/a/b", f"{base}/c")
    assert sorted(fs.ls(f"{base}/a", detail=False) + fs.ls(f"{base}/c", detail=False)) == [
        f"{base}/a/moved.bin", f"{base}/c/f.bin"]
    with pytest.raises(OSError, match="not empty"):
        fs.rmdir(f"{base}/c")
    with pytest.raises(IsADirectoryError):
        fs.rm(f"{base}/c")
    fs.rm(f"{base}/c", recursive=True)
    fs.rm(f"{base}/a/moved.bin")
    fs.rmdir(f"{base}/a")
    assert fs.ls(base, detail=False) == []
    assert fs.modified(base) is not None
    for missing in (fs.info, fs.ls, lambda p: fs.open(p, "rb"), fs.rm):
        with pytest.raises(FileNotFoundError):
            missing(f"{base}/nothing/here")
    fs.pipe_file(f"{base}/plain.txt", b"p")
    with pytest.raises(FileExistsError):
        fs.mkdir(f"{base}/plain.txt")
    with pytest.raises(FileExistsError):
        fs.makedirs(f"{base}/plain.txt", exist_ok=True)
    with pytest.raises(NotImplementedError):
        fs.open(f"{base}/t", "wb", autocommit=False)


def test_rejected_login_is_an_auth_error(tmp_path: Path) -> None:
    session = FakeSession(tmp_path, fail=irods_errors.CAT_INVALID_AUTHENTICATION("rejected"))
    store = open_store("irods://tempZone/home/alice/pd", storage_options={"session": session})
    for operation in (store.ping, store.files, lambda: write(store, "f", b"x")):
        with pytest.raises(StoreAuthError, match="irods://tempZone/home/alice/pd"):
            operation()


def test_network_failure_is_unreachable(tmp_path: Path) -> None:
    session = FakeSession(tmp_path, fail=irods_errors.NetworkException("Could not connect"))
    with pytest.raises(StoreUnreachableError, match="irods://tempZone/home/alice/pd"):
        open_store("irods://tempZone/home/alice/pd", storage_options={"session": session}).ping()


def test_real_irodsclient_against_a_closed_port() -> None:
    """No fake here: python-irodsclient itself fails to connect, and that is converted."""
    store = open_store("irods://tempZone/home/alice/pd", storage_options={
        "host": "127.0.0.1", "port": servers.free_port(), "user": "alice", "password": "pw-never-shown"})
    with pytest.raises(StoreUnreachableError) as caught:
        store.ping()
    assert "pw-never-shown" not in str(caught.value)


def test_no_connection_details_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(StoreAuthError, match=r"irods_environment\.json"):
        open_store("irods://tempZone/home/alice/pd").ping()


def test_store_roundtrip_through_the_store_api(make_store: MakeStore) -> None:
    store = make_store()
    write(store, "x/y", b"data")
    assert read(store, "x/y") == b"data" and store.files() == {"x/y": 4}
