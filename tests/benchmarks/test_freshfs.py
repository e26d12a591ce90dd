"""benchmarks/_freshfs.py: a new ext4 per measurement, and the two benchmarks' ``--fresh-fs``.

Real loop mounts (root only): a made file system is an empty, mounted ext4 with the journal setting of
the disk it lives on; releasing it unmounts it and leaves nothing under the directory it was made in,
also while a process still holds a file open on it; the benchmarks run with ``--fresh-fs`` and leave no
mount and no image behind; without root the option is refused with exit 2 and a reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _freshfs
from benchmarks._freshfs import FreshExt4, FreshFsError

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loop mounts need root")


def mounts() -> dict[str, str]:
    """Mount point -> file system type, from /proc/mounts."""
    out = {}
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        out[parts[1]] = parts[2]
    return out


def loops_under(directory: Path) -> list[str]:
    """Loop devices whose image is under ``directory`` (other runs' fresh file systems are not counted)."""
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE"], capture_output=True,
                         text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip().startswith(str(directory))]


def open_images() -> list[str]:
    """This process's descriptors on fresh-fs images (one would keep a removed image's blocks)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "pdata-fresh-" in target:
            found.append(target)
    return found


@needs_root
def test_a_made_file_system_is_an_empty_ext4_and_release_leaves_nothing(tmp_path: Path) -> None:
    under = tmp_path / "disk"
    under.mkdir()
    fresh = FreshExt4(under, 256 * 2**20)
    first, second = fresh.make(), fresh.make()
    assert first != second
    for mnt in (first, second):
        assert mounts().get(str(mnt)) == "ext4"
        assert sorted(p.name for p in mnt.iterdir()) == ["lost+found"]
        (mnt / "sandbox").mkdir()
        (mnt / "sandbox" / "stdout").write_text("x")
    assert len(list(under.iterdir())) == 2  # one image each
    assert _freshfs.has_journal(first) == fresh.journal  # the journal setting of the disk under it
    fresh.release(first)
    assert str(first) not in mounts() and not first.exists()
    assert len(list(under.iterdir())) == 1
    assert (second / "sandbox" / "stdout").read_text() == "x"  # the other one is untouched
    fresh.close()
    assert str(second) not in mounts() and not second.exists()
    assert list(under.iterdir()) == [] and loops_under(under) == []
    assert open_images() == []  # the images' blocks were given back
    with pytest.raises(ValueError, match="not made by this"):
        fresh.release(second)


@needs_root
def test_room_for_the_inodes_asked_for(tmp_path: Path) -> None:
    fresh = FreshExt4(tmp_path, 64 * 2**20, inodes=200_000)  # far more than 64 MiB gets by default
    try:
        assert os.statvfs(fresh.make()).f_files >= 200_000
    finally:
        fresh.close()


@needs_root
def test_a_busy_file_system_is_unmounted_lazily_after_the_wait(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_freshfs, "UNMOUNT_TIMEOUT", 0.5)
    fresh = FreshExt4(tmp_path, 256 * 2**20)
    mnt = fresh.make()
    holder = subprocess.Popen(["sleep", "60"], cwd=mnt)  # an agent still running in its sandbox
    try:
        fresh.release(mnt)
        assert str(mnt) not in mounts()
        assert list(tmp_path.iterdir()) == []  # the image is gone from the disk's directory
        assert holder.poll() is None  # nobody was killed
    finally:
        holder.kill()
        holder.wait()


def test_without_root_the_reason_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(FreshFsError, match="run as root"):
        FreshExt4(tmp_path, 2**30)


def test_a_missing_tool_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "mkfs.ext4" else "/bin/" + tool)
    with pytest.raises(FreshFsError, match=r"needs mkfs\.ext4"):
        FreshExt4(tmp_path, 2**30)


def _run(script: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PDATA_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@needs_root
def test_throughput_runs_each_pilot_on_a_new_file_system(tmp_path: Path) -> None:
    proc = _run("throughput.py", "--n", "100", "--backends", "sqlite", "--modes", "bulk", "--peers", "xargs",
                "--workdir", str(tmp_path), "--fresh-fs", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "a new ext4 (without a journal" in proc.stdout or "a new ext4 (with a journal" in proc.stdout
    assert "(a new ext4 for each run)" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith("pilot-data sqlite bulk"))
    assert "400 CU events in history" in row
    assert loops_under(tmp_path) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("pdata-fresh-")]


@needs_root
def test_staging_copies_locally_into_new_file_systems(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    proc = _run("staging.py", "--routes", "local", "--big-size", "1M", "--small-count", "50", "--repeat", "1",
                "--src-dir", str(src), "--workdir", str(tmp_path), "--fresh-fs", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "local copies each to a new ext4" in proc.stdout
    assert sum(line.startswith("local ") for line in proc.stdout.splitlines()) >= 4  # both data sets, twice
    # the host (processor, Python's speed) at the start and the end, as throughput.py prints it
    assert sum(line.startswith("host: ") and " parses a stored CU description in " in line
               for line in proc.stdout.splitlines()) == 2
    assert loops_under(tmp_path) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("pdata-fresh-")]


def test_without_root_the_benchmarks_refuse_fresh_fs_with_exit_2(tmp_path: Path) -> None:
    # as root, the script runs as nobody (setpriv): the check is the euid's, as a user would meet it
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    for script in ("throughput.py", "staging.py"):
        proc = subprocess.run([*drop, sys.executable, str(ROOT / "benchmarks" / script), "--fresh-fs"],
                              capture_output=True, text=True, timeout=120, check=False, cwd="/")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "--fresh-fs mounts a loop device: run as root" in proc.stderr
        assert not proc.stdout.strip() or "making data" not in proc.stdout
