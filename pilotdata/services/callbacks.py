"""State-change callbacks: one watcher thread per session tails the event stream.

``watcher_for(session).add(entity_id, fn)`` calls ``fn()`` once, from the watcher thread, when the
entity's event stream shows it reaching a final state (or at once if it already has).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pilotdata.session import Session
from pilotdata.states import is_final

log = logging.getLogger(__name__)

_watchers: dict[int, CallbackWatcher] = {}
_lock = threading.Lock()


class CallbackWatcher:
    """Runs registered callbacks when their entity reaches a final state."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._cursor = session.coord.last_cursor()
        self._stopped = threading.Event()
        session.on_close(self.stop)
        self._thread = threading.Thread(target=self._run, name="pdata-callbacks", daemon=True)
        self._thread.start()

    def add(self, entity_id: str, fn: Callable[[], None]) -> None:
        """Register ``fn`` for ``entity_id``; runs immediately if the entity is already final."""
        with self._lock:
            self._callbacks.setdefault(entity_id, []).append(fn)
        for kind in ("cu", "du", "pilot"):
            rec = self._session.coord.get_many(kind, [entity_id])[0]
            if rec is not None:
                if is_final(rec.state):
                    self._fire(entity_id)
                return

    def _fire(self, entity_id: str) -> None:
        with self._lock:
            fns = self._callbacks.pop(entity_id, [])
        for fn in fns:
            try:
                fn()
            except Exception:  # a user callback must not kill the watcher
                log.exception("callback for %s raised", entity_id)

    def stop(self) -> None:
        """Stop the watcher thread (callbacks not yet fired are dropped)."""
        self._stopped.set()
        self._thread.join(timeout=5)
        with _lock:
            _watchers.pop(id(self._session), None)

    def _run(self) -> None:
        coord = self._session.coord
        while not self._stopped.is_set():
            try:
                events = coord.events_after(self._cursor, limit=1000, block=0.5)
            except Exception:  # a transient backend error must not end every pending callback
                log.exception("callback watcher: reading events failed; retrying")
                self._stopped.wait(1.0)
                continue
            for event in events:
                self._cursor = event.cursor
                if is_final(event.to_state) and event.id in self._callbacks:
                    self._fire(event.id)


def watcher_for(session: Session) -> CallbackWatcher:
    """The session's watcher (started on first use)."""
    with _lock:
        watcher = _watchers.get(id(session))
        if watcher is None:
            watcher = _watchers[id(session)] = CallbackWatcher(session)
        return watcher
