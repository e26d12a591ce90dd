"""Checksum algorithms in manifests, and the verified-stat records that spare re-reading linked files.

Reads are counted by wrapping the local endpoint's two read methods (every byte the engine takes
from a local file passes through one of them), never by timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

from tests.transfer.conftest import KINDS, SiteFactory, populate
from transfer import (
    ChecksumMismatchError,
    FileEntry,
    PilotCache,
    VerifiedStats,
    cache_key,
    copy_files,
    manifest_digest,
    scan,
    to_entries,
    verify_files,
)
from transfer.digests import ALGORITHMS, new_hash
from transfer.endpoints import LocalEndpoint, LocalWriter
from transfer.verified import fs_clock_ns, settled

FAST = ("xxh128", "blake3")


def _digest(data: bytes, algorithm: str) -> str:
    h = new_hash(algorithm)
    h.update(data)
    return h.hexdigest()


def _entries(files: dict[str, bytes], algorithm: str) -> list[FileEntry]:
    return [FileEntry(name, len(data), _digest(data, algorithm), algorithm) for name, data in sorted(files.items())]


def _at_rest(site: Any, seconds: int = 3600) -> None:
    """Stamp every file of ``site`` as last changed ``seconds`` ago: data at rest, not just written.

    A file changed in the file system clock's current tick is not recorded (it could be written again
    within the tick without a trace in its stamps); the tests of what records spare start from data
    written earlier, as a shared database is.
    """
    assert site.local_dir is not None
    then = time.time_ns() - seconds * 1_000_000_000
    for path in site.local_dir.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(then, then))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the local files the engine reads bytes from, one item per read."""
    seen: list[str] = []
    iter_read, read_small = LocalEndpoint.iter_read, LocalEndpoint.read_small

    def counting_iter(self: LocalEndpoint, rel: str, size_hint: int | None, chunk_size: int) -> Iterator[Any]:
        seen.append(rel)
        return iter_read(self, rel, size_hint, chunk_size)

    def counting_small(self: LocalEndpoint, rel: str, size_hint: int) -> bytes:
        seen.append(rel)
        return read_small(self, rel, size_hint)

    monkeypatch.setattr(LocalEndpoint, "iter_read", counting_iter)
    monkeypatch.setattr(LocalEndpoint, "read_small", counting_small)
    return seen


FILES = {"small.txt": b"a small file\n", "dir/medium.bin": os.urandom(300_000), "big.bin": os.urandom(3 * 2**20 + 7)}


# ------------------------------------------------------------------ the algorithm in the manifest
def test_every_algorithm_has_a_library_here() -> None:
    """The fast-hash extra is installed in the test environment: the tests below are not skipped."""
    for algorithm in ALGORITHMS:
        assert len(_digest(b"x", algorithm)) in (32, 64)


@pytest.mark.parametrize("algorithm", FAST)
@pytest.mark.parametrize("dst_kind", KINDS)
def test_a_copy_records_the_algorithm_it_was_asked_for(
    algorithm: str, dst_kind: str, site_factory: SiteFactory
) -> None:
    src, dst = site_factory("file", "src"), site_factory(dst_kind, "dst")
    populate(src, FILES)
    report = copy_files(src.fs, src.root, dst.fs, dst.root, sorted(FILES), algorithm=algorithm, link=False,
                        chunk_size=2**20)
    assert report.entries == _entries(FILES, algorithm)
    assert {e.algorithm for e in report.entries} == {algorithm} and all(e.sha256 is None for e in report.entries)
    assert [e.to_dict() for e in report.entries] == [
        {"path": n, "size": len(d), algorithm: _digest(d, algorithm)} for n, d in sorted(FILES.items())]
    assert [FileEntry.from_dict(e.to_dict()) for e in report.entries] == report.entries
    assert verify_files(dst.fs, dst.root, [e.to_dict() for e in report.entries]) == []


