"""file:// stores and bare paths on the local filesystem."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from pilotdata.errors import DescriptionError, UnsafePathError
from pilotdata.stores import InvalidStoreURLError, open_store
from pilotdata.stores.file import FileStore
from tests.stores.conformance import MakeStore, StoreConformance, write


@pytest.fixture
def make_store(tmp_path: Path) -> MakeStore:
    def make(size: int | None = None) -> Any:
        return open_store(f"file://{tmp_path}/pd-{uuid.uuid4().hex[:8]}", size=size, labels={"site": "local"})

    return make


@pytest.fixture
def secret_options() -> dict[str, Any]:
    return {}


class TestFileStoreConformance(StoreConformance):
    """The shared store behaviour on file://."""


def test_url_forms_give_one_absolute_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    expected = (tmp_path / "pd").resolve().as_posix()
    for url in ("pd", "./pd", f"{tmp_path}/pd", f"file://{tmp_path}/pd", f"file://localhost{tmp_path}/pd",
                "file:pd", Path("pd")):
        store = open_store(url)
        assert isinstance(store, FileStore)
        assert (store.scheme, store.root, store.url) == ("file", expected, f"file://{expected}")


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert open_store("~/pd").root == (tmp_path / "pd").resolve().as_posix()


@pytest.mark.parametrize("url", ["file://otherhost/data", "file:///tmp/x?y=1", "", "   "])
def test_bad_file_urls(url: str) -> None:
    with pytest.raises(InvalidStoreURLError):
        open_store(url)


@pytest.mark.parametrize("size", [-1, 1.5, True, "10"])
def test_bad_size_names_the_field(tmp_path: Path, size: Any) -> None:
    with pytest.raises(DescriptionError) as caught:
        open_store(tmp_path, size=size)
    assert caught.value.field == "size"


def test_unsafe_name_writes_nothing_outside_the_root(tmp_path: Path) -> None:
    store = open_store(tmp_path / "pd")
    store.makedirs()
    before = sorted(p.name for p in tmp_path.iterdir())
    for name in ("../escaped", "../../escaped", "/tmp/escaped-" + uuid.uuid4().hex):
        with pytest.raises(UnsafePathError):
            write(store, name, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert list((tmp_path / "pd").iterdir()) == []


def test_same_local_fs_for_two_dirs_on_one_device(tmp_path: Path) -> None:
    one, two = open_store(tmp_path / "one"), open_store(tmp_path / "two" / "not-yet-created")
    assert one.same_local_fs(two) and two.same_local_fs(one)
    # and the fast path this promises really works: a hard link between the two roots
    write(one, "f", b"data")
    two.makedirs()
    os.link(one.path("f"), two.path("f"))
    assert two.files() == {"f": 4}


def test_same_local_fs_false_across_devices_and_schemes(tmp_path: Path) -> None:
    local = open_store(tmp_path / "pd")
    if os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev:
        assert not local.same_local_fs(open_store("/dev/shm/pd-other"))
    s3 = open_store("s3://bucket/prefix", storage_options={"endpoint_url": "http://127.0.0.1:9"})
    assert not local.same_local_fs(s3)
    assert not local.same_s3_endpoint(s3)


def test_labels_name_and_record(tmp_path: Path) -> None:
    store = open_store(tmp_path, labels={"affinity_machine_label": "m1"}, size=5, name="pd-1")
    assert (store.labels, store.size, store.name) == ({"affinity_machine_label": "m1"}, 5, "pd-1")
    assert store.record() == {
        "url": f"file://{tmp_path.resolve().as_posix()}",
        "labels": {"affinity_machine_label": "m1"},
        "size": 5,
        "storage_options": {},
    }
