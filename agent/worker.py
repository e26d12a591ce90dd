"""One CU's life on this pilot: a job on a pool thread from claim to final state (or back to the queue).

The worker moves its CU ``Pending -> StagingInput -> Running -> StagingOutput -> Done`` with every
transition made compare-and-set on the state it last wrote, so that anyone else who moved the CU in
the meantime (a client cancelling it, a detector requeuing a pilot it thought dead) wins and the
worker simply lets go: it kills its process group and releases the id, writing nothing more.

Transitions go through the agent's :class:`~agent.recorder.Recorder`, which batches them. Two of them
do not make the CU wait: ``Running`` is queued and the process starts at once (if the move does not
apply, the callback interrupts the worker, which kills the process group), and ``Done`` is queued
and the slots are freed at once (if it does not apply, the callback releases the id). Every other
move waits for its result.

Failures go through :meth:`CUWorker._fail`: the failed-task retry policy may send the CU back to
Pending with attempt+1 (``unclaim`` puts it at the front of the shared queue atomically), otherwise it
becomes Failed with ``reason`` (and ``exit_code`` when there is one) in its data and in the event. A
stop of the agent (walltime, signal, failing worker) kills a running process and requeues the CU
under the lost-task reassign budget.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from agent.launch import Launched, build_argv, cu_environment, spawn
from agent.policies import FailureStreak, Policies
from agent.pool import ThreadPool
from agent.reaper import Reaper
from agent.recorder import Recorder
from agent.sandbox import make_sandbox, output_file
from agent.slots import SlotPool
from agent.task import CUFailed, Task
from pilotdata.coordination import Coordination, TransitionRequest, TransitionResult
from pilotdata.errors import StagingError
from pilotdata.launchers.base import signal_name
from pilotdata.states import ComputeUnitState as S
from pilotdata.states import Kind

log = logging.getLogger(__name__)

WAIT_STEP = 0.25
"""Longest a worker waits on its process before it looks at its cancel / stop flags again."""


class Stager(Protocol):
    """Input and output staging of a CU (see :mod:`agent.staging`)."""

    def stage_in(self, task: Task, sandbox: Path) -> None:
        """Make the CU's input DataUnits visible in its sandbox; :class:`StagingError` on failure."""

    def stage_out(self, task: Task, sandbox: Path) -> None:
        """Upload the CU's output files into their DataUnits; :class:`StagingError` on failure."""


class Host(Protocol):
    """What a worker needs from its agent."""

    coord: Coordination
    recorder: Recorder
    pool: ThreadPool
    pilot: str
    workdir: Path
    slots: SlotPool
    policies: Policies
    streak: FailureStreak
    reaper: Reaper
    stager: Stager
    mpi_launcher: str
    kill_grace: float
    environment: Mapping[str, str]

    def worker_done(self, worker: CUWorker) -> None:
        """Called by the worker thread when it is done with its CU (slots already released)."""

    def ran(self, seconds: float) -> None:
        """Called when a CU's process ended, with how long it ran (sizes the claim prefetch)."""

    def failing_worker(self, failures: int) -> None:
        """Called when the consecutive-failure limit is reached."""


class _Lost(Exception):
    """Internal: someone else moved the CU (canceled, requeued); the worker lets go."""

    def __init__(self, state: str | None) -> None:
        super().__init__(state)
        self.state = state


def signal_reason(code: int) -> str:
    """``exit code 3`` or ``killed by signal SIGKILL`` for a Popen return code."""
    return f"killed by signal {signal_name(-code)}" if code < 0 else f"exit code {code}"


