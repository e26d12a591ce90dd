"""PilotComputeService and PilotCompute: create pilots on resources and follow them.

A pilot is recorded in coordination (kind ``pilot``), moved to Pending, and its agent is started
by the launcher for its ``service_url`` scheme (``fork``, ``ssh``, ``slurm``, ``slurm+ssh``). The agent
moves it to Running when it registers. :meth:`PilotComputeService.refresh` asks the launchers about
pilots that are not final, so a pilot whose batch job ended or was cancelled becomes Done/Failed/
Canceled instead of Running forever (BigJob #30), and takes back the work of pilots whose
heartbeat expired (DIANE's lost-task policy).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import uuid
from collections.abc import Mapping
from typing import Any

from pilotdata.config import data_dir
from pilotdata.descriptions import PilotComputeDescription, affinity_labels
from pilotdata.errors import (
    DescriptionError,
    IllegalTransitionError,
    LaunchError,
    NotFoundError,
    PilotDataError,
    StateError,
    UnknownSchemeError,
)
from pilotdata.launchers import JobState, JobStatus, Launcher, LaunchSpec, launcher_class, launcher_for
from pilotdata.records import DESCRIPTION
from pilotdata.redaction import redact_url
from pilotdata.services.compute_unit import ComputeUnit
from pilotdata.services.handle import EntityHandle
from pilotdata.services.policy import FailurePolicy
from pilotdata.services.submission import UnitDescription, submit_units
from pilotdata.services.waiting import wait_for_states, wait_until
from pilotdata.session import Session, resolve
from pilotdata.states import Kind, PilotState, is_final
from pilotdata.stores.base import public_options

log = logging.getLogger(__name__)

_LOCAL_SCHEMES = ("fork", "subprocess", "slurm", "pbs", "torque", "pbspro", "sge", "lsf")
"""Schemes whose agent starts from this host's file system (this interpreter, an absolute working directory)."""

DEFAULT_WALLTIME = 60.0
"""Minutes a pilot runs when its description gives no walltime (``PDATA_DEFAULT_WALLTIME`` or the service's
``default_walltime`` change it; ``0`` / ``none`` there means unlimited, with a warning)."""


