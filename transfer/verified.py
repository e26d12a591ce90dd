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

What this does not catch: bytes changed below the filesystem (bit rot, a raw device write) --
``pdata verify`` reads every byte for that. Records live in the process (a bounded LRU table,
:data:`VERIFIED` by default), so a new process hashes each file once.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

__all__ = ["VERIFIED", "VerifiedStats"]

_Stamp = tuple[int, int, int]  # size, mtime_ns, ctime_ns


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

    def record(self, st: os.stat_result, algorithm: str, digest: str) -> None:
        """Remember that the file ``st`` describes (taken before it was read) hashes to ``digest``."""
        with self._lock:
            key = _key(st)
            found = self._table.get(key)
            digests = found[1] if found is not None and found[0] == _stamp(st) else {}
            digests[algorithm] = digest
            self._table[key] = (_stamp(st), digests)
            self._table.move_to_end(key)
            while len(self._table) > self.limit:
                self._table.popitem(last=False)

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
