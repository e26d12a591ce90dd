"""How copy_files spreads local files over threads: small files in one thread unless the file systems make
it wait, large ones in parallel; the copies are whole and verified either way."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

import transfer.copy as engine
from transfer import ChecksumMismatchError, FileEntry
from transfer.copy import SERIAL_PROBE, _SerialProbe, copy_files
from transfer.digests import new_hash
from transfer.endpoints import LocalEndpoint


def make(root: Path, sizes: dict[str, int]) -> list[FileEntry]:
    entries = []
    for name, size in sizes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        h = new_hash("xxh128")
        h.update(data)
        entries.append(FileEntry(name, size, h.hexdigest(), "xxh128"))
    return entries


@pytest.fixture
def by_thread(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """File name -> the thread that copied it."""
    seen: dict[str, int] = {}
    real = engine._Copier.run

    def run(self: engine._Copier, entry: FileEntry) -> Any:
        seen[entry.path] = threading.get_ident()
        return real(self, entry)

    monkeypatch.setattr(engine._Copier, "run", run)
    return seen


def same_bytes(src: Path, dst: Path, entries: list[FileEntry]) -> bool:
    return all((src / e.path).read_bytes() == (dst / e.path).read_bytes() for e in entries)


def test_small_local_files_are_copied_by_one_thread(tmp_path: Path, by_thread: dict[str, int]) -> None:
    entries = make(tmp_path / "src", {f"d{i % 5}/f{i}": 1024 for i in range(300)})
    local = LocalFileSystem()
    report = copy_files(local, str(tmp_path / "src"), local, str(tmp_path / "dst"), entries, workers=8, link=False)
    assert report.files == 300 and same_bytes(tmp_path / "src", tmp_path / "dst", entries)
    assert len(set(by_thread.values())) == 1  # the interpreter lock passed around would only slow them down


def test_large_files_run_in_parallel_and_the_small_ones_after_them_in_one_thread(
        tmp_path: Path, by_thread: dict[str, int]) -> None:
    sizes = {f"big{i}": 300_000 for i in range(4)} | {f"small/f{i}": 100 for i in range(200)}
    entries = make(tmp_path / "src", sizes)
    local = LocalFileSystem()
    copy_files(local, str(tmp_path / "src"), local, str(tmp_path / "dst"), entries, workers=4, link=False,
               chunk_size=2**16)  # files from 64 KiB up are large
    assert same_bytes(tmp_path / "src", tmp_path / "dst", entries)
    assert len({t for name, t in by_thread.items() if name.startswith("small/")}) == 1


def test_small_files_on_a_file_system_that_makes_the_thread_wait_are_copied_in_parallel(
        tmp_path: Path, by_thread: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    real = LocalEndpoint.read_small

    def slow_read(self: LocalEndpoint, rel: str, size_hint: int) -> bytes:
        time.sleep(0.002)  # a round trip to a metadata server: the thread waits, using no CPU
        return real(self, rel, size_hint)

    monkeypatch.setattr(LocalEndpoint, "read_small", slow_read)
    n = 4 * SERIAL_PROBE
    entries = make(tmp_path / "src", {f"f{i}": 512 for i in range(n)})
    local = LocalFileSystem()
    report = copy_files(local, str(tmp_path / "src"), local, str(tmp_path / "dst"), entries, workers=4, link=False)
    assert report.files == n and same_bytes(tmp_path / "src", tmp_path / "dst", entries)
    per_thread = Counter(by_thread.values())
    assert len(per_thread) == 4  # the other three joined after the first probe
    first = max(per_thread.values())
    assert first >= SERIAL_PROBE  # the probe's files were the first thread's alone


def test_a_corrupted_file_in_the_one_thread_stops_the_copy(tmp_path: Path) -> None:
    entries = make(tmp_path / "src", {f"f{i:03d}": 256 for i in range(100)})
    (tmp_path / "src" / "f050").write_bytes(b"x" * 256)  # not what the manifest says
    local = LocalFileSystem()
    with pytest.raises(ChecksumMismatchError, match="f050"):
        copy_files(local, str(tmp_path / "src"), local, str(tmp_path / "dst"), entries, workers=8, link=False)
    assert not (tmp_path / "dst" / "f050").exists()
    copied = {p.name for p in (tmp_path / "dst").iterdir()}
    assert copied and "f099" not in copied  # files after the failure were not started


def test_the_probe_keeps_one_thread_while_it_computes_and_lets_others_in_when_it_waits() -> None:
    busy = _SerialProbe(True)
    assert not any(busy.add(0.9e-4, 1e-4) for _ in range(3 * SERIAL_PROBE))
    assert busy.serial
    waiting = _SerialProbe(True)
    decisions = [waiting.add(0.2e-4, 1e-4) for _ in range(2 * SERIAL_PROBE)]
    assert decisions.count(True) == 1 and decisions.index(True) == SERIAL_PROBE - 1
    assert not waiting.serial
    assert not _SerialProbe(False).add(0.0, 1.0)  # parallel from the start (not local, or one worker)
