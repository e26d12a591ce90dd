"""One CU's life on this pilot: :meth:`CUWorker.run` on a pool thread, from claim to final state (or back to
the queue); the agent runs it, and then the next held CU, on that thread.

The worker moves its CU ``Pending -> StagingInput -> Running -> StagingOutput -> Done`` with every
transition made compare-and-set on the state it last wrote, so that anyone else who moved the CU in
the meantime (a client cancelling it, a detector requeuing a pilot it thought dead) wins and the
worker simply lets go: it kills its process group and releases the id, writing nothing more.

Transitions go through the agent's :class:`~agent.recorder.Recorder`, which batches them. Two of them
do not make the CU wait: ``Running`` is queued and the process starts at once (if the move does not
apply, the callback interrupts the worker, which kills the process group), and ``Done`` is queued
and the slots are freed at once (if it does not apply, the callback releases the id). Every other
move waits for its result.

Every move names this pilot as the CU's ``owner``: it applies only while the CU is still in this
pilot's in-progress list, so once a detector took the work back (this pilot declared lost) nothing
this worker writes can land. A worker lets a CU go (releases it, writes nothing more) only on such
evidence that someone else has it: a refused move, or the agent's state check seeing it canceled or
taken back. It never lets go of a CU it still owns.

Failures go through :meth:`CUWorker._fail`: the failed-task retry policy may send the CU back to
Pending with attempt+1 (released and put at the front of the shared queue in the same atomic move),
otherwise it becomes Failed with ``reason`` (and ``exit_code`` when there is one) in its data and in
the event.

**Stops** (walltime, signal, a pilot canceled by a client, a failing worker) hand the CU back: a
running process is killed and the CU goes back to Pending with attempt+1 under the lost-task reassign
budget (:meth:`CUWorker._requeue`). A batch system that ends the job (``scancel``, its time limit,
preemption) signals every process of the job at once, the CU's too, so a CU often ends *because of*
the stop, before or after the agent heard of it. Its exit status then says nothing about the CU:

* a CU that ended with a signal, or with a status above 128 (a shell's "killed by signal"), waits up
  to :data:`STOP_WINDOW` seconds for the agent's stop before its failure is recorded; if the stop
  comes, the CU is handed back instead of failed;
* any CU that ends after a stop began is handed back, unless it exited 0 and the stop was the agent's
  own (walltime, cancel, failing worker: nothing signalled the CU, so exit 0 is a real completion);
  exit 0 after a *signal* stop is handed back too (the CU may have caught the signal and exited 0);
* a CU that exits 0 when a stop signal has reached the agent but has not stopped it yet (the kernel
  hands the signal to one of the agent's threads, which may wait for a core, and the agent's signal
  watcher requests the stop after that; the worker may see the exit first) is judged as if the stop
  had begun: ``Host.signalled`` says a signal is on its way, and the worker waits for its stop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.binding import Bound, CoreBinding
from agent.cores import NodeSlots, Placement
from agent.environment import cu_environment, passed
from agent.executors import NodeLost
from agent.launch import build_argv
from agent.policies import FailureStreak, Policies
from agent.reaper import Reaper
from agent.recorder import Recorder
from agent.sandbox import make_sandbox, output_file
from agent.task import CUFailed, Task

if TYPE_CHECKING:
    from agent.allocation import PilotNodes
from pilotdata.coordination import SHARED_QUEUE, Coordination, TransitionRequest, TransitionResult
from pilotdata.errors import StagingError
from pilotdata.exits import exit_reason
from pilotdata.states import ComputeUnitState as S

log = logging.getLogger(__name__)

WAIT_STEP = 0.25
"""Longest a worker waits on its process before it looks at its cancel / stop flags again."""

STOP_WINDOW = 2.0
"""Seconds a CU that died of a signal (or exited above 128) waits for the agent's stop before it is
recorded Failed: the signal that killed it may be the batch system's, on its way to the agent too."""

