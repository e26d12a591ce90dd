"""The transition recorder (agent/recorder.py) against real coordination backends (SQLite, Redis).

Outages are made by wrapping a real backend handle: the wrapper delegates everything to it and only
counts, fails or loses the reply of ``transition_many`` calls, which is all the recorder uses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import pytest

from agent.recorder import Recorder
from pilotdata.coordination import Coordination, TransitionRequest, TransitionResult
from pilotdata.errors import CoordinationError
from pilotdata.states import Kind
from tests.agent.conftest import Backend
from tests.servers import wait_until


class Wrapped:
    """A real coordination handle whose ``transition_many`` calls are counted and can fail.

    ``fail_first``: the first that many calls raise :class:`CoordinationError` without touching the
    backend (an outage). ``lose_first``: the first that many calls are applied, then raise (the reply
    was lost). ``bug``: every call raises this exception instead. Everything else is the real handle.
    """

    def __init__(self, inner: Coordination, *, fail_first: int = 0, lose_first: int = 0,
                 bug: Exception | None = None) -> None:
        self.inner = inner
        self.fail_first = fail_first
        self.lose_first = lose_first
        self.bug = bug
        self.calls = 0
        """transition_many calls made by the recorder (failed ones included)."""
        self.applied = 0
        """Calls that reached the backend."""
        self.sizes: list[int] = []
        """Requests per call that reached the backend."""
        self._lock = threading.Lock()

    def transition_many(self, kind: Kind | str, requests: Sequence[TransitionRequest]) -> list[TransitionResult]:
        """Count the call, fail it as configured, else apply it on the real backend."""
        with self._lock:
            self.calls += 1
            n = self.calls
        if self.bug is not None:
            raise self.bug
        if n <= self.fail_first:
            raise CoordinationError(f"test outage: call {n} of transition_many refused")
        results = self.inner.transition_many(kind, requests)
        with self._lock:
            self.applied += 1
            self.sizes.append(len(requests))
        if n <= self.fail_first + self.lose_first:
            raise CoordinationError(f"test outage: reply of call {n} of transition_many lost")
        return results

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def as_coordination(self) -> Coordination:
        """This wrapper, typed as what the recorder takes (it only calls ``transition_many``)."""
        return cast(Coordination, self)


def _cus(coord: Coordination, count: int, state: str = "Pending", prefix: str = "cu") -> list[str]:
    """Create ``count`` CUs and move them to ``state`` (Pending or Running)."""
    ids = [f"{prefix}-{n:04d}" for n in range(count)]
    coord.create_many(Kind.CU, [(i, {"description": {}}) for i in ids])
    path = ["Pending", "Running"][: ["Pending", "Running"].index(state) + 1]
    for to in path:
        results = coord.transition_many(Kind.CU, [TransitionRequest(i, to) for i in ids])
        assert all(r.ok for r in results)
    return ids


def _transitions(coord: Coordination, cu_id: str) -> list[tuple[str | None, str | None]]:
    """The (from, to) transition events of one CU, oldest first."""
    return [(e.from_state, e.to_state) for e in coord.events_after(None, limit=100000)
            if e.entity == "cu" and e.id == cu_id]


StartRecorder = Callable[..., Recorder]
"""``started(coord, **Recorder keyword arguments)``: a started recorder, closed after the test."""


@pytest.fixture
def started() -> Iterator[StartRecorder]:
    """Start recorders and close them at the end of the test (even when it failed)."""
    recorders: list[Recorder] = []

    def start(coord: Coordination, **kwargs: float) -> Recorder:
        recorder = Recorder(coord, **kwargs)
        recorder.start()
        recorders.append(recorder)
        return recorder

    yield start
    for recorder in recorders:
        recorder.close(10)


# ------------------------------------------------------------------------ applying, order, results
def test_many_threads_submitting_all_apply_each_cu_in_order(backend: Backend, started: StartRecorder) -> None:
    coord = backend.coord
    threads, per_thread = 6, 30
    ids = _cus(coord, threads * per_thread)
    recorder = started(coord)
    results: dict[tuple[str, str], TransitionResult] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def callback(result: TransitionResult | None, error: BaseException | None) -> None:
        with lock:
            if error is not None:
                errors.append(error)
            else:
                assert result is not None
                results[(result.id, result.state)] = result

    def work(mine: list[str]) -> None:
        for cu in mine:  # Running then Done for the same CU, nothing awaited in between
            recorder.submit(TransitionRequest(cu, "Running", expected="Pending"), callback)
            recorder.submit(TransitionRequest(cu, "Done", expected="Running"), callback)

    workers = [threading.Thread(target=work, args=(ids[n::threads],)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert recorder.flush(30)
    assert not errors
    assert len(results) == 2 * len(ids)
    assert all(r.ok for r in results.values())
    assert {results[(cu, "Running")].previous for cu in ids} == {"Pending"}
    assert {results[(cu, "Done")].previous for cu in ids} == {"Running"}
    assert coord.states(Kind.CU, ids) == ["Done"] * len(ids)
    assert _transitions(coord, ids[0])[-2:] == [("Pending", "Running"), ("Running", "Done")]


def test_a_cu_moved_through_every_stage_without_waiting_arrives_in_order(
    backend: Backend, started: StartRecorder
) -> None:
    coord = backend.coord
    [cu] = _cus(coord, 1)
    recorder = started(coord, linger=0.05)
    path = ["StagingInput", "Running", "StagingOutput", "Done"]
    pendings = []
    before = "Pending"
    for to in path:
        pendings.append(recorder.submit(TransitionRequest(cu, to, expected=before)))
        before = to
    assert recorder.flush(10)
    assert [p.wait().ok for p in pendings] == [True] * 4
    assert _transitions(coord, cu)[-4:] == list(zip(["Pending", *path[:-1]], path))


def test_move_returns_the_result_and_the_callback_gets_it_too(backend: Backend, started: StartRecorder) -> None:
    coord = backend.coord
    a, b = _cus(coord, 2)
    recorder = started(coord)
    result = recorder.move(TransitionRequest(a, "Running", expected="Pending", pilot="p1", detail={"why": "t"}))
    assert result.ok and result.previous == "Pending" and result.state == "Running"
    record = coord.get(Kind.CU, a)
    assert record.state == "Running" and record.pilot == "p1" and record.detail == {"why": "t"}

    got: list[tuple[TransitionResult | None, BaseException | None]] = []
    pending = recorder.submit(TransitionRequest(b, "Running", expected="Pending"),
                              lambda r, e: got.append((r, e)))
    assert pending.wait().ok
    wait_until(lambda: got, 10, "the callback")
    [(r, e)] = got
    assert e is None and r is not None and r.ok and r.id == b


def test_compare_and_set_refusal_comes_back_with_the_current_state(backend: Backend, started: StartRecorder) -> None:
    coord = backend.coord
    [cu] = _cus(coord, 1, "Running")
    recorder = started(coord)
    refused = recorder.move(TransitionRequest(cu, "Done", expected="Pending"))
    assert not refused.ok
    assert refused.previous == "Running"
    assert coord.get(Kind.CU, cu).state == "Running"
    missing = recorder.move(TransitionRequest("cu-nobody", "Running"))
    assert not missing.ok and missing.previous is None
    # a refusal inside a batch does not stop the others
    first = recorder.submit(TransitionRequest(cu, "Done", expected="StagingOutput"))
    second = recorder.submit(TransitionRequest(cu, "Done", expected="Running"))
    assert not first.wait().ok and second.wait().ok
    assert coord.get(Kind.CU, cu).state == "Done"


def test_a_callback_that_raises_does_not_stop_the_recorder(backend: Backend, started: StartRecorder) -> None:
    coord = backend.coord
    a, b = _cus(coord, 2)
    recorder = started(coord)

    def broken(result: TransitionResult | None, error: BaseException | None) -> None:
        raise RuntimeError("callback bug")

    assert recorder.submit(TransitionRequest(a, "Running"), broken).wait().ok
    assert recorder.move(TransitionRequest(b, "Running")).ok


# ------------------------------------------------------------------------------ batching, linger
def test_moves_nobody_waits_for_are_batched(backend: Backend, started: StartRecorder) -> None:
    ids = _cus(backend.coord, 50)
    wrapped = Wrapped(backend.coord)
    recorder = started(wrapped.as_coordination(), linger=0.2)
    done = threading.Event()
    count = [0]

    def callback(result: TransitionResult | None, error: BaseException | None) -> None:
        assert result is not None and result.ok
        count[0] += 1  # callbacks run on the one recorder thread
        if count[0] == len(ids):
            done.set()

    for cu in ids:
        recorder.submit(TransitionRequest(cu, "Running", expected="Pending"), callback)
    assert done.wait(10), f"only {count[0]} of {len(ids)} callbacks"
    assert wrapped.calls <= 3, wrapped.sizes
    assert sum(wrapped.sizes) == len(ids)
    assert backend.coord.states(Kind.CU, ids) == ["Running"] * len(ids)


def test_an_awaited_move_ends_the_linger(backend: Backend, started: StartRecorder) -> None:
    a, b = _cus(backend.coord, 2)
    wrapped = Wrapped(backend.coord)
    recorder = started(wrapped.as_coordination(), linger=5.0)
    lingering = recorder.submit(TransitionRequest(a, "Running"))
    assert not lingering.sent  # held back for up to 5 s
    box: list[TransitionResult] = []
    mover = threading.Thread(target=lambda: box.append(recorder.move(TransitionRequest(b, "Running"))))
    mover.start()
    wait_until(lambda: not mover.is_alive(), 2.5, "move() well before the 5 s linger")
    assert box and box[0].ok
    # the lingering move went with it, in the same call
    assert lingering.sent and lingering.wait().ok
    assert wrapped.calls == 1 and wrapped.sizes == [2]


def test_flush_sends_the_lingering_moves_and_waits_for_them(backend: Backend, started: StartRecorder) -> None:
    ids = _cus(backend.coord, 10)
    recorder = started(backend.coord, linger=5.0)
    pendings = [recorder.submit(TransitionRequest(cu, "Running")) for cu in ids]
    assert recorder.flush(2.5)
    assert all(p.sent and p.wait().ok for p in pendings)
    assert backend.coord.states(Kind.CU, ids) == ["Running"] * len(ids)


def test_flush_times_out_while_the_backend_is_down(backend: Backend, started: StartRecorder) -> None:
    [cu] = _cus(backend.coord, 1)
    wrapped = Wrapped(backend.coord, fail_first=1000)
    recorder = started(wrapped.as_coordination(), retry_for=1.0)
    pending = recorder.submit(TransitionRequest(cu, "Running"))
    assert recorder.flush(0.2) is False
    assert not pending.sent
    assert recorder.flush(10)  # gives up after retry_for: the batch ends, with an error
    with pytest.raises(CoordinationError):
        pending.wait()


# ------------------------------------------------------------------------------------ close
def test_close_sends_what_is_queued_then_refuses_more(backend: Backend) -> None:
    a, b = _cus(backend.coord, 2)
    recorder = Recorder(backend.coord, linger=5.0)
    recorder.start()
    pending = recorder.submit(TransitionRequest(a, "Running"))
    recorder.close(5)
    assert pending.sent and pending.wait().ok
    assert backend.coord.get(Kind.CU, a).state == "Running"
    with pytest.raises(CoordinationError, match="closed"):
        recorder.submit(TransitionRequest(b, "Running"))
    with pytest.raises(CoordinationError, match="closed"):
        recorder.move(TransitionRequest(b, "Running"))
    assert backend.coord.get(Kind.CU, b).state == "Pending"


# ------------------------------------------------------------------------------ outages
def test_a_refused_call_is_retried_and_the_batch_applied_once(backend: Backend, started: StartRecorder) -> None:
    a, b = _cus(backend.coord, 2)
    wrapped = Wrapped(backend.coord, fail_first=3)
    recorder = started(wrapped.as_coordination(), retry_for=10.0, linger=5.0)  # one batch of two
    got: list[TransitionResult | None] = []
    recorder.submit(TransitionRequest(a, "Running", expected="Pending"), lambda r, e: got.append(r))
    result = recorder.move(TransitionRequest(b, "Running", expected="Pending"))
    assert result.ok and result.previous == "Pending"
    assert recorder.flush(10)
    assert len(got) == 1 and got[0] is not None and got[0].ok
    assert wrapped.calls == 4 and wrapped.applied == 1
    assert backend.coord.states(Kind.CU, [a, b]) == ["Running", "Running"]
    for cu in (a, b):
        assert _transitions(backend.coord, cu).count(("Pending", "Running")) == 1


def test_a_retried_move_whose_reply_was_lost_counts_as_applied(backend: Backend, started: StartRecorder) -> None:
    [cu] = _cus(backend.coord, 1)
    wrapped = Wrapped(backend.coord, lose_first=1)
    recorder = started(wrapped.as_coordination(), retry_for=10.0)
    result = recorder.move(TransitionRequest(cu, "Running", expected="Pending"))
    assert result.ok and result.state == "Running"
    assert wrapped.calls == 2 and wrapped.applied == 2
    assert _transitions(backend.coord, cu).count(("Pending", "Running")) == 1


def test_a_lost_reply_for_two_moves_of_one_cu_reports_both_applied(backend: Backend, started: StartRecorder) -> None:
    [cu] = _cus(backend.coord, 1)
    wrapped = Wrapped(backend.coord, lose_first=1)
    recorder = started(wrapped.as_coordination(), retry_for=10.0, linger=5.0)
    running = recorder.submit(TransitionRequest(cu, "Running", expected="Pending"))
    done = recorder.submit(TransitionRequest(cu, "Done", expected="Running"))
    assert recorder.flush(10)
    assert wrapped.sizes[0] == 2  # both went in the call whose reply was lost
    assert backend.coord.get(Kind.CU, cu).state == "Done"
    assert done.wait().ok
    assert running.wait().ok  # it was applied; the worker must not be told someone else moved the CU


def test_an_outage_longer_than_retry_for_reaches_every_waiter(backend: Backend, started: StartRecorder) -> None:
    a, b = _cus(backend.coord, 2)
    wrapped = Wrapped(backend.coord, fail_first=1000)
    recorder = started(wrapped.as_coordination(), retry_for=0.4)
    got: list[tuple[TransitionResult | None, BaseException | None]] = []
    recorder.submit(TransitionRequest(a, "Running"), lambda r, e: got.append((r, e)))
    t0 = time.monotonic()
    with pytest.raises(CoordinationError, match="test outage"):
        recorder.move(TransitionRequest(b, "Running"))
    assert time.monotonic() - t0 < 5
    assert wrapped.calls >= 2  # it did retry
    wait_until(lambda: got, 5, "the callback")
    [(r, e)] = got
    assert r is None and isinstance(e, CoordinationError)
    assert wrapped.applied == 0
    assert backend.coord.states(Kind.CU, [a, b]) == ["Pending", "Pending"]
    # the recorder is still usable once the backend answers again
    wrapped.fail_first = 0
    assert recorder.move(TransitionRequest(a, "Running")).ok


def test_an_error_that_is_not_an_outage_is_not_retried(backend: Backend, started: StartRecorder) -> None:
    [cu] = _cus(backend.coord, 1)
    wrapped = Wrapped(backend.coord, bug=RuntimeError("backend bug"))
    recorder = started(wrapped.as_coordination(), retry_for=10.0)
    with pytest.raises(RuntimeError, match="backend bug"):
        recorder.move(TransitionRequest(cu, "Running"))
    assert wrapped.calls == 1
