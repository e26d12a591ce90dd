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
   The same check reconciles the pilot's in-progress list with what the agent holds: a claimed id no
   worker, held task or queued move accounts for two checks in a row (a claim whose reply was lost, a
   worker that could not record its end during an outage) is handed back like at a stop, so no CU sits
   claimed by a live pilot that will never finish it.
3. **Stop** (walltime, SIGTERM/SIGINT/SIGHUP, the pilot made final by a client, or the failing-worker
   limit): stop claiming; ``unclaim`` the held (unstarted) CUs to the front of the shared queue;
   running CUs are killed and go back to Pending with attempt+1 through the retry path (while the
   lost-task reassign budget lasts), each in one owned, atomic move; CUs in output staging may finish.
   Then hand back whatever is still claimed, retire (heartbeat key and live-set entry removed) and move
   the pilot to Done (Failed for a failing worker). If coordination cannot be reached the agent does
   not retire: its heartbeat lapses and any live participant requeues its work.

The walltime the agent gets (``--walltime``) is the pilot's minus a margin
(:func:`pilotdata.services.pilot_compute.agent_walltime`), so the hand-back is over before the
launcher's or the batch system's own limit signals the job.
"""

from __future__ import annotations

import functools
import logging
import os
import select
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

from agent.allocation import PilotNodes, start_nodes
from agent.binding import CoreBinding, check_mode
from agent.config import AgentConfig, parse_args, url_has_password
from agent.cores import NodeSlots, Placement
from agent.environment import allowed
from agent.executors import LocalExecutor
from agent.heartbeat import Heartbeat
from agent.launch import cores
from agent.nodes import Node
from agent.policies import FailureStreak, Policies
from agent.pool import ThreadPool
from agent.reaper import Reaper
from agent.recorder import Recorder
from agent.staging import DataStager
from agent.task import Task
from agent.worker import CUWorker, Stager
from pilotdata.coordination import SHARED_QUEUE, Coordination, TransitionRequest, connect
from pilotdata.errors import CoordinationError, DescriptionError, NotFoundError, PilotDataError
from pilotdata.records import TRANSFER_EVENT
from pilotdata.redaction import install_log_filter
from pilotdata.states import ComputeUnitState as S
from pilotdata.states import Kind, PilotState, is_final

log = logging.getLogger("agent")

PREFETCH_SECONDS = 0.05
"""Claimed-but-unstarted work an agent may hold, in seconds of the recent CUs' run time: enough that
a freed slot never waits for a claim round trip when CUs take milliseconds, never more than one
extra CU per slot when they take longer (other pilots must not wait behind this one's backlog)."""

PREFETCH_MAX = 64
"""At most this many CUs per slot are held (prefetched) at once: the cap when CUs take under a millisecond.
With 0.7 ms CUs on 2 slots the agent claims again while 64 CUs, 22 ms of the slots' work, are still held:
enough to ride through a claim that waits 20-30 ms behind other clients' scripts in a Redis server sharing
the cores. At 16 per slot (6 ms held at the claim) both slots went idle for 2-24 ms at a time."""

RUN_WINDOW = 10
"""The run-time estimate that sizes the prefetch weighs the newest CU 1/10 (the first ten: their mean)."""

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
"""The signals that stop the agent (a batch system's end of the job, Ctrl-C, a lost terminal)."""

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
        self.passed_environment: Mapping[str, str] = allowed(self.environment)
        """The part of it every CU gets (:func:`agent.environment.passed`), filtered once."""
        self.kill_grace = config.kill_grace
        self.workdir = Path()
        self.slots = NodeSlots([Node("localhost", 1)])
        self.nodes: PilotNodes | None = None
        """The allocation's nodes and their executors (made in :meth:`register`)."""
        self.binding = CoreBinding(1, "none")
        """The CPUs of the agent's node's CUs (:mod:`agent.binding`; made in :meth:`register`)."""
        self.reaper = Reaper(start=False)  # the real one starts in run()
        self.stager: Stager = stager or _NO_STAGER
        self._stager_given = stager is not None
        self._workers: dict[str, CUWorker] = {}
        self._workers_lock = threading.Lock()
        self._held: deque[Task] = deque()
        """Claimed CUs waiting for cores, in claim order (guarded by ``_workers_lock``)."""
        self._wake = threading.Event()
        self._handback_pause = self.config.claim_timeout
        """Seconds to wait after a claim whose CUs were all handed back (doubles up to HANDBACK_PAUSE_MAX)."""
        """Set by a worker when the held CUs run low: the main loop claims more."""
        self._claiming = threading.Lock()
        """Held by the main thread from a claim until its ids are held or working, and by anyone letting a
        CU go while releasing its id: a release never lands between the claim of an id this agent still
        holds under an earlier claim (a detector requeued it) and :meth:`_accept` handing it back."""
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
        self._runs = 0
        """CUs whose run time went into :attr:`_run_seconds`."""
        self._unreleased: set[str] = set()
        """CUs let go of whose release failed (coordination down): retried by :meth:`watch`."""
        self._signal_pipe: int | None = None
        """Read end of the signal wakeup pipe (see :meth:`signalled`), once the handlers are installed."""
        self._signal_seen = False
        """Set by the signal watcher when a signal came through the pipe."""
        self._suspects: set[str] = set()
        """Claimed ids nothing accounted for at the last check (handed back if still so at the next)."""

    # ------------------------------------------------------------ worker host
    @property
    def stopping(self) -> threading.Event:
        """Set once a stop was requested."""
        return self._stop

    @property
    def stop_kind(self) -> str:
        """``stop:<reason>`` once a stop was requested, else ``""`` (read by workers, lock-free)."""
        return f"stop:{self._stop_reason}" if self._stop.is_set() else ""

    def signalled(self) -> bool:
        """Whether a stop signal has reached this process, even if the stop it causes has not begun yet.

        A worker can see its CU exit before the agent's own SIGTERM (sent with the CU's by the batch
        system) has stopped the agent: the kernel delivers a signal to one thread of the process, which
        may wait for a core, and the stop is requested from the signal watcher's thread after that. A
        signal not yet delivered is in ``sigpending()``; once delivered, the C-level handler has written
        it to the wakeup pipe (:meth:`listen_for_signals`), where it stays until the watcher, which notes
        it first, reads it.
        """
        if self._signal_pipe is None:
            return False
        # in the order a signal passes through them, so that it is seen wherever it is meanwhile
        if not STOP_SIGNALS.isdisjoint(signal.sigpending()):
            return True
        poller = select.poll()
        poller.register(self._signal_pipe, select.POLLIN)
        return bool(poller.poll(0)) or self._signal_seen

    def listen_for_signals(self) -> None:
        """Stop on SIGTERM, SIGINT and SIGHUP (call from the main thread).

        Nothing runs in signal context: the Python-level handlers do nothing, the interpreter's C-level
        handler writes each signal to a wakeup pipe as it arrives, and a watcher thread turns it into
        :meth:`request_stop`. A handler that requested the stop itself ran inside whatever the main thread
        was doing, and a second signal (a batch system's group kill and the launcher wrapper's forward
        arrive together) re-entered it while the first held the stop event's lock: the agent hung until
        the launcher's SIGKILL, without handing its work back.
        """
        for sig in STOP_SIGNALS:
            signal.signal(sig, _noted)
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self._signal_pipe = read_end
        threading.Thread(target=self._watch_signals, args=(read_end,), name="signals", daemon=True).start()

    def _watch_signals(self, pipe: int) -> None:
        """Signal watcher thread: request the stop for each stop signal written to the wakeup pipe."""
        poller = select.poll()
        poller.register(pipe, select.POLLIN)
        while True:
            poller.poll()
            self._signal_seen = True  # before the bytes leave the pipe: signalled() never misses one
            try:
                data = os.read(pipe, 64)
            except BlockingIOError:
                continue
            for number in data:
                if number in STOP_SIGNALS:
                    self.request_stop(f"signal {signal.Signals(number).name}")

    def release_later(self, cu_id: str) -> None:
        """A worker could not release a CU it let go of; :meth:`watch` retries it."""
        with self._workers_lock:
            self._unreleased.add(cu_id)

    def release_claim(self, cu_id: str) -> None:
        """Drop ``cu_id`` from this pilot's in-progress list for a worker letting it go, never while the
        main thread is between a claim and its :meth:`_accept` (which hands back a re-claimed id)."""
        with self._claiming:
            self.coord.release(self.pilot, [cu_id])

    # ------------------------------------------------------------ stop requests
    def request_stop(self, reason: str, final: PilotState = PilotState.DONE) -> None:
        """Ask the main loop to stop (thread-safe, not for signal handlers: see :meth:`listen_for_signals`);
        the first reason wins."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._final_state = final
            self._stop.set()  # workers read stop_kind: a running CU is killed at once, not at the next check

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
        """Fold a CU's run time into the moving average that sizes the prefetch.

        The plain mean of the first :data:`RUN_WINDOW` run times, then an exponential average with the
        same weight for the newest: one quick first CU does not set the estimate alone.
        """
        with self._workers_lock:
            self._runs += 1
            avg = self._run_seconds
            self._run_seconds = seconds if avg is None else avg + (seconds - avg) / min(self._runs, RUN_WINDOW)

    def prefetch(self) -> int:
        """CUs to hold beyond the free slots: one per slot, more for CUs that take milliseconds.

        Never more than the CUs seen ending so far (a slow start): the estimate of a few CUs must not let
        this pilot take a whole queue that other pilots share.
        """
        total = self.slots.total
        with self._workers_lock:
            avg = self._run_seconds
            runs = self._runs
        if avg is None or avg >= PREFETCH_SECONDS:
            return total
        wanted = int(total * PREFETCH_SECONDS / max(avg, 1e-4))
        return min(total * PREFETCH_MAX, max(total, min(wanted, runs)))

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
        walltime = cfg.walltime if cfg.walltime is not None else desc.get("walltime")
        self._deadline = time.monotonic() + float(walltime) * 60.0 if walltime else None
        if not walltime:
            log.warning("pilot %s has no walltime: it runs until it is stopped (give it one: the batch system "
                        "will not wait for the hand-back)", self.pilot)
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
        try:  # a record not written through PilotComputeDescription may hold anything
            binding = check_mode(desc.get("cpu_binding") or "auto")
        except ValueError as exc:
            raise RegistrationError(f"pilot {self.pilot!r}: {exc}") from exc
        self.nodes = self._start_nodes(int(slots), desc.get("processes_per_node"))  # opening a cache cleans it
        self.slots = self.nodes.slots
        here = self.slots.cores_on(self.nodes.local or "")  # 0: this node runs no CU (not in the allocation)
        self.binding = CoreBinding(max(here, 1), binding if here else "none")
        log.info("%s", self.binding.describe())
        if not self._stager_given:
            self.stager = DataStager(self.coord, self.pilot, self.nodes.caches, self.slots.nodes[0],
                                     input_wait=cfg.input_wait, stop=self._workers_interrupted,
                                     pilot_files_dir=self.workdir / ".pilot-files")
        self.coord.update_data(
            Kind.PILOT,
            self.pilot,
            {
                "slots": self.slots.total,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "workdir": str(self.workdir),
                "cached_dus": [],
                "heartbeat_ttl": cfg.heartbeat_ttl,
                "node_caches": {},
                "cpu_binding": sorted(self.binding.cpus) if self.binding.active else None,
                **self.nodes.describe(),
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

    def _start_nodes(self, slots: int, per_node: int | None) -> PilotNodes:
        """Discover the allocation and start an executor per node (:mod:`agent.allocation`)."""
        from pilotdata.data import open_pd_store

        def record(du_id: str, detail: Mapping[str, Any]) -> None:
            self.coord.record_event(TRANSFER_EVENT, du_id, detail, pilot=self.pilot)

        try:
            nodes = start_nodes(
                pilot=self.pilot, slots=slots, per_node=per_node, workdir=self.workdir,
                node_launch=self.config.node_launch, node_cache=self.config.node_cache,
                opener=lambda pd_id, data: open_pd_store(self.coord, pd_id), record=record,
            )
        except PilotDataError as exc:
            raise RegistrationError(str(exc)) from exc
        nodes.on_lost = self._node_lost
        return nodes

    def _node_lost(self, node: str, why: str) -> None:
        """A node is gone: its CUs requeue themselves (their workers see it); the pilot runs on the rest."""
        log.error("node %s lost (%s): its CUs go back to the queue, the pilot goes on with %d core(s)",
                  node, why, self.slots.total)
        try:
            if self.nodes is not None:
                self.coord.update_data(Kind.PILOT, self.pilot, {**self.nodes.describe(), "slots": self.slots.total})
        except PilotDataError as exc:
            log.warning("could not record the loss of node %s: %s", node, exc)
        if self.slots.total == 0:
            self.request_stop(f"every node lost (last: {node}: {why})", PilotState.FAILED)

    # --------------------------------------------------------------------- run
    def run(self) -> int:
        """Register, serve until stopped, hand work back, retire. Returns the process exit status."""
        self.register()
        self.recorder.start()
        self.reaper = Reaper()
        for executor in self.nodes.executors.values() if self.nodes is not None else ():
            if isinstance(executor, LocalExecutor):  # a fetch cut short by our death leaves no part files
                self.reaper.watch_cache(executor.service.cache.root)
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
        """One round: watch running CUs, start held ones, claim when the held work runs low.

        A worker whose CU ended starts the next held CU on its own thread (:meth:`_next_worker`), so the
        main thread is not woken for every CU: only when the held work falls below half the prefetch
        (:attr:`_wake`), to claim more, and about once a second to watch the running CUs.
        """
        limit = self.config.claim_timeout
        wait = limit if remaining is None else max(0.0, min(limit, remaining))
        self._watch_if_due()
        self._wake.clear()
        self._start_held()
        prefetch = self.prefetch()
        with self._workers_lock:
            held = len(self._held)
            short = self._run_seconds is not None and self._run_seconds < PREFETCH_SECONDS
        if held >= _low_water(prefetch):  # enough to restart every slot that frees: sleep until it runs low
            self._wake.wait(wait)
            return
        if not short and self.slots.free == 0:  # CUs that take a while: claim for a free slot only, so an
            self.slots.wait_for_free(1, wait)  # idle pilot is not kept waiting behind this one's backlog
            return
        # top up to the free slots plus the prefetch (see PREFETCH_SECONDS), held locally, so a freed slot
        # restarts at once; while a held CU waits for room, nothing more is claimed than the prefetch allows
        with self._claiming:
            ids = self.coord.claim(self.pilot, limit=self.slots.free + prefetch - held, timeout=wait)
            skipped = self._accept(ids) if ids else 0
        if ids and skipped == len(ids):  # all handed back (too long for the walltime left, or still held
            self._stop.wait(self._handback_pause)  # here under an earlier claim): do not spin on them; the
            # walltime left only shrinks, so the same CUs come back: wait longer each time (bounded)
            self._handback_pause = min(self._handback_pause * 2, HANDBACK_PAUSE_MAX)
        elif ids:
            self._handback_pause = self.config.claim_timeout

    def _accept(self, ids: Sequence[str]) -> int:
        """Turn freshly claimed ids into workers, held tasks or immediate failures; return how many were
        handed back because they cannot finish before the walltime or are still held here.

        Called with ``_claiming`` held. A Pending id that a worker or the held queue of this agent still
        has under an earlier claim (a detector requeued it while it ran here) goes back to the shared queue
        untouched: the old worker's release would drop the new claim (the in-progress list holds ids, not
        attempts), and two workers of one CU must never run. It is claimed again once the old one is gone.
        """
        if self._stop.is_set():  # a stop arrived during the claim: give them back untouched
            self.coord.unclaim(self.pilot, list(ids))
            return 0
        skipped: list[str] = []
        again: list[str] = []
        records = self.coord.get_many(Kind.CU, list(ids))
        with self._workers_lock:  # once per claim: a scan of the held queue per CU grew with the prefetch
            held = {t.id for t in self._held}
        for cu_id, record in zip(ids, records, strict=True):
            if record is None:
                log.warning("claimed CU %s does not exist; dropping it", cu_id)
                self.coord.release(self.pilot, [cu_id])
                continue
            if record.state == S.PENDING.value and self._holds(cu_id, held):
                again.append(cu_id)
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
            unfit = self.slots.unfit(task.processes, task.is_mpi, self.pilot)
            if unfit:
                self._fail_unstarted(cu_id, unfit)
                continue
            if too_long_for(task, self._remaining()):
                skipped.append(cu_id)
                continue
            with self._workers_lock:
                worker = None if self._held else self._place(task)
                if worker is None:
                    self._held.append(task)
            if worker is not None:
                self._launch(worker)
        if skipped:  # untouched, to the shared queue: a pilot with more time left takes them
            self.coord.unclaim(self.pilot, skipped)
            log.info("handed back %d CU(s) whose timeout exceeds the walltime left (%.0f s): %s", len(skipped),
                     self._remaining() or 0.0, ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
        if again:
            self.coord.unclaim(self.pilot, again)
            log.info("claimed CU(s) still held here under an earlier claim, handed back until it ends: %s",
                     ", ".join(again))
        return len(skipped) + len(again)

    def _holds(self, cu_id: str, held: set[str]) -> bool:
        """Whether a worker or the held queue has ``cu_id`` (under an earlier claim, if it was just claimed).

        ``held``: the ids in the held queue when this claim's records were read. Only :meth:`_accept` (under
        ``_claiming``) adds to the queue, and a CU leaves it for a worker (seen in ``_workers``) or for the
        shared queue, so an id missing from it was not held under an earlier claim.
        """
        with self._workers_lock:
            return cu_id in self._workers or cu_id in held

    def _fail_unstarted(self, cu_id: str, reason: str) -> None:
        req = TransitionRequest(cu_id, S.FAILED.value, S.PENDING.value, self.pilot, {"reason": reason},
                                {"reason": reason}, release=True, owner=self.pilot)
        if self.coord.transition_many(Kind.CU, [req])[0].ok:
            log.info("CU %s: Failed: %s", cu_id, reason)
        else:
            self.coord.release(self.pilot, [cu_id])

    def _place(self, task: Task) -> CUWorker | None:
        """A worker for ``task``, registered, its cores taken (on a node, or, MPI, on several); None (nothing
        done) if they are not free now. Called with ``_workers_lock`` held; :meth:`_launch` starts it."""
        inputs = [ref.du_id for ref in task.description.input_data]
        prefer = self.stager.nodes_with(inputs) if inputs and isinstance(self.stager, DataStager) else ()
        placement = self.slots.place(task.processes, task.is_mpi, prefer)
        if placement is None:
            return None
        worker = CUWorker(self, task, placement)
        self._workers[task.id] = worker
        return worker

    def _launch(self, worker: CUWorker) -> None:
        """Run ``worker`` on a pool thread, which then goes on with the held CUs (:meth:`_serve`)."""
        self.pool.submit(functools.partial(self._serve, worker))

    def _serve(self, worker: CUWorker | None) -> None:
        """Pool thread body: run a CU, then the next held one that fits, until none does."""
        while worker is not None:
            worker.run()
            worker = self._next_worker()

    def _next_worker(self) -> CUWorker | None:
        """The worker of the first held CU if it can start now (its cores are taken); None otherwise.

        Held CUs that no longer fit (nodes were lost) are returned to the shared queue. When the held
        work falls below half the prefetch, the main thread is woken to claim more.
        """
        unfit: list[str] = []
        worker: CUWorker | None = None
        low_water = _low_water(self.prefetch())
        with self._workers_lock:
            while self._held and not self._stop.is_set():
                task = self._held[0]
                if self.slots.unfit(task.processes, task.is_mpi):  # nodes were lost: another pilot may fit it
                    unfit.append(self._held.popleft().id)
                    continue
                worker = self._place(task)
                if worker is not None:
                    self._held.popleft()
                break
            low = len(self._held) < low_water
        if low or unfit:
            self._wake.set()
        if unfit:
            try:
                self.coord.unclaim(self.pilot, unfit)
            except CoordinationError as exc:  # still claimed by a live pilot: the watch hands them back
                log.warning("could not return %d CU(s) that no longer fit: %s", len(unfit), exc)
        return worker

    def _start_held(self) -> None:
        """Start every held CU that fits now, each on a pool thread of its own."""
        while True:
            worker = self._next_worker()
            if worker is None:
                return
            self._launch(worker)

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
        """Interrupt canceled / taken-back CUs; hand back claimed ids nothing here accounts for.

        One read of the in-progress list and one batch read of the running CUs' states. A worker whose
        CU was canceled is interrupted ``canceled``; one whose CU is final, was retried elsewhere
        (attempt changed) or is no longer in this pilot's in-progress list (taken back by a detector)
        ``lost``. See the module docstring for the reconciliation.
        """
        with self._workers_lock:
            unreleased = list(self._unreleased)
            # claimed again since (held or working here now): that claim is the one in the list
            retry = [i for i in unreleased if i not in self._workers and all(t.id != i for t in self._held)]
        if retry:
            self.coord.release(self.pilot, retry)
        if unreleased:
            with self._workers_lock:
                self._unreleased.difference_update(unreleased)
        with self._workers_lock:
            workers = list(self._workers.values())
            known = {w.task.id for w in workers} | {t.id for t in self._held}
        known |= self.recorder.pending_ids()
        claimed = self.coord.claimed(self.pilot)
        mine = set(claimed)
        if workers:
            records = self.coord.get_many(Kind.CU, [w.task.id for w in workers])
            for worker, record in zip(workers, records, strict=True):
                if record is None or record.state == S.CANCELED.value:
                    worker.interrupt("canceled")
                elif is_final(record.state) or record.attempt != worker.task.attempt or worker.task.id not in mine:
                    worker.interrupt("lost")
        known |= {w.task.id for w in self._active()} | self.recorder.pending_ids()
        orphans = {i for i in mine if i not in known}
        due = sorted(orphans & self._suspects)
        self._suspects = orphans - set(due)
        if due:
            log.warning("claimed CU(s) no worker holds (a lost claim reply, an unrecorded end): handing back %s",
                        ", ".join(due))
            self._sweep("nothing on the pilot held it", due)

    # ------------------------------------------------------------------- stop
    def _shutdown(self) -> None:
        reason = self._stop_reason or "stopped"
        log.info("pilot %s stopping: %s", self.pilot, reason)
        try:
            self._hand_back(reason)
        except Exception as exc:
            # what could not be handed back stays claimed by a pilot that stops heartbeating now: a
            # detector requeues it within the heartbeat TTL (retiring would hide it from them)
            log.error("could not hand all work back (%s); leaving it to lost-pilot detection", exc)
            if self._heartbeat is not None:
                self._heartbeat.stop()
            self.reaper.close()
            if self.nodes is not None:
                self.nodes.close()
            raise
        if self._heartbeat is not None:
            self._heartbeat.stop()
        self.reaper.close()
        if self.nodes is not None:
            self.nodes.close()
        self._finish(reason)

    def _hand_back(self, reason: str) -> None:
        """Stop running CUs (they requeue themselves), return held work, sweep the claimed list."""
        for worker in self._active():
            worker.interrupt(f"stop:{reason}")
        self._workers_interrupted.set()
        with self._workers_lock:
            ids = [t.id for t in self._held]
            self._held.clear()
        if ids:
            try:
                self.coord.unclaim(self.pilot, ids)
                log.info("returned %d unstarted CU(s) to the shared queue", len(ids))
            except CoordinationError as exc:  # the sweep (or a detector, once our heartbeat lapses) gets them
                log.warning("could not return %d unstarted CU(s) now: %s", len(ids), exc)
        deadline = time.monotonic() + self.config.stop_timeout
        for worker in self._active():
            worker.join(max(0.0, deadline - time.monotonic()))
        for worker in self._active():
            log.warning("CU %s did not hand itself back in time; requeuing it from the agent", worker.task.id)
            worker.abandoned = True
        # moves still queued (a Done of a CU that just ended) are stored before the sweep looks
        self.recorder.close(max(1.0, deadline - time.monotonic()))
        self._sweep(reason)

    def _sweep(self, reason: str, ids: Sequence[str] | None = None) -> None:
        """Hand back claimed CUs (all of them by default): Pending ones unchanged, started ones through
        the retry path (attempt+1, or Failed past the lost-task reassign budget), final ones released.

        Every move is owned by this pilot and releases / enqueues in the same atomic step.
        """
        ids = self.coord.claimed(self.pilot) if ids is None else list(ids)
        if not ids:
            return
        unstarted: list[str] = []
        gone: list[str] = []
        moves: list[TransitionRequest] = []
        for cu_id, record in zip(ids, self.coord.get_many(Kind.CU, ids), strict=True):
            if record is None or is_final(record.state):
                gone.append(cu_id)
            elif record.state in (S.NEW.value, S.PENDING.value):
                unstarted.append(cu_id)
            elif self.policies.may_reassign(record.attempt):
                detail = {"reason": f"pilot {self.pilot} stopped: {reason}"}
                moves.append(TransitionRequest(cu_id, S.PENDING.value, record.state, self.pilot, detail,
                                               release=True, owner=self.pilot, queue=SHARED_QUEUE, front=True))
            else:
                why = (f"pilot {self.pilot} stopped ({reason}) and the lost task max reassign "
                       f"({self.policies.max_reassign}) is used up")
                moves.append(TransitionRequest(cu_id, S.FAILED.value, record.state, self.pilot, {"reason": why},
                                               {"reason": why}, release=True, owner=self.pilot))
        if unstarted:
            self.coord.unclaim(self.pilot, unstarted)
        if moves:
            for req, res in zip(moves, self.coord.transition_many(Kind.CU, moves), strict=True):
                if not res.ok:  # moved by someone else meanwhile: no longer ours
                    gone.append(req.id)
        if gone:
            self.coord.release(self.pilot, gone)

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


HANDBACK_PAUSE_MAX = 8.0
"""Longest wait before claiming again after a claim of only CUs this pilot had to hand back: a pilot whose
walltime left is shorter than every queued CU's timeout claims and returns them about every 8 s instead
of every second; a new CU waits at most that long for it (other pilots claim it at once)."""


def _low_water(prefetch: int) -> int:
    """Held CUs below which the main loop claims more: half the prefetch (at least one)."""
    return max(1, prefetch // 2)


def too_long_for(task: Task, remaining: float | None) -> bool:
    """Whether ``task``'s runtime estimate (its ``timeout``) cannot end within ``remaining`` seconds."""
    estimate = task.description.timeout
    return remaining is not None and estimate is not None and estimate > remaining


class _NoStager:
    """Stands in before registration chooses the real stager."""

    def needs_staging(self, task: Task) -> bool:
        """Nothing to stage."""
        return False

    def stage_in(self, task: Task, sandbox: Path, placement: Placement | None = None) -> None:
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
    install_log_filter()  # secrets out of every record, libraries' included (botocore names the S3 key id)


def _noted(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler of the stop signals: nothing (see :meth:`Agent.listen_for_signals`)."""


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
    agent.listen_for_signals()
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