SIGNAL_STOP = "stop:signal"
"""Interrupt kinds of a stop caused by a signal to the agent start with this (``stop:signal SIGTERM``)."""


class Stager(Protocol):
    """Input and output staging of a CU (see :mod:`agent.staging`)."""

    def needs_staging(self, task: Task) -> bool:
        """Whether the CU has inputs to stage (DataUnits or ``file_transfer`` files)."""

    def stage_in(self, task: Task, sandbox: Path, placement: Placement | None = None) -> None:
        """Make the CU's input DataUnits visible in its sandbox (on its node); :class:`StagingError` on failure."""

    def stage_out(self, task: Task, sandbox: Path) -> None:
        """Upload the CU's output files into their DataUnits; :class:`StagingError` on failure."""


class CUProcess(Protocol):
    """A running CU process, on this node (:class:`agent.launch.Launched`) or another one."""

    @property
    def pgid(self) -> int | None:
        """Its process group id (``None`` while a remote node has not reported it)."""

    def wait(self, timeout: float) -> int | None:
        """The exit code, or ``None`` if it still runs after ``timeout`` seconds."""

    def kill_group(self, grace: float) -> int:
        """SIGTERM its group, SIGKILL after ``grace`` seconds; its exit code."""


class Host(Protocol):
    """What a worker needs from its agent."""

    coord: Coordination
    recorder: Recorder
    pilot: str
    workdir: Path
    slots: NodeSlots
    binding: CoreBinding
    nodes: PilotNodes | None
    policies: Policies
    streak: FailureStreak
    reaper: Reaper
    stager: Stager
    mpi_launcher: str
    kill_grace: float
    environment: Mapping[str, str]
    passed_environment: Mapping[str, str]
    @property
    def stopping(self) -> threading.Event:
        """Set once the agent was asked to stop (thread-safe to wait on)."""

    @property
    def stop_kind(self) -> str:
        """``stop:<reason>`` once the agent was asked to stop, else ``""``."""

    def signalled(self) -> bool:
        """Whether a stop signal reached the agent, even if it has not stopped it yet (a stop is coming)."""

    def worker_done(self, worker: CUWorker) -> None:
        """Called by the worker thread when it is done with its CU (slots already released)."""

    def ran(self, seconds: float) -> None:
        """Called when a CU's process ended, with how long it ran (sizes the claim prefetch)."""

    def failing_worker(self, failures: int) -> None:
        """Called when the consecutive-failure limit is reached."""

    def release_later(self, cu_id: str) -> None:
        """Called when a CU let go of could not be released (coordination down): retry it later."""

    def release_claim(self, cu_id: str) -> None:
        """Drop a CU let go of from the pilot's in-progress list (never across a claim of the same id)."""


class _Lost(Exception):
    """Internal: someone else moved the CU (canceled, requeued); the worker lets go."""

    def __init__(self, state: str | None) -> None:
        super().__init__(state)
        self.state = state