def test_the_default_stays_sha256_and_writes_the_old_layout(site_factory: SiteFactory) -> None:
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, FILES)
    report = copy_files(src.fs, src.root, dst.fs, dst.root, sorted(FILES), link=False)
    assert [e.to_dict() for e in report.entries] == [
        {"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in sorted(FILES.items())]


def test_old_sha256_manifests_still_copy_verify_and_key_the_cache(tmp_path: Path,
                                                                  site_factory: SiteFactory) -> None:
    """A manifest written before algorithms could be chosen: dicts with a "sha256" key and nothing else."""
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, FILES)
    old = [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in sorted(FILES.items())]
    entries = to_entries(old)
    assert {e.algorithm for e in entries} == {"sha256"}
    report = copy_files(src.fs, src.root, dst.fs, dst.root, old, link=False, algorithm="xxh128")
    assert [e.to_dict() for e in report.entries] == old  # checked and reported in the manifest's own algorithm
    assert verify_files(dst.fs, dst.root, old) == []
    # the content address of a sha256 manifest is the formula it always was
    listing = sorted([e["path"], e["size"], e["sha256"]] for e in old)
    assert manifest_digest(entries) == hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()
    cache = PilotCache(tmp_path / "cache")
    key = cache_key("du-old", entries)
    cache.ensure(key, src.fs, src.root, old)
    assert json.loads((tmp_path / "cache" / "entries" / key / "manifest.json").read_text()) == old


def test_the_cache_manifest_records_a_fast_algorithm(tmp_path: Path, site_factory: SiteFactory) -> None:
    src = site_factory("file", "src")
    populate(src, FILES)
    entries = _entries(FILES, "xxh128")
    cache = PilotCache(tmp_path / "cache")
    key = cache_key("du-fast", entries)
    assert key != cache_key("du-fast", _entries(FILES, "sha256"))
    cache.ensure(key, src.fs, src.root, entries)
    stored = json.loads((tmp_path / "cache" / "entries" / key / "manifest.json").read_text())
    assert all(set(d) == {"path", "size", "xxh128"} for d in stored)
    assert cache.entries(key) == entries


@pytest.mark.parametrize("algorithm", FAST)
@pytest.mark.parametrize("name", ["small.txt", "dir/medium.bin", "big.bin"])
@pytest.mark.parametrize("dst_kind", KINDS)
def test_a_corrupted_byte_is_caught_by_the_fast_algorithms(
    algorithm: str, name: str, dst_kind: str, site_factory: SiteFactory
) -> None:
    """One flipped byte in the middle, same size: the small-file, chunked and remote paths all refuse it."""
    src, dst = site_factory("file", "src"), site_factory(dst_kind, "dst")
    data = FILES[name]
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x01
    populate(src, {name: bytes(bad)})
    with pytest.raises(ChecksumMismatchError) as info:
        copy_files(src.fs, src.root, dst.fs, dst.root, _entries({name: data}, algorithm), link=False,
                   chunk_size=2**20)
    assert info.value.path == name and algorithm in str(info.value)
    assert info.value.expected == _digest(data, algorithm)
    assert dst.listing() == []


@pytest.mark.parametrize("algorithm", FAST)
def test_verify_files_uses_each_entrys_algorithm(algorithm: str, site_factory: SiteFactory) -> None:
    site = site_factory("file")
    populate(site, FILES)
    entries = _entries(FILES, algorithm)
    assert verify_files(site.fs, site.root, entries) == []
    assert site.local_dir is not None
    (site.local_dir / "big.bin").write_bytes(b"\0" + FILES["big.bin"][1:])
    [problem] = verify_files(site.fs, site.root, entries)
    assert (problem.path, problem.problem) == ("big.bin", algorithm)
    assert scan(site.fs, site.root, algorithm=algorithm)[0].algorithm == algorithm


def test_unknown_or_missing_algorithms_are_refused_before_anything_is_written(
    site_factory: SiteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, FILES)
    with pytest.raises(ValueError, match="'md5' is not one of sha256, blake3, xxh128"):
        copy_files(src.fs, src.root, dst.fs, dst.root, sorted(FILES), algorithm="md5")
    with pytest.raises(ValueError, match="checksum of 'a'"):
        FileEntry("a", 1, "abc", "xxh128")
    entries = _entries(FILES, "xxh128")
    monkeypatch.setitem(sys.modules, "xxhash", None)  # as if the package were not installed
    with pytest.raises(ValueError, match=r"needs the 'xxhash' package: pip install 'pilot-data\[fast-hash\]'"):
        copy_files(src.fs, src.root, dst.fs, dst.root, entries, link=False)
    with pytest.raises(ValueError, match="xxhash"):
        verify_files(src.fs, src.root, entries)
    assert dst.listing() == []
    # a manifest that also carries sha256 falls back to it on a machine without the fast library
    both = {"path": "small.txt", "size": len(FILES["small.txt"]), "xxh128": entries[2].digest,
            "sha256": hashlib.sha256(FILES["small.txt"]).hexdigest()}
    assert FileEntry.from_dict(both).algorithm == "sha256"


# ------------------------------------------------------------------ verified-stat records
def test_linking_a_verified_file_again_reads_no_bytes(site_factory: SiteFactory, reads: list[str]) -> None:
    src = site_factory("file", "src")
    populate(src, FILES)
    _at_rest(src)
    entries = _entries(FILES, "xxh128")
    records = VerifiedStats()
    first = copy_files(src.fs, src.root, LocalFileSystem(), f"{src.root}/../a", entries, stat_cache=records)
    assert first.methods == {"hardlink": 3} and sorted(reads) == sorted(FILES)  # the first link hashes
    reads.clear()
    for target in ("b", "c", "d"):
        again = copy_files(src.fs, src.root, LocalFileSystem(), f"{src.root}/../{target}", entries,
                           stat_cache=records, read_only=True)
        assert again.methods == {"hardlink": 3} and again.entries == entries
    assert reads == [] and records.hits == 9  # O(files): three stats per file, no byte read
    without = copy_files(src.fs, src.root, LocalFileSystem(), f"{src.root}/../e", entries, stat_cache=None)
    assert without.files == 3 and sorted(reads) == sorted(FILES)  # stat_cache=None reads every time


def test_a_streamed_copy_is_recorded_so_linking_it_reads_nothing(site_factory: SiteFactory,
                                                                  reads: list[str]) -> None:
    """The copy that wrote (or read) a file knows its checksum: the replica it made links for free."""
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, FILES)
    _at_rest(src)
    entries = _entries(FILES, "blake3")
    records = VerifiedStats()
    copy_files(src.fs, src.root, dst.fs, dst.root, entries, link=False, stat_cache=records)
    reads.clear()
    assert dst.local_dir is not None
    report = copy_files(dst.fs, dst.root, LocalFileSystem(), str(dst.local_dir.parent / "linked"), entries,
                        stat_cache=records)
    assert report.methods == {"hardlink": 3} and reads == []
    # the source of that stream was recorded too (it is large enough to be worth it)
    copy_files(src.fs, src.root, LocalFileSystem(), str(dst.local_dir.parent / "linked2"), entries,
               stat_cache=records)
    assert sorted(reads) == ["dir/medium.bin", "small.txt"]


