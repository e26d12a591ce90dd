"""The transition recorder: every CU state change of this agent, batched into few coordination calls.

Workers hand their transitions to one :class:`Recorder` thread instead of each making its own round
trip. The thread takes everything queued, sends it as one
:meth:`~pilotdata.coordination.Coordination.transition_many` call (a single script on Redis, a single
transaction on SQLite) and hands each result back; while a call is in flight the next batch gathers.
Requests are applied in the order they were handed in, so a CU's ``Running`` always reaches the
server before its ``Done``.

A worker can wait for its result (:meth:`Recorder.move`) or go on and be told later
(:meth:`Recorder.submit` with a callback; it returns the :class:`QueuedMove`): the agent starts a
CU's process without waiting for its ``Running`` to be stored and frees the slots as soon as the
process has exited, so the round trips overlap with the next CU instead of adding to every CU's time.
A move that does not apply (someone else moved the CU: a client cancelled it, a detector requeued it)
is reported to the callback, which interrupts the worker or lets the CU go; nothing is completed twice
because every move is compare-and-set on the state the worker last wrote.

A batch holding only moves nobody waits for lingers up to :data:`LINGER` seconds for more before it
is sent (a waited-for move, a full batch, :meth:`Recorder.flush` and :meth:`Recorder.close` end the
linger; other moves join the batch without waking the thread): the CUs never wait for those moves, and
ten moves per call cost the agent and the server far less than one call each.

A failing call (coordination unreachable) is retried with back-off for up to :data:`RETRY_FOR`
seconds, then the error goes to every waiter and callback of that batch. A retried move that finds
its own target state, or the target of a later move of the same CU in that batch, already stored (the
first try applied, its reply was lost) counts as applied.
Callbacks run on the recorder thread: they must be short and must not wait for the recorder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pilotdata.coordination import Coordination, TransitionRequest, TransitionResult
from pilotdata.coordination.reconnect import applied_on_retry
from pilotdata.errors import CoordinationError
from pilotdata.states import Kind

log = logging.getLogger(__name__)

RETRY_FOR = 60.0
"""Seconds a batch is retried while the coordination backend cannot be reached."""

MAX_BATCH = 500
"""Most requests sent in one call."""

LINGER = 0.005
"""Seconds a batch of moves nobody waits for gathers more before it is sent."""

Callback = Callable[[TransitionResult | None, BaseException | None], None]
"""``callback(result, error)``: exactly one of the two is not None."""


@dataclass
class QueuedMove:
    """One queued move and, once sent, its outcome."""

    request: TransitionRequest
    callback: Callback | None = None
    urgent: bool = False
    """Someone waits for the result: send without lingering."""
    result: TransitionResult | None = None
    error: BaseException | None = None
    _sent: bool = field(default=False, repr=False)
    _event: threading.Event | None = field(default=None, repr=False)
    """Made by the first :meth:`wait` before the move was sent: most moves are never waited for (their
    callback reports), and an Event for each was a measurable share of the agent's CPU per CU."""

    @property
    def sent(self) -> bool:
        """Whether the move was sent (its :attr:`result` or :attr:`error` is there)."""
        return self._sent

    def wait(self) -> TransitionResult:
        """Block until the move was sent; its result, or the error the call raised."""
        with _WAKE_LOCK:
            if not self._sent and self._event is None:
                self._event = threading.Event()
            event = self._event
        if event is not None:
            event.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def _finished(self, result: TransitionResult | None, error: BaseException | None) -> None:
        """Record the outcome and wake a waiter, if any."""
        with _WAKE_LOCK:
            self.result, self.error, self._sent = result, error, True
            event = self._event
        if event is not None:
            event.set()


_WAKE_LOCK = threading.Lock()
"""Orders a move's sending against a first :meth:`QueuedMove.wait` (held for a few instructions)."""


