"""Checksums of local files remembered with the ``stat`` they had, so a verified file is not re-read.

Linking a file (the local fast path) moves no bytes, but with ``verify`` on the engine must still
know that the source holds what the manifest says. Hashing it costs a full read -- 1 GiB at the
hash's speed on every link. :class:`VerifiedStats` remembers, for each local inode the engine has
hashed or written, the checksum together with the file's identity and change stamps: device,
inode, size, ``st_mtime_ns`` and ``st_ctime_ns``. A later copy of the same file skips the read if
all five still match; any write, truncation, ``chmod``, ``touch``, replacement by another file or
move to another filesystem changes one of them (``ctime`` cannot be set from user space, so even a
write followed by restoring the old mtime is seen) and the file is hashed again.

Links the engine makes itself change the inode's ``ctime`` (the link count) and, with
``read_only``, its mode: :meth:`VerifiedStats.carry` moves the record to the new stamps when size
and mtime show the content did not change in between.

A file changed in the current tick of the file system's clock is not recorded ("racily clean", as
git calls it). Where the kernel stamps files from a coarse clock (Linux before 6.13, and file systems
without fine-grained stamps: NFS, Lustre and others keep whole seconds), a second write within the
same tick leaves every stamp as it was, so stamps taken then cannot vouch for later bytes.
:meth:`VerifiedStats.record` therefore takes the clock read before the bytes were read
(:func:`fs_clock_ns`) and keeps the record only if the file's mtime is older than it (two seconds
older for a whole-second mtime): every write after that point gives a new mtime. Files the engine
writes itself are published with an mtime just before the clock (:func:`settle_mtime`), so they are
recorded at once (where the file system lets the engine set times; elsewhere at their next read). A
copy given no table (``stat_cache=None``) records nothing, so it leaves the stamps the writes gave.

What this does not catch: bytes changed below the filesystem (bit rot, a raw device write) --
``pdata verify`` reads every byte for that -- and a write that also puts the old mtime back within
the clock tick of the file's last metadata change. Records live in the process (a bounded LRU table,
:data:`VERIFIED` by default), so a new process hashes each file once.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict

__all__ = ["VERIFIED", "VerifiedStats", "fs_clock_ns", "settle_mtime", "settled"]

_Stamp = tuple[int, int, int]  # size, mtime_ns, ctime_ns


_CLOCK_REALTIME_COARSE = 5
"""Linux's clock id for the clock the kernel stamps file times from (``time`` does not name it)."""
_LINUX = sys.platform.startswith("linux")
_SECOND = 1_000_000_000
_WHOLE_SECOND_MARGIN = 2 * _SECOND
"""How much older than the clock a whole-second mtime must be (FAT keeps two-second stamps)."""


def fs_clock_ns() -> int:
    """The clock file stamps come from, in ns: the kernel's coarse real-time clock on Linux.

    A file changed from now on gets an mtime of at least this value (the kernel never stamps a
    file from an older tick than the one this reads; fine-grained stamps are later still).
    """
    if _LINUX:
        return time.clock_gettime_ns(_CLOCK_REALTIME_COARSE)
    return time.time_ns()


def settled(st: os.stat_result, since_ns: int) -> bool:
    """Whether every write to the file after ``since_ns`` (:func:`fs_clock_ns`) must change its mtime.

    True when ``st``'s mtime is older than ``since_ns``; a whole-second mtime (file systems that keep
    no fraction) must be :data:`_WHOLE_SECOND_MARGIN` older, since a write in the same second would
    get the same stamp.
    """
    mtime = st.st_mtime_ns
    if mtime % _SECOND == 0:
        return mtime + _WHOLE_SECOND_MARGIN <= since_ns
    return mtime < since_ns


def settle_mtime(fd: int) -> bool:
    """Stamp the open file ``fd`` (atime and mtime) one nanosecond before :func:`fs_clock_ns`.

    For a file just written: its own last write can have the stamp a later write in the same clock
    tick would get, so its stat could not show that write. One nanosecond before the tick is as close
    to the truth as a stamp can be while every later write still moves it. Best effort: where the file
    system refuses (an NFS export that squashes root owns the file as another user, some FUSE file
    systems), the file keeps its stamps, is not recorded (:func:`settled`), and is hashed at its next
    link; False then.
    """
    stamp = fs_clock_ns() - 1
    try:
        os.utime(fd, ns=(stamp, stamp))
    except OSError:
        return False
    return True


def _key(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _stamp(st: os.stat_result) -> _Stamp:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class VerifiedStats:
    """A thread-safe table ``(device, inode) -> (size, mtime, ctime, {algorithm: digest})``, LRU-bounded."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._table: OrderedDict[tuple[int, int], tuple[_Stamp, dict[str, str]]] = OrderedDict()
        self.hits = 0
        """Lookups answered without reading the file (for tests and benchmarks)."""

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, st: os.stat_result, algorithm: str) -> str | None:
        """The ``algorithm`` checksum recorded for the file ``st`` describes, if its stamps still match."""
        with self._lock:
            found = self._table.get(_key(st))
            if found is None:
                return None
            stamp, digests = found
            if stamp != _stamp(st):
                del self._table[_key(st)]  # changed since it was verified: never trust it again
                return None
            digest = digests.get(algorithm)
            if digest is not None:
                self._table.move_to_end(_key(st))
                self.hits += 1
            return digest

    def record(self, st: os.stat_result, algorithm: str, digest: str, since_ns: int) -> bool:
        """Remember that the file ``st`` describes hashes to ``digest``; whether it was remembered.

        ``st`` is the stat taken before the bytes were read, ``since_ns`` the :func:`fs_clock_ns` read
        after it and before the first byte. A file whose mtime is not older than that (it may be
        written again within the same clock tick without a trace in its stamps) is not recorded, and
        any record it had is dropped: it is hashed again next time.
        """
        with self._lock:
            key = _key(st)
            if not settled(st, since_ns):
                self._table.pop(key, None)
                return False
            found = self._table.get(key)
            digests = found[1] if found is not None and found[0] == _stamp(st) else {}
            digests[algorithm] = digest
            self._table[key] = (_stamp(st), digests)
            self._table.move_to_end(key)
            while len(self._table) > self.limit:
                self._table.popitem(last=False)
            return True

    def carry(self, before: os.stat_result, after: os.stat_result) -> None:
        """Move a record to ``after``'s stamps after a metadata-only change made by the engine itself.

        Only if the inode, size and mtime are those of ``before`` (the record's): a write in between
        would have moved the mtime, and then the record is dropped.
        """
        with self._lock:
            found = self._table.pop(_key(before), None)
            if found is None or found[0] != _stamp(before):
                return
            if _key(after) == _key(before) and (after.st_size, after.st_mtime_ns) == found[0][:2]:
                self._table[_key(after)] = (_stamp(after), found[1])

    def forget(self, st: os.stat_result) -> None:
        """Drop the record of the file ``st`` describes."""
        with self._lock:
            self._table.pop(_key(st), None)

    def clear(self) -> None:
        """Drop every record."""
        with self._lock:
            self._table.clear()


VERIFIED = VerifiedStats()
"""The process's table, used by :func:`~transfer.copy.copy_files` unless told otherwise."""
