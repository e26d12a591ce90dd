"""How copy_files spreads local files over threads: small files in one thread unless the file systems make
it wait, large ones in parallel; the copies are whole and verified either way."""

from __future__ import annotations

import os
import threading
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

import transfer.copy as engine
from transfer import ChecksumMismatchError, FileEntry
from transfer.copy import SERIAL_PROBE, _runqueue_seconds, _SerialProbe, copy_files
from transfer.digests import new_hash


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


@pytest.fixture
def no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """No window ends: the one thread keeps the small files whatever the machine's load (the rule itself is
    tested below, with windows measured as given)."""
    monkeypatch.setattr(engine, "SERIAL_PROBE", 10**9)


@pytest.mark.usefixtures("no_probe")
def test_small_local_files_are_copied_by_one_thread(tmp_path: Path, by_thread: dict[str, int]) -> None:
    entries = make(tmp_path / "src", {f"d{i % 5}/f{i}": 1024 for i in range(300)})
    local = LocalFileSystem()
    report = copy_files(local, str(tmp_path / "src"), local, str(tmp_path / "dst"), entries, workers=8, link=False)
    assert report.files == 300 and same_bytes(tmp_path / "src", tmp_path / "dst", entries)
    assert len(set(by_thread.values())) == 1  # the interpreter lock passed around would only slow them down


@pytest.mark.usefixtures("no_probe")
def test_files_of_more_than_one_read_or_of_unknown_size_are_not_held_to_one_thread(
        tmp_path: Path, by_thread: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = {f"big{i}": 300_000 for i in range(4)} | {f"small/f{i}": 100 for i in range(200)}
    entries = make(tmp_path / "src", sizes)
    entries += [FileEntry(e.path.replace("small/", "unsized/"), None, None) for e in entries[4:8]]
    for e in entries[-4:]:
        (tmp_path / "src" / e.path).parent.mkdir(exist_ok=True)
        (tmp_path / "src" / e.path).write_bytes(b"?" * 50)
    started = threading.Barrier(2, timeout=10)  # two large files at once, or the barrier breaks
    real = engine._Copier.run

    def run(self: engine._Copier, entry: FileEntry) -> Any:
        if entry.path in ("big0", "big1"):
            started.wait()
        return real(self, entry)

    monkeypatch.setattr(engine._Copier, "run", run)
    local = LocalFileSystem()
    report = copy_files(local, str(tmp_path / "src"), local, str(tmp_path / "dst"), entries, workers=4,
                        link=False)
    assert report.files == len(entries) and same_bytes(tmp_path / "src", tmp_path / "dst", entries)
    assert not started.broken  # the files of more than one read (256 KiB here) ran side by side
    assert len({t for name, t in by_thread.items() if name.startswith("small/")}) == 1


def test_small_files_on_a_file_system_that_makes_the_thread_wait_are_copied_in_parallel(
        tmp_path: Path, by_thread: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    # A thread blocked in a file system (a round trip to a metadata server per file) uses no CPU while
    # its wall clock runs: the engine's clocks are made to show exactly that, its CPU clock standing still.
    clocks = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    clocks.thread_time = lambda: 0.0
    monkeypatch.setattr(engine, "time", clocks)
    n = 4 * SERIAL_PROBE
    entries = make(tmp_path / "src", {f"f{i}": 512 for i in range(n)})
    local = LocalFileSystem()
    report = copy_files(local, str(tmp_path / "src"), local, str(tmp_path / "dst"), entries, workers=4, link=False)
    assert report.files == n and same_bytes(tmp_path / "src", tmp_path / "dst", entries)
    per_thread = Counter(by_thread.values())
    assert len(per_thread) == 4  # the other three joined after two windows
    first = max(per_thread.values())
    assert first >= 2 * SERIAL_PROBE  # the two windows' files were the first thread's alone


def test_a_corrupted_file_in_the_one_thread_stops_the_copy(tmp_path: Path) -> None:
    entries = make(tmp_path / "src", {f"f{i:03d}": 256 for i in range(100)})
    (tmp_path / "src" / "f050").write_bytes(b"x" * 256)  # not what the manifest says
    local = LocalFileSystem()
    with pytest.raises(ChecksumMismatchError, match="f050"):
        copy_files(local, str(tmp_path / "src"), local, str(tmp_path / "dst"), entries, workers=8, link=False)
    assert not (tmp_path / "dst" / "f050").exists()
    copied = {p.name for p in (tmp_path / "dst").iterdir()}
    assert copied and "f099" not in copied  # files after the failure were not started


def test_two_windows_blocked_in_a_row_let_the_others_in() -> None:
    busy = _SerialProbe(True)
    assert not any(busy.window(1.0, 0.1) for _ in range(5))  # computing (or waiting for a CPU): one thread
    assert busy.serial
    flaky = _SerialProbe(True)
    assert [flaky.window(1.0, b) for b in (0.9, 0.1, 0.9, 0.1, 0.9)] == [False] * 5  # never two in a row
    waiting = _SerialProbe(True)
    assert [waiting.window(1.0, 0.8), waiting.window(1.0, 0.7)] == [False, True]
    assert not waiting.serial


def test_a_window_counts_only_files_copied_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = _SerialProbe(True)
    judged: list[tuple[float, float]] = []

    def window(wall: float, blocked: float) -> bool:
        judged.append((wall, blocked))
        return False

    monkeypatch.setattr(probe, "window", window)
    for _ in range(SERIAL_PROBE - 1):
        probe.before(alone=True)
        assert probe.after() is False
    probe.before(alone=False)  # a large file started meanwhile: the window starts over
    assert probe.after() is False
    assert judged == []
    for _ in range(SERIAL_PROBE):
        probe.before(alone=True)
        probe.after()
    assert len(judged) == 1  # one whole window of files copied alone
    wall, blocked = judged[0]
    assert wall > 0 and blocked <= wall


def test_the_wait_for_a_cpu_is_read_from_the_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = tmp_path / "schedstat"
    stat.write_text("123456789 2500000000 42\n")  # on-CPU ns, run-queue wait ns, time slices
    monkeypatch.setattr(engine, "_SCHEDSTAT", str(stat))
    assert _runqueue_seconds() == 2.5
    monkeypatch.setattr(engine, "_SCHEDSTAT", str(tmp_path / "missing"))  # not Linux: no wait is known
    assert _runqueue_seconds() == 0.0