class Recorder:
    """Batches CU transitions (see the module docstring). :meth:`start` it, :meth:`close` it at the end."""

    def __init__(self, coord: Coordination, *, retry_for: float = RETRY_FOR, linger: float = LINGER) -> None:
        self.coord = coord
        self.retry_for = retry_for
        self.linger = linger
        self._hurry = 0  # flushes in progress: no lingering
        self._queue: deque[QueuedMove] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._lingering = False
        """The thread waits for its linger to end (only urgent or full batches wake it)."""
        self._sending: set[str] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="transition-recorder", daemon=True)

    def start(self) -> None:
        """Start the recorder thread."""
        self._thread.start()

    # ------------------------------------------------------------------ API
    def submit(
        self, request: TransitionRequest, callback: Callback | None = None, *, urgent: bool = False
    ) -> QueuedMove:
        """Queue a CU move; ``callback(result, error)`` runs on the recorder thread once it was sent.

        ``urgent``: the caller will wait for the result, so the batch is sent without lingering.
        """
        item = QueuedMove(request, callback, urgent)
        with self._cond:
            if self._closed:
                raise CoordinationError("the agent's transition recorder is closed")
            self._queue.append(item)
            # a lingering batch is sent when its linger ends: waking the thread for every move nobody
            # waits for would cost a thread switch per move and send nothing sooner
            if urgent or not self._lingering or len(self._queue) >= MAX_BATCH:
                self._cond.notify_all()
        return item

    def move(self, request: TransitionRequest) -> TransitionResult:
        """Queue a CU move and wait for its result."""
        return self.submit(request, urgent=True).wait()

    def pending_ids(self) -> set[str]:
        """Ids of the CUs with a move queued or in flight (the agent counts them as its own)."""
        with self._cond:
            ids = {p.request.id for p in self._queue}
            ids.update(self._sending)
        return ids

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far was sent; False if ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._hurry += 1
            self._cond.notify_all()
            try:
                while self._queue or self._busy:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
            finally:
                self._hurry -= 1
        return True

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (if the thread was started), then stop the thread."""
        if self._thread.ident is not None:
            self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # -------------------------------------------------------------- thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                self._busy = True
                self._gather()
                batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
                self._sending = {p.request.id for p in batch}
            try:
                self._send(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._sending = set()
                    self._cond.notify_all()

    def _gather(self) -> None:
        """Linger (lock held) while the queue holds only moves nobody waits for; see the module docstring."""
        end = time.monotonic() + self.linger
        try:
            while len(self._queue) < MAX_BATCH and not self._closed and not self._hurry:
                if any(p.urgent for p in self._queue):
                    return
                left = end - time.monotonic()
                if left <= 0:
                    return
                self._lingering = True
                self._cond.wait(left)
        finally:
            self._lingering = False

    def _send(self, batch: list[QueuedMove]) -> None:
        requests = [p.request for p in batch]
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        retried = False
        while True:
            try:
                results = self.coord.transition_many(Kind.CU, requests)
                break
            except Exception as exc:
                outage = isinstance(exc, CoordinationError)  # anything else is a bug: no point retrying
                if not outage or time.monotonic() + delay > deadline:
                    log.error("could not record %d CU transition(s): %s", len(batch), exc, exc_info=not outage)
                    for p in batch:
                        self._finish(p, None, exc)
                    return
                if not retried:
                    log.warning("recording CU transitions failed, retrying: %s", exc)
                retried = True
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        if retried:  # the first try may have applied moves (and the CU's next ones); only the reply was lost
            results = applied_on_retry(requests, results)
        for p, result in zip(batch, results, strict=True):
            self._finish(p, result, None)

    @staticmethod
    def _finish(p: QueuedMove, result: TransitionResult | None, error: BaseException | None) -> None:
        p._finished(result, error)
        if p.callback is not None:
            try:
                p.callback(result, error)
            except Exception:
                log.exception("CU %s: transition callback failed", p.request.id)