def _rewrite(p: Path) -> None:
    p.write_bytes(p.read_bytes())


def _write_and_put_mtime_back(p: Path) -> None:
    st = p.stat()
    data = p.read_bytes()
    p.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # a byte that differs whatever the random data held
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _replace(p: Path) -> None:
    p.with_name("new").write_bytes(p.read_bytes())
    os.replace(p.with_name("new"), p)


CHANGES: dict[str, Callable[[Path], None]] = {
    # each leaves the bytes as they were, or the size and mtime as they were: only the stat tells
    "rewritten with the same bytes": _rewrite,
    "mode changed": lambda p: p.chmod(0o600),
    "mtime put back after a write": _write_and_put_mtime_back,
    "replaced by another file": _replace,
    "touched": lambda p: os.utime(p, ns=(1, 1)),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_replica_whose_stat_changed_is_hashed_again(change: str, site_factory: SiteFactory,
                                                      reads: list[str]) -> None:
    src = site_factory("file", "src")
    populate(src, {"big.bin": FILES["big.bin"]})
    _at_rest(src)
    entries = _entries({"big.bin": FILES["big.bin"]}, "xxh128")
    records = VerifiedStats()
    copy_files(src.fs, src.root, LocalFileSystem(), f"{src.root}/../a", entries, stat_cache=records)
    assert src.local_dir is not None
    CHANGES[change](src.local_dir / "big.bin")
    reads.clear()
    if change == "mtime put back after a write":  # same size, same mtime: only the ctime shows the write
        with pytest.raises(ChecksumMismatchError):
            copy_files(src.fs, src.root, LocalFileSystem(), f"{src.root}/../b", entries, stat_cache=records)
    else:
        report = copy_files(src.fs, src.root, LocalFileSystem(), f"{src.root}/../b", entries, stat_cache=records)
        assert report.methods == {"hardlink": 1}
    assert reads == ["big.bin"]


def test_records_are_bounded_and_dropped_when_stale(tmp_path: Path) -> None:
    records = VerifiedStats(limit=2)
    paths = []
    for i in range(3):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x" * i)
        paths.append(p)
        assert records.record(p.stat(), "sha256", "0" * 64, p.stat().st_mtime_ns + 2_000_000_000)  # long settled
    assert len(records) == 2 and records.lookup(paths[0].stat(), "sha256") is None  # the oldest went first
    assert records.lookup(paths[2].stat(), "sha256") == "0" * 64
    assert records.lookup(paths[2].stat(), "xxh128") is None  # per algorithm
    paths[2].write_bytes(b"yy")
    assert records.lookup(paths[2].stat(), "sha256") is None and len(records) == 1


def test_stamps_are_recorded_only_once_the_clock_has_passed_them(tmp_path: Path) -> None:
    """A write in the same clock tick as the stamps would leave them as they are: such stamps vouch for nothing."""
    p = tmp_path / "f"
    p.write_bytes(b"x")
    stamp = time.time_ns() // 1_000_000_000 * 1_000_000_000 - 7_654_321  # a stamp with a fraction of a second
    os.utime(p, ns=(stamp, stamp))
    st = p.stat()
    records = VerifiedStats()
    assert not records.record(st, "sha256", "0" * 64, st.st_mtime_ns)  # read in the tick of the last write
    assert len(records) == 0
    assert records.record(st, "sha256", "0" * 64, st.st_mtime_ns + 1)
    assert not records.record(st, "xxh128", "1" * 32, st.st_mtime_ns)  # an unsettled read drops the record
    assert records.lookup(st, "sha256") is None and len(records) == 0
    whole = (int(time.time()) - 100) * 1_000_000_000  # a file system that keeps whole seconds
    os.utime(p, ns=(whole, whole))
    st = p.stat()
    assert not records.record(st, "sha256", "0" * 64, whole + 1_999_999_999)  # same second, or FAT's two
    assert records.record(st, "sha256", "0" * 64, whole + 2_000_000_000)
    assert settled(st, fs_clock_ns()) and fs_clock_ns() <= time.time_ns()


def test_a_file_stamped_after_the_clock_is_hashed_on_every_link(site_factory: SiteFactory,
                                                                 reads: list[str]) -> None:
    """Stamped at or after the clock (just written, or by a server clock ahead of ours): each link reads it."""
    src = site_factory("file", "src")
    populate(src, {"big.bin": FILES["big.bin"]})
    assert src.local_dir is not None
    path = src.local_dir / "big.bin"
    when = fs_clock_ns() + 60 * 1_000_000_000
    os.utime(path, ns=(when, when))
    entries = _entries({"big.bin": FILES["big.bin"]}, "xxh128")
    records = VerifiedStats()
    for target in ("a", "b", "c"):
        report = copy_files(src.fs, src.root, LocalFileSystem(), f"{src.root}/../{target}", entries,
                            stat_cache=records)
        assert report.methods == {"hardlink": 1} and report.entries == entries
    assert reads == ["big.bin"] * 3 and records.hits == 0 and len(records) == 0
    _at_rest(src)  # once the stamp is in the past, one more read is the last
    for target in ("d", "e", "f"):
        copy_files(src.fs, src.root, LocalFileSystem(), f"{src.root}/../{target}", entries, stat_cache=records)
    assert reads == ["big.bin"] * 4 and records.hits == 2


def test_a_written_file_is_published_with_an_mtime_before_the_clock_and_recorded(site_factory: SiteFactory,
                                                                                 reads: list[str]) -> None:
    """The engine's own writes are recorded at once: their mtime is set just before the clock's tick."""
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, {"big.bin": FILES["big.bin"]})
    entries = _entries({"big.bin": FILES["big.bin"]}, "xxh128")
    before = time.time_ns()
    records = VerifiedStats()
    copy_files(src.fs, src.root, dst.fs, dst.root, entries, link=False, stat_cache=records)
    assert dst.local_dir is not None
    st = (dst.local_dir / "big.bin").stat()
    assert before - 1_000_000_000 < st.st_mtime_ns < fs_clock_ns() and st.st_atime_ns == st.st_mtime_ns
    reads.clear()
    copy_files(dst.fs, dst.root, LocalFileSystem(), str(dst.local_dir.parent / "linked"), entries, stat_cache=records)
    assert reads == [] and records.hits == 1
    with open(dst.local_dir / "big.bin", "r+b") as f:  # a write right after it was published still shows
        f.write(bytes([FILES["big.bin"][0] ^ 1]))
    with pytest.raises(ChecksumMismatchError):
        copy_files(dst.fs, dst.root, LocalFileSystem(), str(dst.local_dir.parent / "linked2"), entries,
                   stat_cache=records)


