"""The agent: registration, the claim loop, cancel detection, and the orderly stop.

Life of an agent (``python -m agent --pilot ID``):

1. **Register**: write ``{slots, host, pid, workdir, cached_dus: []}`` into the pilot's data, heartbeat
   once, move the pilot New/Pending -> Running, start the heartbeat thread (:mod:`agent.heartbeat`).
2. **Loop** until a stop is requested: claim up to *free slots* CU ids with the blocking reliable claim
   (own queue first, then the shared queue); for each, read its record and either fail it (bad
   description, more processes than the pilot has slots), start a :class:`~agent.worker.CUWorker`
   (slots allocated), or hold it until enough slots are free (nothing more is claimed meanwhile).
   About once a second the states of all running CUs are read in one batch: a CU a client moved to
   Canceled (or that someone else took back) gets its process group killed.
3. **Stop** (walltime, SIGTERM/SIGINT, the pilot made final by a client, or the failing-worker limit):
   stop claiming; ``unclaim`` the held (unstarted) CUs to the front of the shared queue; running CUs
   are killed and go back to Pending with attempt+1 through the retry path (while the lost-task
   reassign budget lasts); CUs in output staging may finish. Then retire (heartbeat key and live-set
   entry removed) and move the pilot to Done (Failed for a failing worker).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from agent.config import AgentConfig, parse_args, url_has_password
from agent.heartbeat import Heartbeat
from agent.launch import cores
from agent.policies import FailureStreak, Policies
from agent.pool import ThreadPool
from agent.reaper import Reaper
from agent.recorder import Recorder
from agent.slots import SlotPool
from agent.staging import DataStager
from agent.task import Task
from agent.worker import CUWorker, Stager
from pilotdata.coordination import Coordination, TransitionRequest, connect
from pilotdata.errors import CoordinationError, DescriptionError, NotFoundError, PilotDataError
from pilotdata.session import Session
from pilotdata.states import ComputeUnitState as S
from pilotdata.states import Kind, PilotState, is_final

log = logging.getLogger("agent")

PREFETCH_SECONDS = 0.05
"""Claimed-but-unstarted work an agent may hold, in seconds of the recent CUs' run time: enough that
a freed slot never waits for a claim round trip when CUs take milliseconds, never more than one
extra CU per slot when they take longer (other pilots must not wait behind this one's backlog)."""

PREFETCH_MAX = 16
"""At most this many CUs per slot are held (prefetched) at once."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_STARTUP = 3


class RegistrationError(PilotDataError):
    """The agent could not register its pilot (unknown in a final state, coordination down, ...)."""


class Agent:
    """One pilot's agent. Use :meth:`run` (blocks until the agent stops); see the module docstring."""

    def __init__(self, config: AgentConfig, coord: Coordination, stager: Stager | None = None) -> None:
        self.config = config
        self.coord = coord
        self.recorder = Recorder(coord)
        """Batches the CU transitions of the workers (started in :meth:`run`)."""
        self.pool = ThreadPool("cu")
        """Threads the workers run on."""
        self.pilot = config.pilot
        self.policies = Policies(config.max_retries, config.max_reassign, config.max_consecutive_failures)
        self.streak = FailureStreak(config.max_consecutive_failures)
        self.mpi_launcher = config.mpi_launcher
        self.environment: Mapping[str, str] = dict(os.environ)
        """The agent's environment, copied once (``os.environ`` decodes every item on each read)."""
        self.kill_grace = config.kill_grace
        self.workdir = Path()
        self.slots = SlotPool(1)
        self.reaper = Reaper(start=False)  # the real one starts in run()
        self.stager: Stager = stager or _NO_STAGER
        self._stager_given = stager is not None
        self._workers: dict[str, CUWorker] = {}
        self._workers_lock = threading.Lock()
        self._held: deque[Task] = deque()
        self._stop = threading.Event()
        self._workers_interrupted = threading.Event()
        """Set once every worker got its stop interrupt: ends waits inside staging."""
        self._stop_reason = ""
        self._final_state = PilotState.DONE
        self._deadline: float | None = None
        self._heartbeat: Heartbeat | None = None
        self._next_watch = 0.0
        self._run_seconds: float | None = None
        """Moving average of the CUs' run times (None until one ended)."""
        self._session: Session | None = None

    # ------------------------------------------------------------ stop requests
    def request_stop(self, reason: str, final: PilotState = PilotState.DONE) -> None:
        """Ask the main loop to stop (thread- and signal-safe); the first reason wins."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._final_state = final
            self._stop.set()

    def failing_worker(self, failures: int) -> None:
        """Remove a failing worker: the consecutive-failure limit was reached."""
        log.error(
            "%d CU failures in a row (limit %d): this agent stops taking work", failures, self.streak.limit
        )
        self.request_stop(f"{failures} consecutive CU failures (remove a failing worker)", PilotState.FAILED)

    def worker_done(self, worker: CUWorker) -> None:
        """A worker thread finished with its CU."""
        with self._workers_lock:
            self._workers.pop(worker.task.id, None)

    def ran(self, seconds: float) -> None:
        """Fold a CU's run time into the moving average that sizes the prefetch."""
        with self._workers_lock:
            avg = self._run_seconds
            self._run_seconds = seconds if avg is None else 0.9 * avg + 0.1 * seconds

    def prefetch(self) -> int:
        """CUs to hold beyond the free slots: one per slot, more for CUs that take milliseconds."""
        total = self.slots.total
        with self._workers_lock:
            avg = self._run_seconds
        if avg is None or avg >= PREFETCH_SECONDS:
            return total
        return min(total * PREFETCH_MAX, max(total, int(total * PREFETCH_SECONDS / max(avg, 1e-4))))

    def _pilot_final(self, state: str) -> None:
        self.request_stop(f"pilot moved to {state} by a client", PilotState(state))

    # ------------------------------------------------------------- registration
    def register(self) -> None:
        """Record this agent in the pilot's data and move the pilot to Running."""
        cfg = self.config
        try:
            record = self.coord.get(Kind.PILOT, self.pilot)
        except NotFoundError:
            log.info("pilot %s has no record yet; creating it", self.pilot)
            record = self.coord.create(Kind.PILOT, self.pilot, {})
        if record.state not in (PilotState.NEW.value, PilotState.PENDING.value):
            raise RegistrationError(
                f"pilot {self.pilot!r} is {record.state}; an agent starts only New or Pending pilots"
            )
        desc = record.data.get("description") or {}
        slots = cfg.slots or record.data.get("slots") or desc.get("number_of_processes") or cores()
        self.slots = SlotPool(int(slots))
        walltime = cfg.walltime if cfg.walltime is not None else desc.get("walltime")
        self._deadline = time.monotonic() + float(walltime) * 60.0 if walltime else None
        if cfg.workdir is not None:
            workdir = cfg.workdir
        elif desc.get("working_directory"):
            workdir = Path(desc["working_directory"]) / self.pilot
        else:
            workdir = Path.cwd() / self.pilot
        self.workdir = workdir.expanduser().resolve()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            where = str(self.workdir)
            raise RegistrationError(f"cannot create workdir {where!r}: {exc.strerror or exc}") from exc
        if not self._stager_given:
            session = Session(cfg.url, namespace=self.coord.namespace)
            self._session = session
            self.stager = DataStager(
                self.coord, self.pilot, self.workdir / ".cache", session,
                input_wait=cfg.input_wait, stop=self._workers_interrupted,
            )
        self.coord.update_data(
            Kind.PILOT,
            self.pilot,
            {
                "slots": self.slots.total,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "workdir": str(self.workdir),
                "cached_dus": [],
            },
        )
        self.coord.heartbeat(self.pilot, cfg.heartbeat_ttl)
        self.coord.transition(
            Kind.PILOT,
            self.pilot,
            PilotState.RUNNING.value,
            pilot=self.pilot,
            detail={"host": socket.gethostname(), "pid": os.getpid(), "slots": self.slots.total},
        )
        log.info(
            "pilot %s running: %d slot(s), workdir %s, walltime %s, coordination %s namespace %s",
            self.pilot, self.slots.total, self.workdir,
            f"{walltime} min" if walltime else "none", self.coord.url, self.coord.namespace,
        )

    # --------------------------------------------------------------------- run
    def run(self) -> int:
        """Register, serve until stopped, hand work back, retire. Returns the process exit status."""
        self.register()
        self.recorder.start()
        self.reaper = Reaper()
        self._heartbeat = Heartbeat(
            self.coord, self.pilot, self.config.heartbeat_ttl, self.config.max_reassign, self._pilot_final
        )
        self._heartbeat.start()
        try:
            self._loop()
        except Exception as exc:  # keep the promise: hand the work back and end the pilot Failed
            log.exception("agent main loop failed")
            self.request_stop(f"agent error: {type(exc).__name__}: {exc}", PilotState.FAILED)
        finally:
            self._shutdown()
        return EXIT_FAILED if self._final_state is PilotState.FAILED else EXIT_OK

    def _remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _loop(self) -> None:
        outage_since: float | None = None
        while not self._stop.is_set():
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                self.request_stop("walltime reached")
                break
            try:
                self._step(remaining)
                if outage_since is not None:
                    log.info("coordination reachable again after %.1f s", time.monotonic() - outage_since)
                    outage_since = None
            except CoordinationError as exc:  # ride out a short outage; the heartbeat thread does too
                if outage_since is None:
                    outage_since = time.monotonic()
                    log.warning("coordination call failed, retrying: %s", exc)
                self._stop.wait(self.config.claim_timeout)

    def _step(self, remaining: float | None) -> None:
        """One round: watch running CUs, start held ones, claim as many CUs as slots are free."""
        limit = self.config.claim_timeout
        wait = limit if remaining is None else max(0.0, min(limit, remaining))
        self._watch_if_due()
        self._start_held()
        if self._held:
            self.slots.wait_for_free(self._held[0].processes, wait)
            return
        free = self.slots.free
        if free == 0:
            self.slots.wait_for_free(1, wait)
            return
        # prefetch (see PREFETCH_SECONDS), held locally, so a freed slot restarts at once
        ids = self.coord.claim(self.pilot, limit=free + self.prefetch(), timeout=wait)
        if ids:
            self._accept(ids)

    def _accept(self, ids: Sequence[str]) -> None:
        """Turn freshly claimed ids into workers, held tasks or immediate failures."""
        if self._stop.is_set():  # a stop arrived during the claim: give them back untouched
            self.coord.unclaim(self.pilot, list(ids))
            return
        records = self.coord.get_many(Kind.CU, list(ids))
        for cu_id, record in zip(ids, records, strict=True):
            if record is None:
                log.warning("claimed CU %s does not exist; dropping it", cu_id)
                self.coord.release(self.pilot, [cu_id])
                continue
            if record.state != S.PENDING.value:
                log.info("claimed CU %s is %s, not Pending; dropping it", cu_id, record.state)
                self.coord.release(self.pilot, [cu_id])
                continue
            try:
                task = Task.from_record(record)
            except DescriptionError as exc:
                self._fail_unstarted(cu_id, f"invalid description: {exc}")
                continue
            if not self.slots.fits(task.processes):
                self._fail_unstarted(
                    cu_id,
                    f"needs {task.processes} slots (number_of_processes) but pilot {self.pilot} has "
                    f"{self.slots.total}",
                )
                continue
            if self._held or not self._start(task):
                self._held.append(task)

    def _fail_unstarted(self, cu_id: str, reason: str) -> None:
        self.coord.update_data(Kind.CU, cu_id, {"reason": reason})
        req = TransitionRequest(cu_id, S.FAILED.value, S.PENDING.value, self.pilot, {"reason": reason})
        self.coord.transition_many(Kind.CU, [req])
        self.coord.release(self.pilot, [cu_id])
        log.info("CU %s: Failed: %s", cu_id, reason)

    def _start(self, task: Task) -> bool:
        """Start a worker if the slots are free; False (nothing done) if not."""
        if not self.slots.try_allocate(task.processes):
            return False
        worker = CUWorker(self, task)
        with self._workers_lock:
            self._workers[task.id] = worker
        worker.start()
        return True

    def _start_held(self) -> None:
        while self._held and not self._stop.is_set() and self._start(self._held[0]):
            self._held.popleft()

    def _active(self) -> list[CUWorker]:
        with self._workers_lock:
            return list(self._workers.values())

    def _watch_if_due(self) -> None:
        """About once a second: interrupt workers whose CU was canceled or taken away."""
        now = time.monotonic()
        if now < self._next_watch:
            return
        self._next_watch = now + self.config.claim_timeout
        self.reaper.flush()
        self.watch()

    def watch(self) -> None:
        """Read the states of all running CUs in one batch and interrupt the canceled / lost ones."""
        workers = self._active()
        if not workers:
            return
        records = self.coord.get_many(Kind.CU, [w.task.id for w in workers])
        for worker, record in zip(workers, records, strict=True):
            if record is None or record.state == S.CANCELED.value:
                worker.interrupt("canceled")
            elif is_final(record.state) or record.attempt != worker.task.attempt:
                worker.interrupt("lost")

    # ------------------------------------------------------------------- stop
    def _shutdown(self) -> None:
        reason = self._stop_reason or "stopped"
        log.info("pilot %s stopping: %s", self.pilot, reason)
        try:
            self._hand_back(reason)
        finally:
            if self._heartbeat is not None:
                self._heartbeat.stop()
            self.reaper.close()
            self._finish(reason)
            if self._session is not None:
                self._session.close()

    def _hand_back(self, reason: str) -> None:
        """Return held work, stop running CUs (they requeue themselves), sweep the claimed list."""
        if self._held:
            ids = [t.id for t in self._held]
            self._held.clear()
            self.coord.unclaim(self.pilot, ids)
            log.info("returned %d unstarted CU(s) to the shared queue", len(ids))
        for worker in self._active():
            worker.interrupt(f"stop:{reason}")
        self._workers_interrupted.set()
        deadline = time.monotonic() + self.config.stop_timeout
        for worker in self._active():
            worker.join(max(0.0, deadline - time.monotonic()))
        for worker in self._active():
            log.warning("CU %s did not hand itself back in time; requeuing it from the agent", worker.task.id)
            worker.abandoned = True
        # moves still queued (a Done of a CU that just ended) are stored before the sweep looks
        self.recorder.close(max(1.0, deadline - time.monotonic()))
        self._sweep(reason)

    def _sweep(self, reason: str) -> None:
        """Whatever is still in our claimed list goes back (Pending ones unchanged, started ones +1)."""
        ids = self.coord.claimed(self.pilot)
        if not ids:
            return
        unstarted: list[str] = []
        for cu_id, record in zip(ids, self.coord.get_many(Kind.CU, ids), strict=True):
            if record is None or is_final(record.state):
                self.coord.release(self.pilot, [cu_id])
            elif record.state == S.PENDING.value:
                unstarted.append(cu_id)
            else:
                to = S.PENDING if self.policies.may_reassign(record.attempt) else S.FAILED
                detail = {"reason": f"pilot {self.pilot} stopped: {reason}"}
                req = TransitionRequest(cu_id, to.value, record.state, self.pilot, detail)
                if self.coord.transition_many(Kind.CU, [req])[0].ok and to is S.PENDING:
                    unstarted.append(cu_id)
                else:
                    self.coord.release(self.pilot, [cu_id])
        if unstarted:
            self.coord.unclaim(self.pilot, unstarted)

    def _finish(self, reason: str) -> None:
        try:
            # work still waiting on this pilot's own queue goes to the shared queue: nothing is stranded
            self.coord.requeue_lost(self.pilot, self.policies.max_reassign, force=True)
            self.coord.retire(self.pilot)
        finally:
            req = TransitionRequest(
                self.pilot, self._final_state.value, PilotState.RUNNING.value, self.pilot, {"reason": reason}
            )
            result = self.coord.transition_many(Kind.PILOT, [req])[0]
            final = self._final_state.value if result.ok else result.previous
            log.info("pilot %s is %s (%s)", self.pilot, final, reason)


class _NoStager:
    """Stands in before registration chooses the real stager."""

    def stage_in(self, task: Task, sandbox: Path) -> None:
        """Nothing to do."""

    def stage_out(self, task: Task, sandbox: Path) -> None:
        """Nothing to do."""


_NO_STAGER = _NoStager()


def _configure_logging(config: AgentConfig) -> None:
    logging.basicConfig(
        level=getattr(logging, config.log_level),
        format=f"%(asctime)s %(levelname)s agent[{config.pilot}] %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _install_signal_handlers(agent: Agent) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        agent.request_stop(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m agent``; returns the exit status (0 Done, 1 Failed, 3 no start)."""
    config = parse_args(argv)
    _configure_logging(config)
    args = list(argv if argv is not None else sys.argv[1:])
    if any(a.startswith("--url") for a in args) and url_has_password(config.url):
        log.warning("the coordination URL on the command line carries a password; prefer PDATA_URL")
    try:
        coord = connect(config.url, config.namespace)
    except PilotDataError as exc:
        log.error("cannot open coordination: %s", exc)
        return EXIT_STARTUP
    agent = Agent(config, coord)
    _install_signal_handlers(agent)
    try:
        return agent.run()
    except RegistrationError as exc:
        log.error("%s", exc)
        _fail_pilot(coord, config.pilot, str(exc))
        return EXIT_STARTUP
    except PilotDataError as exc:
        log.error("agent failed: %s", exc)
        _fail_pilot(coord, config.pilot, str(exc))
        return EXIT_STARTUP
    finally:
        coord.close()


def _fail_pilot(coord: Coordination, pilot: str, reason: str) -> None:
    """Best effort: mark a pilot this agent could not start (still New/Pending) Failed, with the reason."""
    detail: dict[str, Any] = {"reason": reason}
    try:
        state = coord.get(Kind.PILOT, pilot).state
        if state in (PilotState.NEW.value, PilotState.PENDING.value):
            coord.retire(pilot)
            req = TransitionRequest(pilot, PilotState.FAILED.value, state, detail=detail)
            coord.transition_many(Kind.PILOT, [req])
    except PilotDataError as exc:
        log.error("could not mark pilot %s Failed: %s", pilot, exc)
