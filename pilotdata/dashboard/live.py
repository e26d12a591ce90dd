"""The dashboard's live state: one background thread that refreshes, and responses cached per generation.

:class:`LiveState` owns the one thread that calls :meth:`Inspector.refresh` (draining new coordination
events into the history and its index) every ``interval`` seconds. Each refresh that finds something new
(events drained, a change in the live pilots' states, claims or queues, a DataUnit copy started or ended,
another current run), or that comes ``max_age`` seconds after the last change, starts a new
**generation**. Every API response is computed at most once per generation and key (concurrent requests
for the same key wait for the one computation) and served from memory until the next generation; a
failed computation is not cached.

The same thread scans the DataUnit records for replicas being copied (the transfers in flight): DataUnits
are few next to ComputeUnits, and the scan is spaced out so that it takes at most a tenth of the time
when it is slow. It never walks the ComputeUnits.

A failed refresh (coordination or history unreachable) keeps the last generation and is reported by
:attr:`Snapshot.error` until a refresh succeeds again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pilotdata.dashboard.panels import PendingReplica
from pilotdata.inspect import Inspector
from pilotdata.records import DESCRIPTION, RUN, ReplicaStatus, du_size, replicas
from pilotdata.redaction import scrub
from pilotdata.states import Kind

log = logging.getLogger(__name__)
T = TypeVar("T")

SCAN_BATCH = 1000
"""DataUnit records read per coordination call while scanning for pending replicas."""
SCAN_SHARE = 0.1
"""The DataUnit scan takes at most this share of the time: after a scan of ``t`` seconds the next one
waits at least ``t / SCAN_SHARE``."""


@dataclass(frozen=True)
class Snapshot:
    """What the last refresh learned, and the generation it belongs to."""

    generation: int
    """Increases with every change; 0 until the first refresh ended."""
    refreshed: float | None
    """When the last successful refresh ended (epoch seconds)."""
    changed: float | None
    """When the generation last changed."""
    current_run: str | None
    in_flight: tuple[PendingReplica, ...] = ()
    scanned: float | None = None
    """When the DataUnits were last scanned for pending replicas."""
    scan_seconds: float = 0.0
    error: str | None = None
    """Why the last refresh failed (``None`` when it succeeded)."""
    error_since: float | None = None
    drained: int = 0
    """Events drained into the history since the dashboard started."""


@dataclass
class _Cache:
    generation: int = -1
    entries: OrderedDict[Hashable, Future[Any]] = field(default_factory=OrderedDict)


class LiveState:
    """The refresh thread and the per-generation response cache of one dashboard (see the module docstring).

    ``reconcile`` (optional) is called before a refresh, at most every ``reconcile_every`` seconds: the
    command line passes a function that reconciles pilots with their launchers and hands back the work of
    lost ones, as ``pdata status`` does. ``secrets`` are scrubbed from the errors it reports.
    """

    def __init__(self, inspector: Inspector, *, interval: float = 2.0, max_age: float = 10.0,
                 reconcile: Callable[[], None] | None = None, reconcile_every: float = 10.0,
                 secrets: Iterable[str] = (), max_entries: int = 1024) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, not {interval}")
        self.inspector = inspector
        self.interval = interval
        self.max_age = max_age
        self._reconcile = reconcile
        self._reconcile_every = reconcile_every
        self._reconciled = 0.0
        self._secrets = [s for s in secrets if s]
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._cache = _Cache()
        self._snapshot = Snapshot(0, None, None, None)
        self._fingerprint: Any = None
        self._next_scan = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the thread
    @property
    def snapshot(self) -> Snapshot:
        """The state after the last refresh."""
        return self._snapshot

    def start(self) -> None:
        """Start the refresh thread (the first refresh begins at once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="pdata-dashboard-refresh", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the refresh thread (after the refresh under way, if any)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.tick()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def tick(self) -> Snapshot:
        """One refresh (the thread calls it every ``interval``; tests and benchmarks may call it directly)."""
        old = self._snapshot
        now = time.time()
        try:
            if self._reconcile is not None and now - self._reconciled >= self._reconcile_every:
                self._reconciled = now
                self._reconcile()
            drained = self.inspector.refresh()
            current = self.inspector.current_run()
            pilots = tuple((p.id, p.state, p.busy_slots, p.claimed, p.queued)
                           for p in self.inspector.pilots(include_ended=False))
            in_flight, scanned, scan_seconds = old.in_flight, old.scanned, old.scan_seconds
            if time.monotonic() >= self._next_scan:
                t0 = time.monotonic()
                in_flight = tuple(self.scan_data_units())
                scan_seconds = time.monotonic() - t0
                scanned = time.time()
                self._next_scan = time.monotonic() + max(self.interval, scan_seconds / SCAN_SHARE)
        except Exception as exc:  # the thread must live on: report it, keep the last generation
            message = scrub(f"{type(exc).__name__}: {exc}", self._secrets)
            if old.error != message:
                log.warning("dashboard refresh failed: %s", message)
            self._snapshot = Snapshot(old.generation, old.refreshed, old.changed, old.current_run, old.in_flight,
                                      old.scanned, old.scan_seconds, message, old.error_since or now, old.drained)
            return self._snapshot
        fingerprint = (current, pilots, tuple((p.du, p.pd, p.since) for p in in_flight))
        end = time.time()
        stale = old.changed is None or end - old.changed >= self.max_age
        generation, changed = old.generation, old.changed
        if drained or stale or fingerprint != self._fingerprint:
            generation, changed = old.generation + 1, end
        self._fingerprint = fingerprint
        self._snapshot = Snapshot(generation, end, changed, current, in_flight, scanned, scan_seconds,
                                  None, None, old.drained + drained)
        return self._snapshot

    def scan_data_units(self) -> list[PendingReplica]:
        """Every DataUnit replica being copied (read from every DataUnit record, in batches)."""
        coord = self.inspector.coord
        ids = coord.list_ids(Kind.DU)
        out: list[PendingReplica] = []
        for start in range(0, len(ids), SCAN_BATCH):
            for rec in coord.get_many(Kind.DU, ids[start:start + SCAN_BATCH]):
                if rec is None:
                    continue
                for pd, replica in replicas(rec).items():
                    if replica.status is ReplicaStatus.PENDING:
                        desc = rec.data.get(DESCRIPTION) or {}
                        out.append(PendingReplica(rec.id, desc.get("name"), rec.data.get(RUN), pd, replica.time,
                                                  du_size(rec), rec.state))
        return out

    # ------------------------------------------------------------------ the cache
    def cached(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value (a response body, or what several share) for ``key`` in the current generation:
        computed once (concurrent callers wait for that one computation), then served from memory until
        the generation changes. Errors propagate and are not cached."""
        generation = self._snapshot.generation
        with self._lock:
            if self._cache.generation < generation:  # (a request that read an older generation uses the newer)
                self._cache = _Cache(generation)
            cache = self._cache
            future = cache.entries.get(key)
            owner = future is None
            if future is None:
                future = Future[Any]()
                cache.entries[key] = future
                while len(cache.entries) > self._max_entries:
                    cache.entries.popitem(last=False)
            else:
                cache.entries.move_to_end(key)
        if owner:
            try:
                future.set_result(compute())
            except BaseException as exc:
                with self._lock:
                    if cache.entries.get(key) is future:
                        del cache.entries[key]
                future.set_exception(exc)
        result: T = future.result()
        return result