# ------------------------------------------------------------------ unnamed files (O_TMPFILE)
def test_local_copies_publish_unnamed_files_and_replace_existing_ones(site_factory: SiteFactory) -> None:
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, FILES)
    populate(dst, {"big.bin": b"an older version"})
    report = copy_files(src.fs, src.root, dst.fs, dst.root, _entries(FILES, "xxh128"), link=False, read_only=True)
    assert report.files == 3 and dst.listing() == sorted(FILES)
    assert dst.local_dir is not None
    for name, data in FILES.items():
        assert (dst.local_dir / name).read_bytes() == data
        assert stat.S_IMODE((dst.local_dir / name).stat().st_mode) == 0o444


def test_without_o_tmpfile_part_files_and_a_rename_publish(site_factory: SiteFactory,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Filesystems without unnamed files (NFS) fall back to the part file beside the final name."""
    import errno

    real_open = os.open
    made: list[str] = []

    def no_tmpfile(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & getattr(os, "O_TMPFILE", 0) == getattr(os, "O_TMPFILE", -1):
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", path)
        if flags & os.O_CREAT:
            made.append(os.path.basename(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_tmpfile)
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, FILES)
    populate(dst, {"small.txt": b"old"})
    report = copy_files(src.fs, src.root, dst.fs, dst.root, _entries(FILES, "sha256"), link=False)
    assert report.files == 3 and dst.listing() == sorted(FILES)
    assert sorted(n.split(".part-")[0] for n in made if ".part-" in n) == [".big.bin", ".medium.bin", ".small.txt"]
    writer = LocalWriter(f"{dst.root}/x")
    assert writer.tmp is not None
    writer.abort()
    assert dst.listing() == sorted(FILES)


def test_a_source_written_while_it_is_linked_is_linked_again_and_hashed(site_factory: SiteFactory,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The checksum reported must describe what the link points to, not what the file held a moment before."""
    from transfer import fastpath

    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, {"f.bin": b"first version"})
    assert src.local_dir is not None and dst.local_dir is not None
    source = src.local_dir / "f.bin"
    real_link = fastpath.local_link
    writes: list[int] = []

    def link_while_written(*args: Any, **kwargs: Any) -> Any:
        mode = real_link(*args, **kwargs)
        if not writes:  # another process appends to the file right after the first link
            writes.append(1)
            with open(source, "ab") as f:
                f.write(b" and more")
        return mode

    monkeypatch.setattr(fastpath, "local_link", link_while_written)
    report = copy_files(src.fs, src.root, dst.fs, dst.root, ["f.bin"], algorithm="xxh128", stat_cache=VerifiedStats(),
                        backoff=0.01)
    assert report.retries == 1 and report.methods == {"hardlink": 1}
    assert report.entries == [FileEntry("f.bin", 22, _digest(b"first version and more", "xxh128"), "xxh128")]
    assert (dst.local_dir / "f.bin").read_bytes() == b"first version and more"