class CUWorker:
    """Runs one claimed CU (see the module docstring). Holds ``task.processes`` slots until it ends."""

    def __init__(self, host: Host, task: Task) -> None:
        self.host = host
        self.task = task
        self.state: str = S.PENDING.value
        """The state this worker last wrote (the ``expected`` of its next transition)."""
        self._interrupt = threading.Event()
        self._interrupt_kind = ""
        self._lock = threading.Lock()
        self.abandoned = False
        """Set by the agent at shutdown when it took the CU back itself: write nothing more."""
        self._finished = threading.Event()

    def start(self) -> None:
        """Run the CU on one of the agent's pool threads."""
        self.host.pool.submit(self.run)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the worker is done with its CU (slots released); False on timeout."""
        return self._finished.wait(timeout)

    def is_alive(self) -> bool:
        """Whether the worker still has its CU."""
        return not self._finished.is_set()

    # ------------------------------------------------------------------- control
    def interrupt(self, kind: str) -> None:
        """Ask the worker to stop: ``canceled`` / ``lost`` (let go) or ``stop:<why>`` (requeue)."""
        with self._lock:
            if not self._interrupt_kind:
                self._interrupt_kind = kind
        self._interrupt.set()

    @property
    def interrupt_kind(self) -> str:
        """Why the worker was interrupted (empty if it was not)."""
        with self._lock:
            return self._interrupt_kind

    # ------------------------------------------------------------------ plumbing
    def _move(self, to: S, detail: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None) -> None:
        """Compare-and-set transition from :attr:`state`; :class:`_Lost` if someone else moved it.

        ``data`` keys are written in the same atomic step; a move to a final state also drops the CU from
        this pilot's in-progress list in that step (one round trip for the whole ending).
        """
        if self.abandoned:
            raise _Lost(None)
        result = self.host.recorder.move(self._request(to, detail, data))
        if not result.ok:
            raise _Lost(result.previous)
        self.state = to.value

    def _request(self, to: S, detail: Mapping[str, Any] | None, data: Mapping[str, Any] | None) -> TransitionRequest:
        final = to in (S.DONE, S.FAILED, S.CANCELED)
        return TransitionRequest(self.task.id, to.value, self.state, self.host.pilot, detail, data, release=final)

    def _move_on(self, to: S, detail: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None) -> None:
        """Queue a move without waiting for it (``Running``, ``Done``); :meth:`_moved` handles a refusal."""
        if self.abandoned:
            raise _Lost(None)
        self.host.recorder.submit(self._request(to, detail, data), self._moved)
        self.state = to.value

    def _moved(self, result: TransitionResult | None, error: BaseException | None) -> None:
        """Recorder callback of :meth:`_move_on`: a move that did not apply interrupts or lets go."""
        if result is not None and result.ok:
            return
        why = f"{type(error).__name__}: {error}" if error is not None else f"it is {result and result.previous}"
        if result is not None and result.state == S.DONE.value:
            # the CU had ended here; someone else moved it first (a cancel, a requeue): give up the id
            log.info("CU %s: Done not recorded (%s); letting go", self.task.id, why)
            if not self.abandoned:
                try:
                    self._release()
                except Exception as exc:  # coordination down: a lost-pilot sweep releases it later
                    log.warning("CU %s: could not release: %s", self.task.id, exc)
            return
        if error is not None and result is None and self.state == S.DONE.value:
            log.error("CU %s: ended but could not be recorded Done: %s", self.task.id, why)
            return
        previous = result.previous if result is not None else None
        self.interrupt("canceled" if previous == S.CANCELED.value else "lost")

    def _release(self) -> None:
        self.host.coord.release(self.host.pilot, [self.task.id])

    # ---------------------------------------------------------------------- run
    def run(self) -> None:
        """Thread body: run the CU, whatever happens release its slots and tell the agent."""
        try:
            self._run()
        except _Lost as lost:
            self._let_go(lost.state)
        except Exception as exc:  # an agent bug or a coordination outage: fail the CU, loudly
            log.exception("CU %s: unexpected error", self.task.id)
            try:
                self._fail(CUFailed(f"agent error: {type(exc).__name__}: {exc}"))
            except _Lost as lost:
                self._let_go(lost.state)
            except Exception:
                log.exception("CU %s: could not record the failure", self.task.id)
        finally:
            self.host.slots.release(self.task.processes)
            self.host.worker_done(self)
            self._finished.set()

    def _let_go(self, state: str | None) -> None:
        kind = self.interrupt_kind or "lost"
        log.info("CU %s: %s (now %s); letting go", self.task.id, kind, state)
        if not self.abandoned:
            self._release()

    def _run(self) -> None:
        task, coord = self.task, self.host.coord
        kind = self.interrupt_kind
        if kind.startswith("stop:"):  # the agent stopped before this CU began: return it unchanged
            coord.unclaim(self.host.pilot, [task.id])
            return
        if kind:
            raise _Lost(kind)
        host = socket.gethostname()
        staged = bool(task.description.input_data)
        try:
            sandbox = make_sandbox(self.host.workdir, task)
        except CUFailed as failure:
            self._fail(failure)
            return
        if staged:  # no inputs: straight from Pending to Running (one round trip less per CU)
            self._move(S.STAGING_INPUT, {"host": host}, {"sandbox": str(sandbox)})
            try:
                self.host.stager.stage_in(task, sandbox)
            except CUFailed as failure:
                self._fail(failure)
                return
            except StagingError as exc:
                if self._interrupted_before_start():  # a stop/cancel cut staging short: not the CU's fault
                    return
                self._fail(CUFailed(f"input staging failed: {exc}"))
                return
        if self._interrupted_before_start():
            return
        try:
            env = cu_environment(
                task,
                self.host.environment,
                {"PDATA_CU_ID": task.id, "PDATA_PILOT_ID": self.host.pilot, "PDATA_SANDBOX": str(sandbox)},
            )
            argv = build_argv(task, sandbox, env, self.host.mpi_launcher)
            stdout = output_file(sandbox, task.description.output)
            stderr = output_file(sandbox, task.description.error)
        except CUFailed as failure:
            self._fail(failure)
            return
        running: dict[str, Any] = {"host": host, "slots": task.processes}
        if task.is_mpi:
            running["launcher"] = os.path.basename(argv[0])
        # queued, not awaited: the process starts now; a refused move interrupts the wait below
        self._move_on(S.RUNNING, running, None if staged else {"sandbox": str(sandbox)})
        try:
            launched = spawn(argv, sandbox, env, stdout, stderr)
        except CUFailed as failure:
            self._fail(failure)
            return
        began = time.monotonic()
        code = self._wait(launched)
        self.host.ran(time.monotonic() - began)
        if code is None:
            return  # interrupted or timed out: already handled
        if code != 0:
            self._fail(CUFailed(signal_reason(code), retryable=True, exit_code=code))
            return
        if task.description.output_data:  # no outputs: straight from Running to Done
            self._move(S.STAGING_OUTPUT, {"exit_code": 0})
            try:
                self.host.stager.stage_out(task, sandbox)
            except StagingError as exc:
                self._fail(CUFailed(f"output staging failed: {exc}", exit_code=0))
                return
        if self.interrupt_kind:  # cancelled (or its Running refused) while it ran: nothing to record
            raise _Lost(self.interrupt_kind)
        self._move_on(S.DONE, {"exit_code": 0}, {"exit_code": 0, "reason": None})
        self.host.streak.success()

    def _interrupted_before_start(self) -> bool:
        """Handle a cancel / stop that arrived during input staging; True if the CU must not start."""
        kind = self.interrupt_kind
        if not kind:
            return False
        if kind.startswith("stop:") and self.state == S.PENDING.value:  # never started: back unchanged
            self.host.coord.unclaim(self.host.pilot, [self.task.id])
        elif kind.startswith("stop:"):
            self._requeue(kind[5:])
        else:
            raise _Lost(kind)
        return True

    def _wait(self, launched: Launched) -> int | None:
        """Wait for the process; on timeout / cancel / stop kill its group and handle it (-> None)."""
        self.host.reaper.watch(launched.pgid)
        try:
            timeout = self.task.description.timeout
            deadline = time.monotonic() + timeout if timeout else None
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                step = WAIT_STEP if left is None else min(WAIT_STEP, max(0.0, left))
                code = launched.wait(step)
                if code is not None:
                    return code
                kind = self.interrupt_kind
                if kind:
                    launched.kill_group(self.host.kill_grace)
                    if kind.startswith("stop:"):
                        self._requeue(kind[5:])
                        return None
                    raise _Lost(kind)
                if deadline is not None and time.monotonic() >= deadline:
                    killed = launched.kill_group(self.host.kill_grace)
                    log.info("CU %s: timeout after %ss (ended with %s)", self.task.id, timeout, killed)
                    self._fail(CUFailed("timeout", retryable=True))
                    return None
        finally:
            launched.kill_group(0)  # the CU is over: leave nothing of its process group behind
            self.host.reaper.unwatch(launched.pgid)

    # ----------------------------------------------------------------- endings
    def _fail(self, failure: CUFailed) -> None:
        """Record a failed run: retry (failed task max reassign) or Failed; count it in the streak."""
        task, coord = self.task, self.host.coord
        detail: dict[str, Any] = {"reason": failure.reason}
        if failure.exit_code is not None:
            detail["exit_code"] = failure.exit_code
        outcome = {"reason": failure.reason, "exit_code": failure.exit_code}
        if failure.retryable and self.host.policies.may_retry(task):
            retries = self.host.policies.retries_for(task)
            self._move(S.PENDING, {**detail, "retry": f"{task.attempt + 1}/{retries}"}, outcome)
            coord.unclaim(self.host.pilot, [task.id])
            log.info("CU %s: %s; retry %d of %d", task.id, failure.reason, task.attempt + 1, retries)
        else:
            self._move(S.FAILED, detail, outcome)
            log.info("CU %s: Failed: %s", task.id, failure.reason)
        if self.host.streak.failure():
            self.host.failing_worker(self.host.streak.count)

    def _requeue(self, why: str) -> None:
        """Give the CU back because the pilot stops (lost task max reassign budget)."""
        task = self.task
        if self.host.policies.may_reassign(task.attempt):
            self._move(S.PENDING, {"reason": f"pilot {self.host.pilot} stopped: {why}"})
            self.host.coord.unclaim(self.host.pilot, [task.id])
            log.info("CU %s: returned to the shared queue (pilot stopping: %s)", task.id, why)
        else:
            reason = (
                f"pilot {self.host.pilot} stopped ({why}) and the lost task max reassign "
                f"({self.host.policies.max_reassign}) is used up"
            )
            self.host.coord.update_data(Kind.CU, task.id, {"reason": reason})
            self._move(S.FAILED, {"reason": reason})
            self._release()