def walltime_from_environment() -> float | None:
    """``PDATA_DEFAULT_WALLTIME`` (minutes; ``0``, ``none``, ``unlimited``: no limit), else :data:`DEFAULT_WALLTIME`."""
    raw = os.environ.get("PDATA_DEFAULT_WALLTIME", "").strip().lower()
    if not raw:
        return DEFAULT_WALLTIME
    if raw in ("0", "none", "unlimited", "infinite"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise DescriptionError(
            f"PDATA_DEFAULT_WALLTIME: {raw!r} is not minutes (or 0 / none for unlimited)", field="walltime"
        ) from None
    return value if value > 0 else None


def agent_walltime(walltime: float) -> float:
    """The agent's own walltime (minutes) inside a job of ``walltime`` minutes: shorter by a margin, so it
    hands its work back before the batch system (or the launcher's wrapper) kills it.

    The margin is 5 % of the walltime, at least 1 and at most 10 minutes, but never more than a quarter
    of it (a 2-minute pilot stops after 1.5 minutes).
    """
    margin = min(max(0.05 * walltime, 1.0), 10.0, walltime / 4)
    return walltime - margin
_JOB_TO_PILOT = {
    JobState.DONE: PilotState.DONE,
    JobState.FAILED: PilotState.FAILED,
    JobState.CANCELED: PilotState.CANCELED,
}


_BIGJOB_SCHEMES = {
    **{scheme: "BigJob's cloud VM pilots: pilot-data does not start VMs; start the VM yourself and use "
               "'ssh://user@host' as service_url" for scheme in ("ec2+ssh", "euca+ssh", "nova+ssh", "gce+ssh")},
    "condor": "BigJob's Condor glide-ins: pilot-data has no Condor launcher",
    "condorg": "BigJob's Condor-G glide-ins: pilot-data has no Condor launcher",
    "gram": "Globus GRAM: pilot-data has no GRAM launcher; use ssh:// or the batch system's scheme",
    "xt5torque": "BigJob's Cray XT5 Torque adaptor: pilot-data has no Torque launcher",
}
"""Why a scheme BigJob's examples use has no launcher here (added to the unknown-scheme error)."""


class _PilotEnded(Exception):
    """Internal: the pilot of a :meth:`PilotCompute.wait` ended."""


def check_scheme(service_url: Any) -> None:
    """:class:`UnknownSchemeError` when no launcher handles the scheme of ``service_url``.

    Runs before a description is validated, so a BigJob cloud pilot hears that there is no launcher
    for ``ec2+ssh`` rather than that ``vm_id`` is not a key. Says why for BigJob's schemes.
    """
    if not isinstance(service_url, str) or "://" not in service_url:
        return  # the description check names the problem
    scheme = service_url.split("://", 1)[0].strip().lower()
    try:
        launcher_class(scheme)
    except UnknownSchemeError as exc:
        why = _BIGJOB_SCHEMES.get(scheme)
        if why is None:
            raise
        raise UnknownSchemeError(f"{exc} ({why})") from None


class PilotCompute(EntityHandle):
    """A handle on one pilot (BigJob's ``PilotCompute``); cheap to create, reconnects by id."""

    kind = Kind.PILOT

    def __init__(self, pilot_url: str, *, session: Session | None = None,
                 service: PilotComputeService | None = None) -> None:
        super().__init__(pilot_url, session=session)
        self._service = service
        self._submitted: list[str] = []
        """CUs submitted through this handle (they count for :meth:`wait` even if moved elsewhere)."""

    def get_details(self) -> dict[str, Any]:
        """State, description, slots (and the CPUs they are bound to, if they are), labels, cached
        DataUnits, launcher job and timestamps."""
        rec = self._record()
        return {
            "id": rec.id,
            "state": rec.state,
            "description": rec.data.get("description"),
            "labels": rec.data.get("labels", {}),
            "slots": rec.data.get("slots"),
            "cpu_binding": rec.data.get("cpu_binding"),
            "cached_dus": rec.data.get("cached_dus", []),
            "launcher": rec.data.get("launcher"),
            "host": rec.data.get("host"),
            "reason": rec.detail.get("reason"),
            "times": rec.times,
            "claimed": self._session.coord.claimed(self.id),
            "queued": len(self._session.coord.queued(self.id)),
        }

    def wait(self, timeout: float | None = None, state: str | None = None) -> str:
        """Block until every ComputeUnit of this pilot is final, or the pilot itself ended (BigJob's
        ``pilot.wait()``); return the pilot's state.

        The CUs are the ones in this pilot's queue or claimed by it when the call starts, and the ones
        submitted through this handle (wherever they went). With ``state`` (e.g. ``State.Running``) it waits for
        the pilot to reach that state (or a final one) instead. Raises
        :class:`~pilotdata.errors.TimeoutExpired` after ``timeout`` seconds.
        """
        svc = self._service or fallback_service(self._session)
        coord = self._session.coord
        if state is not None:

            def refresh() -> None:
                svc.refresh()

            rec = wait_for_states(coord, Kind.PILOT, [self.id], {str(state)}, timeout=timeout, tick=refresh)
            return rec[0].state

        def tick() -> None:
            svc.refresh()
            if is_final(self.get_state()):
                raise _PilotEnded

        ids = list(dict.fromkeys([*self._submitted, *coord.claimed(self.id), *coord.queued(self.id)]))
        try:
            wait_until(coord, Kind.CU, ids, timeout=timeout, tick=tick)
        except _PilotEnded:
            pass
        return self.get_state()

    def list_compute_units(self) -> list[ComputeUnit]:
        """The ComputeUnits bound to this pilot, ended ones included (and those submitted through this handle).

        Reads every CU record of the namespace (there is no index by pilot): meant for scripts, not loops.
        """
        coord = self._session.coord
        ids: list[str] = []
        all_ids = coord.list_ids(Kind.CU)
        for start in range(0, len(all_ids), 1000):
            chunk = all_ids[start:start + 1000]
            ids.extend(r.id for r in coord.get_many(Kind.CU, chunk) if r is not None and r.pilot == self.id)
        return [ComputeUnit(i, session=self._session) for i in dict.fromkeys([*ids, *self._submitted])]

    def get_free_nodes(self) -> int:
        """Slots not taken by the CUs this pilot has claimed (BigJob's name: it counted cores)."""
        coord = self._session.coord
        rec = self._record()
        busy = 0
        for cu in coord.get_many(Kind.CU, coord.claimed(self.id)):
            if cu is not None and not is_final(cu.state):
                busy += int((cu.data.get(DESCRIPTION) or {}).get("number_of_processes") or 1)
        return max(0, int(rec.data.get("slots") or 0) - busy)

    def cancel(self) -> None:
        """Stop the pilot: Canceled, agent killed through its launcher, claimed work requeued."""
        service = self._service or fallback_service(self._session)
        service.cancel_pilot(self.id)

    def submit_compute_unit(self, compute_unit_description: UnitDescription) -> ComputeUnit:
        """Run a ComputeUnit on this pilot (bound here, no placement). Returns its ComputeUnit.

        A dict that does not set ``shell`` runs through ``/bin/sh`` as BigJob ran it. Raises
        :class:`~pilotdata.errors.StateError` if the pilot has ended (nothing is recorded).
        """
        state = self.get_state()
        if is_final(state):
            raise StateError(f"pilot {self.id} is {state}: it takes no more work")
        cu = submit_units(self._session, [compute_unit_description], pilot=self.id, bigjob_shell=True)[0]
        self._submitted.append(cu.id)
        return cu


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
        default_walltime: float | str | None = "environment",
    ) -> None:
        self._session = resolve(session, coordination_url, namespace)
        if default_walltime == "environment":
            self.default_walltime = walltime_from_environment()
        elif default_walltime is None or (isinstance(default_walltime, (int, float))
                                          and not isinstance(default_walltime, bool) and default_walltime >= 0):
            self.default_walltime = float(default_walltime) if default_walltime else None
        else:
            raise DescriptionError(f"default_walltime: expected minutes >= 0 or None, got {default_walltime!r}",
                                   field="default_walltime", value=default_walltime)
        """Minutes given to pilots whose description has no walltime (None: unlimited)."""
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

    @property
    def url(self) -> str:
        """BigJob's ``pcs.url``: the same as :meth:`get_url`."""
        return self.id

    # ------------------------------------------------------------------ creation
    def create_pilot(
        self, pilot_compute_description: Mapping[str, Any] | PilotComputeDescription, **options: Any
    ) -> PilotCompute:
        """Record a pilot, submit its agent through the launcher for its ``service_url``; return it.

        Bad descriptions raise :class:`~pilotdata.errors.DescriptionError` and record nothing. A launch
        failure marks the pilot Failed with the reason and raises :class:`LaunchError`.
        """
        if isinstance(pilot_compute_description, Mapping):
            check_scheme(pilot_compute_description.get("service_url"))
        desc = PilotComputeDescription.coerce(pilot_compute_description)
        if desc.walltime is None and self.default_walltime is not None:
            desc = dataclasses.replace(desc, walltime=self.default_walltime)
        elif desc.walltime is None:
            log.warning("pilot on %s has no walltime: it runs until canceled (a batch system may kill it without "
                        "the hand-back)", desc.service_url)
        opts = {**self._launcher_options, **options}
        launcher = self._launcher(desc.service_url, opts)  # unknown scheme / bad options: nothing recorded
        coord = self._session.coord
        pilot_id = f"pilot-{uuid.uuid4().hex[:12]}"
        scheme = desc.service_url.split("://", 1)[0].lower()
        local = scheme in _LOCAL_SCHEMES
        workdir = desc.working_directory or (
            str(data_dir() / "pilots" / pilot_id) if local else f".pilot-data/pilots/{pilot_id}"
        )
        # Launchers start the agent in the working directory (a relative one is relative to the remote
        # home or the submit directory), so the agent is told "." unless the path is absolute: the
        # relative path again would put the sandboxes under <workdir>/<workdir>.
        agent_workdir = workdir if workdir.startswith(("/", "~")) else "."
        python = str(opts.get("python") or (sys.executable if local else "python3"))
        argv = [python, "-m", "agent", "--pilot", pilot_id, "--slots", str(desc.number_of_processes),
                "--workdir", agent_workdir, *self.policy.agent_arguments()]
        if desc.walltime is not None:  # the agent stops first and hands back before the job is killed
            argv += ["--walltime", f"{agent_walltime(float(desc.walltime)):g}"]
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
        is requeued); a pilot whose heartbeat expired is requeued and marked Failed; CUs recorded by a
        client whose binder lease lapsed are adopted onto the shared queue. Expired heartbeats and
        leases are acted on only once this client has been connected for a whole TTL (after an outage,
        live pilots need a round to renew). Safe to call from many processes at once: requeues and
        adoptions are atomic and transitions are checked.
        """
        coord = self._session.coord
        changed: dict[str, str] = {}
        records = [r for r in coord.get_many(Kind.PILOT, coord.list_ids(Kind.PILOT))
                   if r is not None and not is_final(r.state)]
        # one status call per launcher (service URL + options): one squeue / qstat / bjobs per round
        groups: dict[tuple[str, str], tuple[Launcher | None, dict[str, str]]] = {}
        for rec in records:
            info = rec.data.get("launcher") or {}
            if not (info.get("job_id") and info.get("service_url")):
                continue
            options = self._options_for(rec.id, info)
            key = (info["service_url"], repr(sorted((k, repr(v)) for k, v in options.items())))
            if key not in groups:
                try:
                    groups[key] = (self._launcher(info["service_url"], options), {})
                except PilotDataError as exc:
                    log.warning("cannot query pilot %s: %s", rec.id, exc)
                    groups[key] = (None, {})
            groups[key][1][str(info["job_id"])] = rec.id
        for (service_url, _), (launcher, jobs) in groups.items():
            if launcher is None:
                continue
            try:
                statuses = launcher.status(list(jobs))
            except PilotDataError as exc:
                log.warning("cannot query the pilots on %s (%s): %s", redact_url(service_url),
                            ", ".join(sorted(jobs.values())), exc)
                continue
            for job_id, pilot_id in jobs.items():
                status = statuses.get(job_id)
                if status is not None and status.is_final:
                    changed[pilot_id] = self._job_ended(pilot_id, status)
        pilots = {r.id: r for r in coord.get_many(Kind.PILOT, coord.list_ids(Kind.PILOT)) if r is not None}
        finished = [p for p, r in pilots.items() if is_final(r.state)]
        for pilot_id, length in coord.queue_lengths(finished).items():
            if length:  # bound to a pilot that ended before taking it: back to the shared queue
                coord.requeue_lost(pilot_id, self.policy.lost_task_max_reassign, force=True)
        connected = coord.connected_for()
        for pilot_id in coord.expired_pilots():
            ttl = float((pilots[pilot_id].data if pilot_id in pilots else {}).get("heartbeat_ttl")
                        or self.policy.heartbeat_ttl)
            if connected < ttl:  # we were cut off ourselves: give the pilot a TTL to renew first
                continue
            result = coord.requeue_lost(pilot_id, self.policy.lost_task_max_reassign)
            if result.requeued or result.failed or result.dropped or pilot_id not in changed:
                self._fail(pilot_id, "heartbeat expired: pilot lost")
                changed[pilot_id] = PilotState.FAILED.value
        if connected >= self.policy.heartbeat_ttl:
            adopted = coord.adopt_unbound()
            if adopted:
                log.warning("adopted %d CU(s) recorded by a client that stopped binding them (lease lapsed)",
                            len(adopted))
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
        if not is_final(rec.state):
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
            if not is_final(pilot.get_state()):
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
