"""Liveness: the heartbeat thread, and detection of other pilots' deaths.

Every ``ttl / 3`` seconds the thread

1. renews the pilot's heartbeat key (``coord.heartbeat(pilot, ttl)``);
2. reads the pilot's own state: if a client moved it to a final state (Canceled), the agent stops;
3. runs lost-pilot detection (DIANE's *lost task max reassign*): for each pilot in
   ``coord.expired_pilots()`` it calls ``coord.requeue_lost(p, max_reassign)``, which atomically takes
   that pilot's claimed work back (only one of several concurrent detectors gets it), and moves the
   lost pilot to Failed;
4. adopts the unbound CUs of clients whose binder lease lapsed (``coord.adopt_unbound()``): a client
   that died between recording CUs and binding them strands nothing.

Steps 3 and 4 run only once this agent has reached coordination for a whole TTL without a failed
round: after an outage (Redis restarted, the network back) every pilot's heartbeat has lapsed, and
the others need a round to renew theirs; declaring them lost at once would stop every pilot at the
same moment.

A failing coordination call is logged and retried on the next round; the thread never dies of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pilotdata.coordination import Coordination, RequeueResult, TransitionRequest
from pilotdata.errors import CoordinationError
from pilotdata.states import Kind, PilotState, is_final

log = logging.getLogger(__name__)


def detect_lost_pilots(coord: Coordination, me: str, max_reassign: int) -> list[RequeueResult]:
    """Requeue the claimed work of every expired pilot but ``me`` and mark those pilots Failed."""
    results: list[RequeueResult] = []
    for lost in coord.expired_pilots():
        if lost == me:
            continue
        result = coord.requeue_lost(lost, max_reassign)
        results.append(result)
        detail = {
            "reason": "heartbeat expired",
            "detected_by": me,
            "requeued": len(result.requeued),
            "failed": len(result.failed),
        }
        request = TransitionRequest(lost, PilotState.FAILED.value, detail=detail)
        outcome = coord.transition_many(Kind.PILOT, [request])
        if result.requeued or result.failed or outcome[0].ok:
            log.warning(
                "pilot %s lost (heartbeat expired): requeued %d CU(s), failed %d (max reassign %d)",
                lost, len(result.requeued), len(result.failed), max_reassign,
            )
    return results


class Heartbeat(threading.Thread):
    """Background thread: heartbeat, own-state check and lost-pilot detection every ``ttl / 3``."""

    def __init__(
        self,
        coord: Coordination,
        pilot: str,
        ttl: float,
        max_reassign: int,
        on_final: Callable[[str], None],
    ) -> None:
        super().__init__(name=f"heartbeat-{pilot}", daemon=True)
        self.coord = coord
        self.pilot = pilot
        self.ttl = ttl
        self.max_reassign = max_reassign
        self.on_final = on_final
        self._stopping = threading.Event()
        self._up_since: float | None = time.monotonic()
        """Monotonic time of the first good round after the last failed one (``None`` while failing)."""

    @property
    def interval(self) -> float:
        """Seconds between rounds."""
        return self.ttl / 3.0

    def beat(self) -> None:
        """One round: renew the heartbeat, check the own state, detect lost pilots, adopt unbound CUs."""
        self.coord.heartbeat(self.pilot, self.ttl)
        if self._up_since is None:
            self._up_since = time.monotonic()
        state = self.coord.get(Kind.PILOT, self.pilot).state
        if is_final(state):
            self.on_final(state)
        if time.monotonic() - self._up_since < self.ttl:  # just back from an outage: let others renew
            return
        detect_lost_pilots(self.coord, self.pilot, self.max_reassign)
        adopted = self.coord.adopt_unbound()
        if adopted:
            log.warning("adopted %d CU(s) a client recorded but never bound (its lease lapsed)", len(adopted))

    def run(self) -> None:
        """Loop until :meth:`stop`."""
        while not self._stopping.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # keep beating: a dead heartbeat thread would get our work requeued
                self._up_since = None
                if isinstance(exc, CoordinationError):
                    log.warning("heartbeat round of pilot %s failed; retrying next round: %s", self.pilot, exc)
                else:
                    log.exception("heartbeat round of pilot %s failed; retrying next round", self.pilot)

    def stop(self) -> None:
        """End the loop (the caller then retires the pilot)."""
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(self.interval + 5.0)
