"""Slot accounting: how many of the pilot's slots (cores) are in use.

A CU takes ``number_of_processes`` slots for as long as it runs (staging included). The pool is a
counter guarded by a condition variable, so the main loop can wait for slots to come back instead
of polling.
"""

from __future__ import annotations

import threading


class SlotPool:
    """A counter of free slots, thread-safe, with a wait for "some slots were released"."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"a pilot needs at least one slot, got {total}")
        self.total = total
        self._free = total
        self._cond = threading.Condition()

    @property
    def free(self) -> int:
        """Slots not allocated right now."""
        with self._cond:
            return self._free

    @property
    def used(self) -> int:
        """Slots allocated right now."""
        with self._cond:
            return self.total - self._free

    def fits(self, n: int) -> bool:
        """Whether a CU needing ``n`` slots can ever run on this pilot."""
        return 1 <= n <= self.total

    def try_allocate(self, n: int) -> bool:
        """Take ``n`` slots if that many are free; False (nothing taken) otherwise."""
        if not self.fits(n):
            raise ValueError(f"cannot allocate {n} slots on a pilot with {self.total}")
        with self._cond:
            if self._free < n:
                return False
            self._free -= n
            return True

    def release(self, n: int) -> None:
        """Give ``n`` slots back and wake waiters."""
        with self._cond:
            if self._free + n > self.total:
                raise ValueError(f"releasing {n} slots would exceed the pilot's {self.total}")
            self._free += n
            self._cond.notify_all()

    def wait_for_free(self, n: int, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until at least ``n`` slots are free; return whether they are."""
        with self._cond:
            return self._cond.wait_for(lambda: self._free >= n, timeout)
