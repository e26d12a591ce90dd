"""PilotComputeService and PilotCompute: create pilots on resources and follow them.

A pilot is recorded in coordination (kind ``pilot``), moved to Pending, and its agent is started
by the launcher for its ``service_url`` scheme (``fork``, ``ssh``, ``slurm``, ``slurm+ssh``). The agent
moves it to Running when it registers. :meth:`PilotComputeService.refresh` asks the launchers about
pilots that are not final, so a pilot whose batch job ended or was cancelled becomes Done/Failed/
Canceled instead of Running forever (BigJob #30), and takes back the work of pilots whose
heartbeat expired (DIANE's lost-task policy).
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Mapping
from typing import Any

from pilotdata.config import data_dir
from pilotdata.coordination import EntityRecord
from pilotdata.descriptions import PilotComputeDescription, affinity_labels
from pilotdata.errors import IllegalTransitionError, LaunchError, NotFoundError, PilotDataError, StateError
from pilotdata.launchers import JobState, JobStatus, Launcher, LaunchSpec, launcher_for
from pilotdata.services.handle import EntityHandle
from pilotdata.services.policy import FailurePolicy
from pilotdata.services.waiting import wait_for_states
from pilotdata.session import Session, resolve
from pilotdata.states import FINAL_STATES, Kind, PilotState
from pilotdata.stores.base import public_options

log = logging.getLogger(__name__)

_LOCAL_SCHEMES = ("fork", "subprocess", "slurm")
_JOB_TO_PILOT = {
    JobState.DONE: PilotState.DONE,
    JobState.FAILED: PilotState.FAILED,
    JobState.CANCELED: PilotState.CANCELED,
}


class PilotCompute(EntityHandle):
    """A handle on one pilot (BigJob's ``PilotCompute``); cheap to create, reconnects by id."""

    kind = Kind.PILOT

    def __init__(self, pilot_url: str, *, session: Session | None = None,
                 service: PilotComputeService | None = None) -> None:
        super().__init__(pilot_url, session=session)
        self._service = service

    def get_details(self) -> dict[str, Any]:
        """State, description, slots, labels, cached DataUnits, launcher job and timestamps."""
        rec = self._record()
        return {
            "id": rec.id,
            "state": rec.state,
            "description": rec.data.get("description"),
            "labels": rec.data.get("labels", {}),
            "slots": rec.data.get("slots"),
            "cached_dus": rec.data.get("cached_dus", []),
            "launcher": rec.data.get("launcher"),
            "host": rec.data.get("host"),
            "reason": rec.detail.get("reason"),
            "times": rec.times,
            "claimed": self._session.coord.claimed(self.id),
            "queued": len(self._session.coord.queued(self.id)),
        }

    def wait(self, timeout: float | None = None, state: str = PilotState.RUNNING) -> str:
        """Block until the pilot reaches ``state`` (default Running) or a final state; return the state."""
        svc = self._service or fallback_service(self._session)

        def tick() -> None:
            svc.refresh()

        rec = wait_for_states(self._session.coord, Kind.PILOT, [self.id], {str(state)}, timeout=timeout,
                              tick=tick)
        return rec[0].state

    def cancel(self) -> None:
        """Stop the pilot: Canceled, agent killed through its launcher, claimed work requeued."""
        service = self._service or fallback_service(self._session)
        service.cancel_pilot(self.id)

    def submit_compute_unit(self, compute_unit_description: Mapping[str, Any] | Any) -> Any:
        """Run a ComputeUnit on this pilot (bound here, no placement). Returns its ComputeUnit.

        Raises :class:`~pilotdata.errors.StateError` if the pilot has ended (nothing is recorded).
        """
        from pilotdata.services.compute_data import submit_units

        state = self.get_state()
        if state in FINAL_STATES:
            raise StateError(f"pilot {self.id} is {state}: it takes no more work")

        return submit_units(self._session, [compute_unit_description], pilot=self.id)[0]


class PilotComputeService:
    """Creates and tracks pilots (BigJob's ``PilotComputeService``).

    ``launcher_options`` go to every launcher this service creates (e.g. ``known_hosts``,
    ``key_filename``, ``python``, ``slurm_conf``); ``create_pilot(..., **options)`` adds per-pilot ones.
    """

    def __init__(
        self,
        coordination_url: str | None = None,
        *,
        namespace: str | None = None,
        session: Session | None = None,
        policy: FailurePolicy | None = None,
        launcher_options: Mapping[str, Any] | None = None,
        pcs_url: str | None = None,
    ) -> None:
        self._session = resolve(session, coordination_url, namespace)
        self.policy = policy or FailurePolicy()
        self._launcher_options = dict(launcher_options or {})
        self.id = pcs_url or f"pcs-{uuid.uuid4().hex[:12]}"
        self._launchers: dict[tuple[str, tuple[tuple[str, str], ...]], Launcher] = {}
        self._pilot_options: dict[str, dict[str, Any]] = {}

    @property
    def session(self) -> Session:
        """The session this service talks through."""
        return self._session

    def get_url(self) -> str:
        """This service's id (reconnect with ``PilotComputeService(pcs_url=...)``)."""
        return self.id

    # ------------------------------------------------------------------ creation
    def create_pilot(
        self, pilot_compute_description: Mapping[str, Any] | PilotComputeDescription, **options: Any
    ) -> PilotCompute:
        """Record a pilot, submit its agent through the launcher for its ``service_url``; return it.

        Bad descriptions raise :class:`~pilotdata.errors.DescriptionError` and record nothing. A launch
        failure marks the pilot Failed with the reason and raises :class:`LaunchError`.
        """
        desc = PilotComputeDescription.coerce(pilot_compute_description)
        opts = {**self._launcher_options, **options}
        launcher = self._launcher(desc.service_url, opts)  # unknown scheme / bad options: nothing recorded
        coord = self._session.coord
        pilot_id = f"pilot-{uuid.uuid4().hex[:12]}"
        scheme = desc.service_url.split("://", 1)[0].lower()
        local = scheme in _LOCAL_SCHEMES
        workdir = desc.working_directory or (
            str(data_dir() / "pilots" / pilot_id) if local else f".pilot-data/pilots/{pilot_id}"
        )
        python = str(opts.get("python") or (sys.executable if local else "python3"))
        argv = [python, "-m", "agent", "--pilot", pilot_id, "--slots", str(desc.number_of_processes),
                "--workdir", workdir, *self.policy.agent_arguments()]
        if desc.walltime is not None:
            argv += ["--walltime", str(desc.walltime)]
        coord.create(Kind.PILOT, pilot_id, {
            "description": desc.to_dict(),
            "labels": affinity_labels(desc),
            "slots": desc.number_of_processes,
            "cached_dus": [],
            "service": self.id,
            "workdir": workdir,
        })
        self._pilot_options[pilot_id] = opts
        coord.transition(Kind.PILOT, pilot_id, PilotState.PENDING, detail={"service_url": desc.service_url})
        spec = LaunchSpec.from_description(pilot_id, argv, desc.to_dict(), env=self._session.agent_environment(),
                                           default_working_directory=workdir)
        try:
            job_id = launcher.submit(spec)
        except PilotDataError as exc:
            self._fail(pilot_id, f"launch failed: {exc}")
            raise
        except OSError as exc:
            self._fail(pilot_id, f"launch failed: {exc}")
            raise LaunchError(f"cannot start pilot {pilot_id} on {launcher.url}: {exc}") from exc
        coord.update_data(Kind.PILOT, pilot_id, {"launcher": {
            "scheme": scheme, "job_id": job_id, "service_url": launcher.url,
            "options": public_options(opts),  # so another process can query / cancel it; never secrets
        }})
        log.info("pilot %s submitted to %s as job %s", pilot_id, launcher.url, job_id)
        return PilotCompute(pilot_id, session=self._session, service=self)

    def _launcher(self, service_url: str, options: Mapping[str, Any]) -> Launcher:
        key = (service_url, tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key not in self._launchers:
            self._launchers[key] = launcher_for(service_url, **options)
        return self._launchers[key]

    def _options_for(self, pilot_id: str, info: Mapping[str, Any]) -> dict[str, Any]:
        """Launcher options of a pilot: the ones it was created with here, else its recorded public ones."""
        if pilot_id in self._pilot_options:
            return self._pilot_options[pilot_id]
        return {**dict(info.get("options") or {}), **self._launcher_options}

    def _fail(self, pilot_id: str, reason: str) -> None:
        try:
            self._session.coord.transition(Kind.PILOT, pilot_id, PilotState.FAILED, detail={"reason": reason})
        except IllegalTransitionError:
            pass  # already final

    # ------------------------------------------------------------------ queries
    def list_pilots(self) -> list[PilotCompute]:
        """Pilots created through this service (or, for a service with a new id, every pilot)."""
        coord = self._session.coord
        ids = coord.list_ids(Kind.PILOT)
        records = coord.get_many(Kind.PILOT, ids)
        mine = [r.id for r in records if r is not None and r.data.get("service") == self.id]
        chosen = mine if mine else [r.id for r in records if r is not None]
        return [PilotCompute(i, session=self._session, service=self) for i in chosen]

    def get_pilot(self, pilot_id: str) -> PilotCompute:
        """A handle on an existing pilot; :class:`NotFoundError` if there is none."""
        if not self._session.coord.exists(Kind.PILOT, pilot_id):
            raise NotFoundError(f"pilot {pilot_id!r} does not exist")
        return PilotCompute(pilot_id, session=self._session, service=self)

    # ------------------------------------------------------------------ upkeep
    def refresh(self) -> dict[str, str]:
        """Reconcile pilots with their launchers and requeue lost work; return ``{pilot: new state}``.

        A pilot whose job the launcher reports ended becomes Done/Failed/Canceled (and its claimed work
        is requeued); a pilot whose heartbeat expired is requeued and marked Failed. Safe to call from
        many processes at once: requeues are atomic and transitions are checked.
        """
        coord = self._session.coord
        changed: dict[str, str] = {}
        records = [r for r in coord.get_many(Kind.PILOT, coord.list_ids(Kind.PILOT))
                   if r is not None and r.state not in FINAL_STATES]
        by_launcher: dict[tuple[str, str], list[EntityRecord]] = {}
        for rec in records:
            info = rec.data.get("launcher") or {}
            if info.get("job_id") and info.get("service_url"):
                by_launcher.setdefault((info["service_url"], rec.id), []).append(rec)
        for (service_url, pilot_id), recs in by_launcher.items():
            job_id = recs[0].data["launcher"]["job_id"]
            try:
                launcher = self._launcher(service_url, self._options_for(pilot_id, recs[0].data["launcher"]))
                status = launcher.status([job_id]).get(job_id)
            except PilotDataError as exc:
                log.warning("cannot query pilot %s: %s", pilot_id, exc)
                continue
            if status is not None and status.is_final:
                changed[pilot_id] = self._job_ended(pilot_id, status)
        finished = [r.id for r in coord.get_many(Kind.PILOT, coord.list_ids(Kind.PILOT))
                    if r is not None and r.state in FINAL_STATES]
        for pilot_id, length in coord.queue_lengths(finished).items():
            if length:  # bound to a pilot that ended before taking it: back to the shared queue
                coord.requeue_lost(pilot_id, self.policy.lost_task_max_reassign, force=True)
        for pilot_id in coord.expired_pilots():
            result = coord.requeue_lost(pilot_id, self.policy.lost_task_max_reassign)
            if result.requeued or result.failed or result.dropped or pilot_id not in changed:
                self._fail(pilot_id, "heartbeat expired: pilot lost")
                changed[pilot_id] = PilotState.FAILED.value
        return changed

    def _job_ended(self, pilot_id: str, status: JobStatus) -> str:
        coord = self._session.coord
        coord.requeue_lost(pilot_id, self.policy.lost_task_max_reassign, force=True)
        target = _JOB_TO_PILOT.get(status.state, PilotState.FAILED)
        reason = status.reason or f"job {status.state.value}"
        if status.exit_code not in (None, 0) and target is PilotState.DONE:
            target = PilotState.FAILED
        try:
            coord.transition(Kind.PILOT, pilot_id, target, detail={"reason": reason, "exit_code": status.exit_code})
        except IllegalTransitionError:
            pass  # the agent finished it first
        return coord.get(Kind.PILOT, pilot_id).state

    # ------------------------------------------------------------------ cancel
    def cancel_pilot(self, pilot_id: str) -> None:
        """Cancel one pilot: mark Canceled, stop its agent, return its claimed work to the queue."""
        coord = self._session.coord
        rec = coord.get(Kind.PILOT, pilot_id)
        if rec.state not in FINAL_STATES:
            try:
                coord.transition(Kind.PILOT, pilot_id, PilotState.CANCELED, detail={"reason": "canceled by user"})
            except IllegalTransitionError:
                pass
        info = rec.data.get("launcher") or {}
        if info.get("job_id") and info.get("service_url"):
            try:
                opts = self._options_for(pilot_id, info)
                launcher = self._launcher(info["service_url"], opts)
                launcher.cancel(info["job_id"])
            except PilotDataError as exc:
                log.warning("cannot cancel the job of pilot %s: %s", pilot_id, exc)
        coord.requeue_lost(pilot_id, self.policy.lost_task_max_reassign, force=True)

    def cancel(self) -> None:
        """Cancel every pilot of this service (BigJob's ``pcs.cancel()``)."""
        for pilot in self.list_pilots():
            if pilot.get_state() not in FINAL_STATES:
                self.cancel_pilot(pilot.id)
        self.close()

    def close(self) -> None:
        """Close the launchers' connections (SSH clients); pilots keep running."""
        for launcher in self._launchers.values():
            launcher.close()
        self._launchers.clear()

    def __repr__(self) -> str:
        return f"PilotComputeService({self.id!r}, {self._session!r})"


_fallbacks: dict[int, PilotComputeService] = {}


def fallback_service(session: Session) -> PilotComputeService:
    """One PilotComputeService per session for handles reconnected by id (reuses its launchers)."""
    svc = _fallbacks.get(id(session))
    if svc is None or svc.session is not session:
        svc = _fallbacks[id(session)] = PilotComputeService(session=session)

        def forget() -> None:
            gone = _fallbacks.pop(id(session), None)
            if gone is not None:
                gone.close()

        session.on_close(forget)
    return svc
