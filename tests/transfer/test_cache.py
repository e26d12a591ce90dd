"""The per-pilot cache: fetch once (across processes), link read-only into sandboxes, evict."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

from tests.servers import wait_until
from tests.transfer._child import CountingLocalFS
from tests.transfer.conftest import SiteFactory, child_env, dataset, manifest, populate
from transfer import (
    CacheMissError,
    ChecksumMismatchError,
    FileEntry,
    PilotCache,
    UnsafePathError,
    cache_key,
    manifest_digest,
)


def _spawn(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.transfer._child", json.dumps(spec)], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _marker_lines(marker: Path) -> list[str]:
    return marker.read_text().splitlines() if marker.exists() else []


def _blocked_on_flock(pid: int) -> bool:
    """Whether ``pid`` waits for a flock (``/proc/locks`` lists waiters with ``->``)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and "FLOCK" in fields and str(pid) in fields:
            return True
    return False


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    done = [line for line in out.splitlines() if line.startswith("done ")]
    assert done, out
    return dict(json.loads(done[0][5:]))


def test_ensure_fetches_once_then_serves_from_disk(tmp_path: Path, site_factory: SiteFactory) -> None:
    src = site_factory("file", "src")
    files = dataset(21, 10)
    populate(src, files)
    entries = manifest(files)
    marker = tmp_path / "opens"
    counting = CountingLocalFS(str(marker))
    cache = PilotCache(tmp_path / "cache")
    key = cache_key("du-1", entries)
    assert not cache.contains(key) and cache.keys() == []

    first = cache.ensure(key, counting, src.root, entries)
    second = cache.ensure(key, counting, src.root, entries)
    assert first == second and cache.contains(key) and cache.keys() == [key]
    assert len(_marker_lines(marker)) == len(files)  # the second ensure read nothing
    assert {e.path: e.sha256 for e in cache.entries(key)} == {e.path: e.sha256 for e in entries}
    assert cache.nbytes(key) == sum(len(d) for d in files.values())
    for name, data in files.items():
        assert (first / name).read_bytes() == data
        assert stat.S_IMODE((first / name).stat().st_mode) & 0o222 == 0
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_two_processes_ensuring_one_key_download_it_once(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    slow_payload = random.Random(1).randbytes(3 * 2**20)
    (src / "a.bin").write_bytes(b"A" * 1000)
    os.mkfifo(src / "slow.bin")  # the first fetch blocks on it until the test feeds it
    entries = manifest({"a.bin": b"A" * 1000, "slow.bin": slow_payload})
    marker = tmp_path / "opens"
    spec = {"op": "ensure", "cache": str(tmp_path / "cache"), "key": cache_key("du-x", entries),
            "src": {"kind": "counting", "root": str(src), "marker": str(marker)},
            "entries": [e.to_dict() for e in entries]}
    first = _spawn(spec)
    second = None
    try:
        wait_until(lambda: any(line.endswith("slow.bin") for line in _marker_lines(marker)), 30,
                   "the first process to start reading the source")
        second = _spawn(spec)
        wait_until(lambda: _blocked_on_flock(second.pid), 30, "the second process to wait for the key's lock")
        fd = os.open(src / "slow.bin", os.O_WRONLY)
        try:
            os.write(fd, slow_payload)
        finally:
            os.close(fd)
        one, two = _result(first), _result(second)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(30)
    assert one["path"] == two["path"]
    opens = _marker_lines(marker)
    assert len(opens) == 2 and {line.split()[0] for line in opens} == {str(first.pid)}
    assert (Path(one["path"]) / "slow.bin").read_bytes() == slow_payload


def test_a_fetch_killed_midway_leaves_no_entry_and_the_next_one_completes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    payload = os.urandom(2 * 2**20)
    os.mkfifo(src / "f.bin")
    entries = manifest({"f.bin": payload})
    cache_dir = tmp_path / "cache"
    key = cache_key("du-k", entries)
    marker = tmp_path / "opens"
    child = _spawn({"op": "ensure", "cache": str(cache_dir), "key": key,
                    "src": {"kind": "counting", "root": str(src), "marker": str(marker)},
                    "entries": [e.to_dict() for e in entries]})
    try:
        wait_until(lambda: _marker_lines(marker), 30, "the child to open the source")
        wait_until(lambda: list((cache_dir / "tmp").glob(f"{key}.*")), 30, "the fetch directory")
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    cache = PilotCache(cache_dir)
    assert not cache.contains(key)
    (src / "f.bin").unlink()
    (src / "f.bin").write_bytes(payload)
    path = cache.ensure(key, LocalFileSystem(), str(src), entries)  # the dead fetcher's lock is gone
    assert (path / "f.bin").read_bytes() == payload
    assert list((cache_dir / "tmp").iterdir()) == []  # its leftovers were cleaned


def test_a_corrupted_source_leaves_no_cache_entry(tmp_path: Path, site_factory: SiteFactory) -> None:
    src = site_factory("file", "src")
    populate(src, {"f.txt": b"tampered"})
    cache = PilotCache(tmp_path / "cache")
    entries = manifest({"f.txt": b"original"})
    with pytest.raises(ChecksumMismatchError):
        cache.ensure("k1", src.fs, src.root, entries, )
    assert not cache.contains("k1") and cache.keys() == []
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_sandboxes_get_read_only_hard_links_to_the_cached_inode(
    tmp_path: Path, site_factory: SiteFactory
) -> None:
    src = site_factory("sftp", "src")  # a remote source: the cache holds real copies
    files = {"db/part1": b"1" * 100, "db/part2": b"2" * 200, "query.txt": b"ACGT"}
    populate(src, files)
    entries = manifest(files)
    cache = PilotCache(tmp_path / "cache")
    data = cache.ensure("blastdb", src.fs, src.root, entries)

    box = tmp_path / "sandbox1"
    linked = cache.link_into("blastdb", box)
    assert sorted(str(p.relative_to(box)) for p in linked) == sorted(files)
    for name in files:
        in_box, in_cache = (box / name).stat(), (data / name).stat()
        assert (in_box.st_ino, in_box.st_dev) == (in_cache.st_ino, in_cache.st_dev)
        assert stat.S_IMODE(in_box.st_mode) & 0o222 == 0
        assert (box / name).read_bytes() == files[name]

    box2 = tmp_path / "sandbox2"
    linked = cache.link_into("blastdb", box2, subset=["query.txt", "db"])  # a file and a directory
    assert sorted(str(p.relative_to(box2)) for p in linked) == ["db/part1", "db/part2", "query.txt"]
    assert sorted(str(p.relative_to(box2)) for p in cache.link_into("blastdb", box2, ["./query.txt"])) == [
        "query.txt"]  # linking again replaces

    with pytest.raises(CacheMissError, match="no file 'nope'"):
        cache.link_into("blastdb", tmp_path / "sandbox3", subset=["nope"])
    with pytest.raises(UnsafePathError):
        cache.link_into("blastdb", tmp_path / "sandbox3", subset=["../query.txt"])
    with pytest.raises(CacheMissError):
        cache.link_into("unknown-key", tmp_path / "sandbox3")


def test_evicting_keeps_hard_linked_sandboxes_intact(tmp_path: Path, site_factory: SiteFactory) -> None:
    src = site_factory("file", "src")
    populate(src, {"f": b"content"})
    cache = PilotCache(tmp_path / "cache")
    cache.ensure("k", src.fs, src.root, ["f"])
    box = tmp_path / "box"
    cache.link_into("k", box)
    assert cache.evict("k") is True and cache.evict("k") is False
    assert not cache.contains("k") and cache.keys() == []
    assert (box / "f").read_bytes() == b"content"


@pytest.mark.parametrize("key", ["", "../x", "a/b", ".hidden", "x" * 201, "sp ace"])
def test_bad_cache_keys_are_refused(key: str, tmp_path: Path) -> None:
    cache = PilotCache(tmp_path / "cache")
    with pytest.raises(UnsafePathError):
        cache.contains(key)


def test_cache_keys_are_content_addressed() -> None:
    a = [FileEntry("x", 1, "0" * 64)]
    b = [FileEntry("x", 1, "1" * 64)]
    assert cache_key("du/1", a) != cache_key("du/1", b)
    assert cache_key("du/1", a).startswith("du_1-") and cache_key("du/1", a).endswith(manifest_digest(a)[:32])