class CUWorker:
    """Runs one claimed CU (see the module docstring). Holds ``task.processes`` slots until it ends."""

    def __init__(self, host: Host, task: Task, placement: Placement) -> None:
        self.host = host
        self.task = task
        self.placement = placement
        """The node (MPI: the hosts) whose cores this CU holds."""
        self.bound: Bound | None = None
        """The CPUs this CU runs on when the agent's node binds its CUs (:mod:`agent.binding`)."""
        self.state: str = S.PENDING.value
        """The state this worker last wrote (the ``expected`` of its next transition)."""
        self._interrupt_kind = ""
        self._lock = threading.Lock()
        self.abandoned = False
        """Set by the agent at shutdown when it took the CU back itself: write nothing more."""
        self._finished = threading.Event()

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

    def _request(
        self, to: S, detail: Mapping[str, Any] | None, data: Mapping[str, Any] | None, *, requeue: bool = False
    ) -> TransitionRequest:
        """A move from :attr:`state` owned by this pilot; a final one releases the id, a requeue also
        puts it at the front of the shared queue (one atomic step either way)."""
        final = to in (S.DONE, S.FAILED, S.CANCELED)
        pilot = self.host.pilot
        return TransitionRequest(self.task.id, to.value, self.state, pilot, detail, data, release=final or requeue,
                                 owner=pilot, queue=SHARED_QUEUE if requeue else None, front=requeue)

    def _hand_back(self, detail: Mapping[str, Any], data: Mapping[str, Any] | None = None) -> None:
        """Back to Pending with attempt+1, released and at the front of the shared queue, in one move."""
        if self.abandoned:
            raise _Lost(None)
        result = self.host.recorder.move(self._request(S.PENDING, detail, data, requeue=True))
        if not result.ok:
            raise _Lost(result.previous)
        self.state = S.PENDING.value

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
                except Exception as exc:  # coordination down: the agent retries the release later
                    log.warning("CU %s: could not release: %s; retrying later", self.task.id, exc)
                    self.host.release_later(self.task.id)
            return
        if error is not None and result is None and self.state == S.DONE.value:
            log.error("CU %s: ended but could not be recorded Done: %s", self.task.id, why)
            return
        previous = result.previous if result is not None else None
        self.interrupt("canceled" if previous == S.CANCELED.value else "lost")

    def _release(self) -> None:
        self.host.release_claim(self.task.id)

    # ---------------------------------------------------------------------- run
    def run(self) -> None:
        """Thread body: run the CU, whatever happens release its slots and tell the agent."""
        try:
            self._run()
        except _Lost as lost:
            self._let_go(lost.state)
        except NodeLost as lost:  # the node died under the CU: only its CUs go back, the pilot runs on
            self._node_lost(lost)
        except Exception as exc:  # an agent bug or a coordination outage: fail the CU, loudly
            log.exception("CU %s: unexpected error", self.task.id)
            try:
                self._fail(CUFailed(f"agent error: {type(exc).__name__}: {exc}"))
            except _Lost as lost:
                self._let_go(lost.state)
            except Exception:
                log.exception("CU %s: could not record the failure", self.task.id)
        finally:
            self.host.binding.release(self.bound)
            self.host.slots.release(self.placement)
            self.host.worker_done(self)
            self._finished.set()

    def _let_go(self, state: str | None) -> None:
        """Someone else has the CU (a refused move, or it was seen canceled / taken back): drop our claim."""
        kind = self.interrupt_kind or "lost"
        log.info("CU %s: %s (now %s); letting go", self.task.id, kind, state)
        if not self.abandoned:
            try:
                self._release()
            except Exception as exc:  # coordination down: the agent retries the release later
                log.warning("CU %s: could not release: %s; retrying later", self.task.id, exc)
                self.host.release_later(self.task.id)

    def _run(self) -> None:
        task, coord = self.task, self.host.coord
        kind = self.interrupt_kind or self.host.stop_kind
        if kind.startswith("stop:"):  # the agent stopped before this CU began: return it unchanged
            coord.unclaim(self.host.pilot, [task.id])
            return
        if kind:
            raise _Lost(kind)
        host = self.placement.node
        staged = self.host.stager.needs_staging(task)
        try:
            sandbox = make_sandbox(self.host.workdir, task)
        except CUFailed as failure:
            self._fail(failure)
            return
        if staged:  # no inputs: straight from Pending to Running (one round trip less per CU)
            self._move(S.STAGING_INPUT, {"host": host}, {"sandbox": sandbox})
            self.host.binding.unbind()  # a transfer's threads get every CPU, not an earlier CU's
            try:
                self.host.stager.stage_in(task, Path(sandbox), self.placement)
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
                {"PDATA_CU_ID": task.id, "PDATA_PILOT_ID": self.host.pilot, "PDATA_SANDBOX": sandbox},
                self.host.passed_environment,
            )
            several = self.host.nodes is not None and self.host.nodes.launcher is not None
            hosts = self.placement.hosts if task.is_mpi and several else ()
            argv = build_argv(task, sandbox, env, self.host.mpi_launcher, hosts=hosts)
            stdout = output_file(sandbox, task.description.output)
            stderr = output_file(sandbox, task.description.error)
        except CUFailed as failure:
            self._fail(failure)
            return
        running: dict[str, Any] = {"host": host, "slots": task.processes}
        where: dict[str, Any] = {"node": host}
        if self.placement.spans:
            running["nodes"] = where["nodes"] = {n: c for n, c in self.placement.hosts}
        if task.is_mpi:
            running["launcher"] = os.path.basename(argv[0])
        # queued, not awaited: the process starts now; a refused move interrupts the wait below
        self._move_on(S.RUNNING, running, where if staged else {**where, "sandbox": sandbox})
        try:
            executor = self._executor()
            # what a node process adds to its own allow-listed environment: everything but that
            extra = {} if executor.local else {k: v for k, v in env.items()
                                               if not passed(k) or self.host.environment.get(k) != v}
            if executor.local and not task.is_mpi:  # it inherits this thread's CPUs (MPI launchers bind)
                self.bound = self.bound or self.host.binding.take(task.processes)
            if self.bound is None:
                self.host.binding.unbind()  # not left on an earlier CU's CPUs
            else:
                self.host.binding.bind(self.bound)
            launched = executor.spawn(task.id, argv, sandbox, env, extra, stdout, stderr)
        except CUFailed as failure:
            self._fail(failure)
            return
        began = time.monotonic()
        code = self._wait(launched)
        self.host.ran(time.monotonic() - began)
        if code is None:
            return  # interrupted or timed out: already handled
        self._check_lost()  # cancelled (or its Running refused) while it ran: nothing to record
        stop = self._stopped_by(code)
        if stop:  # it ended because the pilot stops, or may have: not the CU's outcome
            log.info("CU %s: ended with %s while the pilot stops (%s); handing it back", task.id, code, stop[5:])
            self._requeue(stop[5:], code)
            return
        if code != 0:
            self._fail(CUFailed(exit_reason(code), retryable=True, exit_code=code))
            return
        if task.description.output_data:  # no outputs: straight from Running to Done
            self._move(S.STAGING_OUTPUT, {"exit_code": 0})
            self.host.binding.unbind()
            try:
                self.host.stager.stage_out(task, Path(sandbox))
            except StagingError as exc:
                self._fail(CUFailed(f"output staging failed: {exc}", exit_code=0))
                return
            self._check_lost()
        self._move_on(S.DONE, {"exit_code": 0}, {"exit_code": 0, "reason": None})
        self.host.streak.success()

    def _check_lost(self) -> None:
        """Raise :class:`_Lost` if the agent saw the CU canceled or taken back (never for a stop)."""
        kind = self.interrupt_kind
        if kind and not kind.startswith("stop:"):
            raise _Lost(kind)

    def _stopped_by(self, code: int) -> str:
        """The stop (``stop:<reason>``) that a CU ending with ``code`` is to be handed back for, or ``""``.

        See the module docstring: a stop already under way takes every CU that ends, except exit 0 under
        the agent's own stop; a CU that died of a signal (or above 128), or exited 0 while a signal that
        reached the agent is still to be handled, gives the stop :data:`STOP_WINDOW` seconds to arrive.
        """
        kind = self.interrupt_kind or self.host.stop_kind
        if kind.startswith("stop:"):
            return "" if code == 0 and not kind.startswith(SIGNAL_STOP) else kind
        if code < 0 or code > 128 or (code == 0 and self.host.signalled()):
            self.host.stopping.wait(STOP_WINDOW)
            kind = self.interrupt_kind or self.host.stop_kind
            if kind.startswith("stop:"):
                return kind
        return ""

    def _interrupted_before_start(self) -> bool:
        """Handle a cancel / stop that arrived during input staging; True if the CU must not start."""
        kind = self.interrupt_kind or self.host.stop_kind
        if not kind:
            return False
        if kind.startswith("stop:") and self.state == S.PENDING.value:  # never started: back unchanged
            self.host.coord.unclaim(self.host.pilot, [self.task.id])
        elif kind.startswith("stop:"):
            self._requeue(kind[5:])
        else:
            raise _Lost(kind)
        return True

    def _executor(self) -> Any:
        """The executor that spawns this CU (:meth:`agent.allocation.PilotNodes.executor`)."""
        if self.host.nodes is None:
            raise CUFailed("agent error: no node to run on (the agent did not register)")
        return self.host.nodes.executor(self.placement, launcher_here=self.task.is_mpi)

    def _node_lost(self, lost: NodeLost) -> None:
        """The CU's node is gone: back to the queue under the lost-task budget, as when a pilot dies."""
        task = self.task
        if self.state in (S.DONE.value, S.FAILED.value, S.CANCELED.value) or self.abandoned:
            return
        if self.state == S.PENDING.value:  # nothing started: back unchanged
            self.host.coord.unclaim(self.host.pilot, [task.id])
            return
        if self.host.policies.may_reassign(task.attempt):
            try:
                self._hand_back({"reason": f"{lost} (pilot {self.host.pilot})", "node": lost.node})
            except _Lost as gone:
                self._let_go(gone.state)
                return
            log.warning("CU %s: %s; returned to the shared queue", task.id, lost)
            return
        reason = f"{lost} and the lost task max reassign ({self.host.policies.max_reassign}) is used up"
        try:
            self._move(S.FAILED, {"reason": reason, "node": lost.node}, {"reason": reason})
        except _Lost as gone:
            self._let_go(gone.state)

    def _wait(self, launched: CUProcess) -> int | None:
        """Wait for the process; on timeout / cancel / stop kill its group and handle it (-> None)."""
        local = getattr(launched, "local", True)
        if local and launched.pgid is not None:
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
                kind = self.interrupt_kind or self.host.stop_kind
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
            if local and launched.pgid is not None:
                self.host.reaper.unwatch(launched.pgid)

    # ----------------------------------------------------------------- endings
    def _fail(self, failure: CUFailed) -> None:
        """Record a failed run: retry (failed task max reassign) or Failed; count it in the streak."""
        task = self.task
        detail: dict[str, Any] = {"reason": failure.reason}
        if failure.exit_code is not None:
            detail["exit_code"] = failure.exit_code
        outcome = {"reason": failure.reason, "exit_code": failure.exit_code}
        if failure.retryable and self.host.policies.may_retry(task):
            retries = self.host.policies.retries_for(task)
            self._hand_back({**detail, "retry": f"{task.attempt + 1}/{retries}"}, outcome)
            log.info("CU %s: %s; retry %d of %d", task.id, failure.reason, task.attempt + 1, retries)
        else:
            self._move(S.FAILED, detail, outcome)
            log.info("CU %s: Failed: %s", task.id, failure.reason)
        if self.host.streak.failure():
            self.host.failing_worker(self.host.streak.count)

    def _requeue(self, why: str, code: int | None = None) -> None:
        """Give the CU back because the pilot stops (lost task max reassign budget), in one owned move."""
        task = self.task
        ended = {} if code is None else {"exit_code": code}
        if self.host.policies.may_reassign(task.attempt):
            self._hand_back({"reason": f"pilot {self.host.pilot} stopped: {why}", **ended})
            log.info("CU %s: returned to the shared queue (pilot stopping: %s)", task.id, why)
        else:
            reason = (
                f"pilot {self.host.pilot} stopped ({why}) and the lost task max reassign "
                f"({self.host.policies.max_reassign}) is used up"
            )
            self._move(S.FAILED, {"reason": reason, **ended}, {"reason": reason})