def test_a_file_system_that_refuses_the_stamp_still_gets_the_copy(site_factory: SiteFactory, reads: list[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting times can be refused (root squashed on NFS): the copy stands, unrecorded, hashed at its next link."""
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, {"big.bin": FILES["big.bin"]})
    entries = _entries({"big.bin": FILES["big.bin"]}, "xxh128")
    real_utime = os.utime

    def refuse(path: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(path, int):
            raise PermissionError(1, "Operation not permitted")
        real_utime(path, *args, **kwargs)

    monkeypatch.setattr(os, "utime", refuse)
    records = VerifiedStats()
    report = copy_files(src.fs, src.root, dst.fs, dst.root, entries, link=False, stat_cache=records)
    assert report.entries == entries and report.methods == {"stream": 1}
    assert dst.local_dir is not None and (dst.local_dir / "big.bin").read_bytes() == FILES["big.bin"]
    monkeypatch.setattr(os, "utime", real_utime)
    _at_rest(dst)  # once at rest, its first link reads it and records it; the next reads nothing
    reads.clear()
    for target in ("l1", "l2"):
        copy_files(dst.fs, dst.root, LocalFileSystem(), str(dst.local_dir.parent / target), entries,
                   stat_cache=records)
    assert reads == ["big.bin"]

