"""A new ext4 file system for each measurement that creates many files.

Creating a file on ext4 costs 20-60 us on a file system at rest, and 0.3-3 ms for a while after many
files were deleted near it: when it allocates an inode, the kernel reads and skips the ones deleted in
the last seconds (``recently_deleted``). A benchmark that deletes one round's files before the next,
or that runs after a test suite's clean-up, therefore measures whatever was deleted before it, and its
figure moves by 3-5x between runs (``docs/benchmarks.md``). :class:`FreshExt4` takes that state out: each
call of :meth:`FreshExt4.make` returns the mount point of a new ext4 made in a sparse image file on the
disk under ``under`` and loop-mounted, with the journal setting of the file system that holds ``under``
(these VMs' root ext4 has none) and its inode tables written at ``mkfs`` time (no lazy initialisation
running in the background during the measurement). :meth:`FreshExt4.close` unmounts each one and
removes its image, which frees blocks on the disk but deletes no inode there.

Needs root (``mount``), ``mkfs.ext4`` and a loop device; :class:`FreshFsError` says which is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import servers

__all__ = ["FreshExt4", "FreshFsError", "has_journal", "mount_of"]

UNMOUNT_TIMEOUT = 30.0
"""Seconds to wait for a file system to be free (an agent still exiting) before a lazy unmount."""


class FreshFsError(RuntimeError):
    """A fresh file system cannot be made here; the message says why."""


def mount_of(path: Path) -> tuple[str, str]:
    """(device, file system type) of the mount holding ``path`` (longest mount point prefix of its real path)."""
    best, device, kind = "", "?", "?"
    real = os.path.realpath(path)
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
            best, device, kind = mount, fields[0], fields[2]
    return device, kind


def has_journal(path: Path) -> bool:
    """Whether the ext3/ext4 file system holding ``path`` has a journal (a ``/proc/fs/jbd2`` entry, named
    after the block device: ``vda-8``, ``dm-0-8``, ``loop3-8``)."""
    st = os.stat(path)
    block = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    name = block.resolve().name if block.exists() else Path(mount_of(path)[0]).name
    jbd2 = Path("/proc/fs/jbd2")
    return jbd2.is_dir() and any(entry.name.rsplit("-", 1)[0] == name for entry in jbd2.iterdir())


class FreshExt4:
    """New ext4 file systems in image files under ``under``, each mounted on a directory of its own."""

    def __init__(self, under: Path, size: int, *, inodes: int = 0) -> None:
        if os.geteuid() != 0:
            raise FreshFsError("--fresh-fs mounts a loop device: run as root")
        for tool in ("mkfs.ext4", "mount", "umount"):
            if shutil.which(tool) is None:
                raise FreshFsError(f"--fresh-fs needs {tool}, which is not on PATH (apt install e2fsprogs mount)")
        self.under = under
        self.size = size
        self.inodes = inodes
        """Inodes to make room for (``mkfs -N``; 0: mkfs's default, one per 16 KiB)."""
        self.journal = has_journal(under)
        self._mounted: list[tuple[Path, Path]] = []

    def describe(self) -> str:
        """One line for the benchmark's output: where the images are and what is made."""
        journal = "with a journal" if self.journal else "without a journal, as"
        device, kind = mount_of(self.under)
        return (f"a new ext4 ({journal} {device}'s {kind}) in a {self.size / 2**30:.1f} GiB sparse image under "
                f"{self.under} for each measurement, loop-mounted")

    def make(self) -> Path:
        """Make, mount and return a new empty ext4 (its root directory)."""
        fd, name = tempfile.mkstemp(prefix="pdata-fresh-", suffix=".img", dir=self.under)
        os.close(fd)  # an open descriptor would keep the image's blocks after release() removed it
        image = Path(name)
        mount_point = Path(tempfile.mkdtemp(prefix="pdata-fresh-mnt-"))
        try:
            os.truncate(image, self.size)
            features = [] if self.journal else ["-O", "^has_journal"]
            inodes = ["-N", str(max(self.inodes, self.size // 2**14))] if self.inodes else []
            _run(["mkfs.ext4", "-q", "-F", *features, *inodes, "-E", "lazy_itable_init=0,lazy_journal_init=0",
                  str(image)])
            _run(["mount", "-o", "loop", str(image), str(mount_point)])
        except BaseException:
            image.unlink(missing_ok=True)
            mount_point.rmdir()
            raise
        self._mounted.append((mount_point, image))
        return mount_point

    @contextlib.contextmanager
    def mounted(self) -> Iterator[Path]:
        """:meth:`make` one for the ``with`` block, :meth:`release` it after."""
        mount_point = self.make()
        try:
            yield mount_point
        finally:
            self.release(mount_point)

    def release(self, mount_point: Path) -> None:
        """Unmount one file system made here and remove its image (waits while it is busy, then unmounts lazily)."""
        for i, (mnt, image) in enumerate(self._mounted):
            if mnt == mount_point:
                _unmount(mnt)  # raises if even a lazy unmount fails: the record stays for close()
                del self._mounted[i]
                image.unlink(missing_ok=True)
                mnt.rmdir()
                return
        raise ValueError(f"{mount_point} was not made by this FreshExt4")

    def close(self) -> None:
        """Release every file system still mounted."""
        while self._mounted:
            self.release(self._mounted[-1][0])


def _unmount(mount_point: Path) -> None:
    def free() -> bool:
        return subprocess.run(["umount", str(mount_point)], capture_output=True).returncode == 0

    try:
        servers.wait_until(free, UNMOUNT_TIMEOUT, f"{mount_point} to be unmounted")
    except AssertionError:
        _run(["umount", "-l", str(mount_point)])


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise FreshFsError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
