"""The behaviour every PilotData store backend shares, written once.

A backend's test module subclasses :class:`StoreConformance` and provides two fixtures:

``make_store``      ``make_store(size=None) -> Store`` on a fresh, not yet existing root
``secret_options``  the secret storage options that store was opened with (may be empty)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from pilotdata.errors import QuotaExceededError, UnsafePathError
from pilotdata.stores import Store, store_from_record
from pilotdata.stores.base import is_secret_option

MakeStore = Callable[..., Store]

UNSAFE_NAMES = [
    "", ".", "./", "..", "../x", "a/../../x", "a/..", "./../x", "/etc/passwd", "//x", "a\x00b", "a\\..\\b",
    "..\\x", "C:/x", "c:x", "a/\nb", "x\x7f",
]


def write(store: Store, rel: str, data: bytes) -> None:
    """Write ``data`` to ``rel`` through the store."""
    with store.open(rel, "wb") as handle:
        handle.write(data)


def read(store: Store, rel: str) -> bytes:
    """Read ``rel`` back through the store."""
    with store.open(rel, "rb") as handle:
        data: bytes = handle.read()
    return data


class StoreConformance:
    """Inherited by each backend's test class."""

    def test_fresh_root_is_empty(self, make_store: MakeStore) -> None:
        store = make_store()
        assert not store.exists()
        assert store.files() == {}
        assert store.used_bytes() == 0
        with pytest.raises(FileNotFoundError):
            store.ls()

    def test_write_read_list_roundtrip(self, make_store: MakeStore) -> None:
        store = make_store()
        payload = os.urandom(1024 * 1024 + 7)  # not a multiple of any block size
        write(store, "a/b/c.bin", payload)
        write(store, "top.txt", b"hello")
        assert read(store, "a/b/c.bin") == payload
        assert store.exists("a/b/c.bin") and store.exists("a") and store.exists()
        assert not store.exists("a/b/missing")
        assert store.ls() == ["a", "top.txt"]
        assert store.ls("a") == ["a/b"]
        assert store.files() == {"a/b/c.bin": len(payload), "top.txt": 5}
        assert store.files("a") == {"a/b/c.bin": len(payload)}
        info = store.info("a/b/c.bin")
        assert (info["name"], info["type"], info["size"]) == ("a/b/c.bin", "file", len(payload))
        assert store.info("./a//b/c.bin")["name"] == "a/b/c.bin"

    def test_path_normalises_names(self, make_store: MakeStore) -> None:
        store = make_store()
        assert store.path("./a//b/") == store.root.rstrip("/") + "/a/b"
        assert store.path("a/./b") == store.path("a/b")

    def test_rm_file_then_directory(self, make_store: MakeStore) -> None:
        store = make_store()
        write(store, "d/one", b"1")
        write(store, "d/sub/two", b"22")
        store.rm("d/one")
        assert not store.exists("d/one")
        with pytest.raises(FileNotFoundError):
            store.rm("d/one")
        with pytest.raises(IsADirectoryError):
            store.rm("d")
        assert store.files() == {"d/sub/two": 2}
        store.rm("d", recursive=True)
        assert store.files() == {}

    def test_quota(self, make_store: MakeStore) -> None:
        store = make_store(size=10)
        write(store, "x", b"12345678")
        assert store.used_bytes() == 8
        store.check_quota(2)
        with pytest.raises(QuotaExceededError) as caught:
            store.check_quota(3)
        message = str(caught.value)
        assert store.name in message
        assert "size 10 bytes" in message and "8 used" in message and "3 requested" in message

    def test_no_quota_means_unlimited(self, make_store: MakeStore) -> None:
        store = make_store()
        store.check_quota(10**15)

    @pytest.mark.parametrize("name", UNSAFE_NAMES)
    def test_unsafe_name_rejected_before_any_io(self, make_store: MakeStore, name: str) -> None:
        store = make_store()
        for attempt in (
            lambda: store.path(name),
            lambda: store.open(name, "wb"),
            lambda: store.rm(name, recursive=True),
        ):
            with pytest.raises(UnsafePathError) as caught:
                attempt()
            assert repr(name) in str(caught.value)
        assert not store.exists()
        assert store.files() == {}

    def test_record_holds_no_secret(self, make_store: MakeStore, secret_options: dict[str, Any]) -> None:
        store = make_store()
        public = store.public_options()
        text = json.dumps(store.record()) + repr(store) + store.url
        for value in secret_options.values():
            assert str(value) not in text
        assert not [name for name in public if is_secret_option(name)]

    def test_reopen_from_record(self, make_store: MakeStore, secret_options: dict[str, Any]) -> None:
        store = make_store(size=1000)
        write(store, "shared.txt", b"from the first process")
        again = store_from_record(json.loads(json.dumps(store.record())), secrets=secret_options)
        assert (again.url, again.root, again.size) == (store.url, store.root, 1000)
        assert again.labels == store.labels
        assert read(again, "shared.txt") == b"from the first process"

    def test_ping(self, make_store: MakeStore) -> None:
        make_store().ping()
