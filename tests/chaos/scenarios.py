"""Fault-injection scenarios against real components, shared by ``tests/chaos`` and ``benchmarks/chaos.py``.

Each scenario runs a workload on real agents (``python -m agent`` processes, or pilots started through
the real fork and SLURM launchers) over a real coordination backend (a redis-server of the run with
``--appendonly yes --appendfsync always``, or an embedded SQLite file), injects one fault (kill -9,
SIGTERM to the agent and its CUs, a walltime, Redis shut down or killed and restarted from its AOF,
Redis away past the heartbeat TTL, a client killed mid-submit, concurrent clients, an agent killed
mid-fetch over SFTP), waits for the work to end and returns an :class:`Outcome`.

Executions are counted by the CUs themselves: every run of a CU appends a line to
``markers/<cu>.start`` when it begins and ``markers/<cu>.end`` (naming its pilot) when it completes,
so a CU that was completed twice, re-executed, or recorded Done without running shows up whatever the
states say. The outcome also reads the coordination event stream and the SQL history drained from it
(one Done event per CU), every queue, in-progress list and unbound set (nothing stranded), and
``/proc`` (no agent, reaper or CU process of the run left).

Tests call the scenarios with small sizes and short TTLs and assert :meth:`Outcome.problems` is
empty; the benchmark runs them larger and prints the figures.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pilotdata.coordination import Event, connect
from pilotdata.coordination.reconnect import Reconnecting
from pilotdata.history import History, HistoryWriter
from pilotdata.states import Kind, is_final
from tests import servers
from tests.agent.harness import REPO, AgentProcess, all_events, submit_many

RUN_VAR = "CHAOS_RUN"
"""Every agent of a run carries ``CHAOS_RUN=<tag>`` in its environment (its CUs carry their pilot id)."""


# ----------------------------------------------------------------------------------------- the lab
@dataclass
class Lab:
    """One scenario's coordination backend, directory, run tag and agents."""

    backend: str
    url: str
    namespace: str
    root: Path
    redis: servers.RedisServer | None = None
    ttl: float = 2.0
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    _coord: Reconnecting | None = None

    @classmethod
    def make(cls, backend: str, root: Path, redis: servers.RedisServer | None = None, ttl: float = 2.0) -> Lab:
        """A lab on ``backend`` (``redis`` needs ``redis``) in a fresh namespace under ``root``."""
        root.mkdir(parents=True, exist_ok=True)
        (root / "markers").mkdir(exist_ok=True)
        if backend == "redis":
            assert redis is not None, "a redis lab needs a redis-server"
            url = redis.url
        else:
            url = f"sqlite:///{root / 'coordination.sqlite'}"
        return cls(backend, url, "chaos" + uuid.uuid4().hex[:10], root, redis, ttl)

    @property
    def coord(self) -> Reconnecting:
        """The lab's own view of coordination (rides out the outages the scenario injects)."""
        if self._coord is None:
            self._coord = Reconnecting(connect(self.url, self.namespace), patience=120)
        return self._coord

    @property
    def markers(self) -> Path:
        return self.root / "markers"

    def env(self) -> dict[str, str]:
        """Environment for the run's agents and client processes."""
        return {RUN_VAR: self.tag, "PDATA_HOME": str(self.root / "home"),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    def agent(self, name: str, *extra: str, slots: int = 2) -> AgentProcess:
        """Start ``python -m agent`` for a new pilot ``name`` (heartbeat TTL of the lab)."""
        self.coord.create(Kind.PILOT, name, {})
        self.coord.transition(Kind.PILOT, name, "Pending")
        agent = AgentProcess(self.url, self.namespace, name, self.root / name, "--slots", str(slots),
                             "--heartbeat-ttl", str(self.ttl), "--kill-grace", "1", *extra, env=self.env())
        self.agents[name] = agent
        return agent

    def wait_running(self, *pilots: str, timeout: float = 30.0) -> None:
        """Wait until the pilots registered."""
        servers.wait_until(lambda: all(self.coord.get(Kind.PILOT, p).state == "Running" for p in pilots),
                           timeout, f"pilots {pilots} to run")

    def script(self, seconds: float, again: float | None = None) -> str:
        """A CU body that leaves start/end markers; a rerun sleeps ``again`` seconds instead.

        (``\\$S`` reaches the CU's shell as ``$S``: the agent expands ``$NAME`` in arguments itself.)
        """
        m = self.markers
        pick = f"S={seconds}"
        if again is not None:
            pick = f"if [ -s {m}/$PDATA_CU_ID.start ]; then S={again}; else S={seconds}; fi"
        return (f"{pick}; echo start >> {m}/$PDATA_CU_ID.start; sleep \\$S; "
                f"echo $PDATA_PILOT_ID >> {m}/$PDATA_CU_ID.end")

    def workload(self, n: int, seconds: float, *, again: float | None = None, prefix: str = "cu",
                 **extra: Any) -> dict[str, dict[str, Any]]:
        """``n`` CU descriptions running :meth:`script`."""
        return {f"{prefix}{i:05d}": {"executable": "/bin/sh", "arguments": ["-c", self.script(seconds, again)],
                                     "shell": False, **extra} for i in range(n)}

    def enqueue(self, descriptions: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Record, move to Pending and put on the shared queue (what a binder does) in few round trips."""
        ids = list(descriptions)
        for start in range(0, len(ids), 500):
            submit_many(self.coord, {i: descriptions[i] for i in ids[start:start + 500]})
        return ids

    def done_count(self, ids: Sequence[str]) -> int:
        return sum(1 for s in self.coord.states(Kind.CU, list(ids)) if s == "Done")

    def wait_final(self, ids: Sequence[str], timeout: float) -> bool:
        """Wait until every CU is final; False on timeout (the outcome then counts the rest lost)."""
        try:
            servers.wait_until(lambda: all(is_final(s) for s in self.coord.states(Kind.CU, list(ids))),
                               timeout, "every CU to end", interval=0.1)
            return True
        except AssertionError:
            return False

    def stop_agents(self, timeout: float = 60.0) -> dict[str, int]:
        """SIGTERM every agent still running and wait; their exit statuses."""
        codes: dict[str, int] = {}
        for name, agent in self.agents.items():
            if agent.process.poll() is None:
                codes[name] = agent.terminate(timeout)
        return codes

    def close(self) -> None:
        """Make sure nothing of the run is left (teardown)."""
        for agent in self.agents.values():
            agent.stop()
        if self._coord is not None:
            self._coord.close()


def signal_cus(pilot: str, sig: int) -> int:
    """Send ``sig`` to every live CU process of ``pilot`` (what a batch system's kill does); how many."""
    count = 0
    for pid in processes_with(f"PDATA_PILOT_ID={pilot}"):
        try:
            os.kill(pid, sig)
            count += 1
        except ProcessLookupError:
            pass
    return count


def processes_with(*markers: str) -> list[int]:
    """Live (not zombie) processes whose environment holds one of ``markers`` (``NAME=value``)."""
    wanted = [m.encode() for m in markers]
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes().split(b"\0")
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X") and any(m in environ for m in wanted):
            found.append(int(entry.name))
    return found


def describe(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return f"{pid}: {command}"
    except OSError:
        return f"{pid}: (gone)"


# ----------------------------------------------------------------------------------------- outcome
@dataclass
class Outcome:
    """What a scenario did to its work (see the module docstring)."""

    scenario: str
    backend: str
    cus: int
    done: int = 0
    """CUs Done with exactly one Done event, whose recording pilot's run left its end marker."""
    lost: int = 0
    """CUs not Done when the scenario ended (still non-final, Failed or Canceled)."""
    duplicated: int = 0
    """CUs with more than one Done event (completed twice): must be 0."""
    reexecuted: int = 0
    """CUs whose program started more than once (allowed: execution is at least once)."""
    detection_s: float | None = None
    """Fault to the first sign that it was handled (pilot marked lost, work handed back or adopted)."""
    recovery_s: float | None = None
    """Fault to the last CU final."""
    notes: list[str] = field(default_factory=list)
    """Every broken promise found (empty when the scenario held)."""

    def problems(self) -> list[str]:
        """Broken promises: lost or duplicated work, stranded ids, extra Done events, leftover processes."""
        found = list(self.notes)
        if self.lost:
            found.append(f"{self.lost} CU(s) lost")
        if self.duplicated:
            found.append(f"{self.duplicated} CU(s) completed twice")
        if self.done != self.cus:
            found.append(f"{self.done} of {self.cus} CUs Done exactly once")
        return found

    def row(self) -> str:
        def sec(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        return (f"{self.scenario:34s} {self.backend:6s} {self.cus:6d} {self.done:6d} {self.lost:5d} "
                f"{self.duplicated:5d} {self.reexecuted:6d} {sec(self.detection_s):>8s} {sec(self.recovery_s):>8s}"
                + ("  " + "; ".join(self.problems()) if self.problems() else ""))


HEADER = (f"{'scenario':34s} {'store':6s} {'CUs':>6s} {'done':>6s} {'lost':>5s} {'dup':>5s} {'re-ex':>6s} "
          f"{'detect s':>8s} {'recover s':>8s}")


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def measure(lab: Lab, scenario: str, ids: Sequence[str], fault_at: float | None,
            detected: Callable[[Event], bool] | None = None, pilots: Iterable[str] = (),
            detect_from: float | None = None) -> Outcome:
    """Read states, events, markers, history, queues and /proc into an :class:`Outcome` (agents stopped).

    Detection looks for the first matching event from ``detect_from`` (default: the fault) on; a
    foreseen fault (a walltime) may be handled before it, which gives a negative detection time.
    """
    coord = lab.coord
    out = Outcome(scenario, lab.backend, len(ids))
    records = {r.id: r for r in coord.get_many(Kind.CU, list(ids)) if r is not None}
    events = all_events(coord.inner)
    cu_events = [e for e in events if e.entity == "cu" and e.id in records]
    done_events: dict[str, list[Event]] = {}
    for e in cu_events:
        if e.to_state == "Done":
            done_events.setdefault(e.id, []).append(e)
    for cu in ids:
        rec = records.get(cu)
        starts, ends = _lines(lab.markers / f"{cu}.start"), _lines(lab.markers / f"{cu}.end")
        if len(starts) > 1:
            out.reexecuted += 1
        dones = done_events.get(cu, [])
        if len(dones) > 1:
            out.duplicated += 1
        if rec is None or rec.state != "Done":
            out.lost += 1
            continue
        if len(dones) == 1 and dones[0].pilot in ends:
            out.done += 1
        elif len(dones) == 1:
            out.notes.append(f"{cu} recorded Done by {dones[0].pilot} without a completed run there ({ends})")
    if fault_at is not None:
        finals = [e.time for e in cu_events if is_final(e.to_state)]
        out.recovery_s = max(finals) - fault_at if finals and out.lost == 0 else None
        if detected is not None:
            start = fault_at if detect_from is None else detect_from
            hits = [e.time for e in events if e.time >= start and detected(e)]
            out.detection_s = min(hits) - fault_at if hits else None
    # nothing stranded: every queue, in-progress list and unbound set is empty
    names = set(pilots) | set(lab.agents)
    for p in sorted(names):
        if coord.claimed(p):
            out.notes.append(f"pilot {p} still claims {coord.claimed(p)}")
        if coord.queued(p):
            out.notes.append(f"pilot {p}'s queue still holds {coord.queued(p)}")
    if coord.queued(None):
        out.notes.append(f"shared queue still holds {len(coord.queued(None))} id(s)")
    if coord.unbound():
        out.notes.append(f"{len(coord.unbound())} CU(s) still unbound")
    # the SQL history, drained from the stream, has one Done per CU too
    with History(f"sqlite:///{lab.root / 'history.sqlite'}") as history:
        HistoryWriter(coord.inner, history).drain()
    with sqlite3.connect(lab.root / "history.sqlite") as db:
        rows = db.execute("SELECT entity_id, count(*) FROM history_events WHERE entity = 'cu' AND to_state = 'Done'"
                          " GROUP BY entity_id HAVING count(*) > 1").fetchall()
    db.close()
    if rows:
        out.notes.append(f"history holds more than one Done for {len(rows)} CU(s)")
    markers = (f"{RUN_VAR}={lab.tag}", *(f"PDATA_PILOT_ID={p}" for p in names))
    try:  # a process SIGKILLed a moment ago may still be on its way out
        servers.wait_until(lambda: not processes_with(*markers), 5, "the run's processes to be gone")
    except AssertionError:
        pass
    left = processes_with(*markers)
    if left:
        out.notes.append("processes left: " + "; ".join(describe(p) for p in left))
    return out


def _settle(lab: Lab) -> None:
    """Stop the agents cleanly and let their process groups go."""
    codes = lab.stop_agents()
    bad = {n: c for n, c in codes.items() if c != 0}
    if bad:
        raise AssertionError(f"agents ended with {bad}")
    servers.wait_until(lambda: not processes_with(f"{RUN_VAR}={lab.tag}"), 15, "the run's processes to end")


def _lost_pilot(name: str) -> Callable[[Event], bool]:
    return lambda e: (e.entity == "pilot" and e.id == name and e.to_state == "Failed") or (
        e.entity == "cu" and e.detail.get("lost_pilot") == name)


def _handed_back(name: str) -> Callable[[Event], bool]:
    return lambda e: e.entity == "cu" and e.to_state == "Pending" and e.attempt > 0 and e.pilot == name


# ------------------------------------------------------------------------------------ the scenarios
def kill9_agent(lab: Lab, n: int = 40, seconds: float = 0.3, timeout: float = 120) -> Outcome:
    """Two agents share the work; one is killed with SIGKILL while it runs CUs."""
    ids = lab.enqueue(lab.workload(n, seconds))
    victim, survivor = lab.agent("victim"), lab.agent("survivor")
    servers.wait_until(lambda: lab.done_count(ids) >= n // 4 and any(
        s == "Running" for s in lab.coord.states(Kind.CU, lab.coord.claimed("victim"))), 60,
        "the victim to be running CUs")
    fault = time.time()
    victim.kill9()
    lab.wait_final(ids, timeout)
    assert survivor.process.poll() is None, survivor.log
    _settle(lab)
    return measure(lab, "kill -9 of an agent", ids, fault, _lost_pilot("victim"))


def sigterm_agent(lab: Lab, n: int = 40, seconds: float = 0.5, timeout: float = 120) -> Outcome:
    """SIGTERM to an agent *and* its CU processes (a batch system ending the job); the other finishes."""
    ids = lab.enqueue(lab.workload(n, seconds))
    victim = lab.agent("victim")
    lab.agent("survivor")
    servers.wait_until(lambda: lab.done_count(ids) >= n // 4 and any(
        s == "Running" for s in lab.coord.states(Kind.CU, lab.coord.claimed("victim"))), 60,
        "the victim to be running CUs")
    fault = time.time()
    victim.process.send_signal(signal.SIGTERM)
    signal_cus("victim", signal.SIGTERM)
    code = victim.wait(60)
    if code != 0:
        raise AssertionError(f"the SIGTERMed agent exited {code}: {victim.log[-3000:]}")
    lab.wait_final(ids, timeout)
    _settle(lab)
    out = measure(lab, "SIGTERM to an agent and its CUs", ids, fault, _handed_back("victim"))
    if lab.coord.get(Kind.PILOT, "victim").state != "Done":
        out.notes.append(f"the stopped pilot is {lab.coord.get(Kind.PILOT, 'victim').state}, not Done")
    return out


def redis_outage(lab: Lab, *, down: float = 3.0, kill: bool = False, n: int = 60, seconds: float = 0.3,
                 timeout: float = 180) -> Outcome:
    """Redis shut down (or killed with SIGKILL) and restarted from its AOF after ``down`` s, while a
    client waits in ``ComputeDataService.wait()`` and two agents run the work."""
    from pilotdata import ComputeDataService
    from pilotdata.session import Session

    assert lab.redis is not None
    lab.agent("a1")
    lab.agent("a2")
    lab.wait_running("a1", "a2")
    session = Session(lab.url, namespace=lab.namespace, reconnect_for=down + 60)
    cds = ComputeDataService(session=session)
    cus = cds.submit_compute_units(list(lab.workload(n, seconds).values()))
    ids = [cu.id for cu in cus]
    failure: list[BaseException] = []

    def wait() -> None:
        try:
            cds.wait(timeout=timeout)
        except BaseException as exc:
            failure.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    servers.wait_until(lambda: lab.done_count(ids) >= n // 4, 60, "a quarter of the CUs to be done")
    fault = time.time()
    lab.redis.kill9() if kill else lab.redis.shutdown()
    threading.Event().wait(down)  # the outage itself
    lab.redis.start_again()
    back = time.time()
    waiter.join(timeout + down)
    session.close()
    lab.wait_final(ids, 30)
    _settle(lab)
    name = f"Redis {'kill -9' if kill else 'shutdown'} + restart ({down:g} s)"
    out = measure(lab, name, ids, fault, lambda e: e.time >= back and e.entity == "cu", pilots=["a1", "a2"])
    if failure:
        out.notes.append(f"ComputeDataService.wait() raised {type(failure[0]).__name__}: {failure[0]}")
    if waiter.is_alive():
        out.notes.append("ComputeDataService.wait() did not return")
    states = {p: lab.coord.get(Kind.PILOT, p).state for p in ("a1", "a2")}
    if states != {"a1": "Done", "a2": "Done"}:  # stopped by _settle: Done, unless the outage had them declared lost
        out.notes.append(f"the outage ended live pilots: {states}")
    return out


def client_killed_mid_submit(lab: Lab, n: int = 1000, lease: float = 2.0, timeout: float = 180) -> Outcome:
    """A client recording ``n`` CUs (held for late binding: they want a site no pilot has yet) is killed
    with SIGKILL part-way; its lease lapses and agents adopt what it recorded."""
    script = textwrap.dedent(f"""
        import signal, sys
        from pilotdata import ComputeDataService
        from pilotdata.session import Session
        session = Session({lab.url!r}, namespace={lab.namespace!r}, bind_lease={lease!r})
        cds = ComputeDataService(session=session)
        body = {lab.script(0.05)!r}
        cds.submit_compute_units([{{"executable": "/bin/sh", "arguments": ["-c", body], "shell": False,
                                    "affinity_datacenter_label": "site-nobody-has"}}] * {n})
        print("all recorded", flush=True)
        signal.pause()
    """)
    client = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, **lab.env()}, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        servers.wait_until(lambda: len(lab.coord.list_ids(Kind.CU)) >= min(n, 250) or client.poll() is not None,
                           60, "the client to record its first chunk")
        fault = time.time()
        client.kill()
        client.wait(10)
    finally:
        if client.poll() is None:
            client.kill()
    ids = lab.coord.list_ids(Kind.CU)
    unbound_then = len(lab.coord.unbound())
    lab.agent("a1", slots=2)
    lab.agent("a2", slots=2)
    lab.wait_final(ids, timeout)
    _settle(lab)
    out = measure(lab, "client kill -9 mid bulk submit", ids, fault,
                  lambda e: e.entity == "cu" and "adopted_from" in e.detail)
    if not unbound_then:
        out.notes.append("the killed client left nothing unbound: the scenario did not test adoption")
    out.notes.extend(f"client: {line}" for line in (client.stderr.read() if client.stderr else "").splitlines()
                     if "Traceback" in line)
    return out


def many_sqlite_clients(lab: Lab, clients: int = 4, n_each: int = 50, timeout: float = 180) -> Outcome:
    """Several client processes submit and wait at once on the embedded SQLite file; two agents run it."""
    lab.agent("a1")
    lab.agent("a2")
    script = textwrap.dedent(f"""
        import sys
        from pilotdata import ComputeDataService
        from pilotdata.session import Session
        session = Session({lab.url!r}, namespace={lab.namespace!r})
        cds = ComputeDataService(session=session)
        body = {lab.script(0.05)!r}
        cus = cds.submit_compute_units([{{"executable": "/bin/sh", "arguments": ["-c", body], "shell": False}}]
                                       * {n_each})
        cds.wait(timeout={timeout})
        states = [cu.get_state() for cu in cus]
        print(" ".join(cu.id for cu in cus), flush=True)
        sys.exit(0 if set(states) == {{"Done"}} else 1)
    """)
    began = time.time()
    procs = [subprocess.Popen([sys.executable, "-c", script], env={**os.environ, **lab.env()}, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(clients)]
    outputs = [p.communicate(timeout=timeout + 60) for p in procs]
    ids = [i for out, _ in outputs for i in out.split()]
    _settle(lab)
    out = measure(lab, f"{clients} clients at once", ids, began)
    for p, (_, err) in zip(procs, outputs, strict=True):
        if p.returncode != 0:
            out.notes.append(f"a client exited {p.returncode}: {err[-1500:]}")
    return out


def agent_killed_mid_staging(lab: Lab, sshd: servers.SshServer, size: int = 64 * 2**20,
                             timeout: float = 180) -> Outcome:
    """An agent fetching a CU's input DataUnit over SFTP is killed with SIGKILL mid-transfer; another
    agent runs the CU; the dead agent's cache keeps no part file."""
    from pilotdata.data import ReplicaManager
    from pilotdata.descriptions import DataUnitDescription
    from pilotdata.services.pilot_data import PilotDataService
    from pilotdata.session import Session

    source = lab.root / "source" / "data.bin"
    source.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "wb") as fh:
        block = os.urandom(2**20)
        for _ in range(size // 2**20):
            fh.write(block)
    session = Session(lab.url, namespace=lab.namespace)
    try:
        pd = PilotDataService(session=session).create_pilot({
            "service_url": f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{lab.root / 'sftp-pd'}",
            "storage_options": {"key_filename": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)},
        }).get_url()
        units = ReplicaManager(session.coord)
        du = units.register(DataUnitDescription.from_dict({"file_urls": [str(source)]}), du_id="du-staged")
        units.upload(du, pd)
    finally:
        session.close()
    body = f"echo start >> {lab.markers}/$PDATA_CU_ID.start; test $(wc -c < data.bin) -eq {size} && " \
           f"echo $PDATA_PILOT_ID >> {lab.markers}/$PDATA_CU_ID.end"
    ids = lab.enqueue({"staged": {"executable": "/bin/sh", "arguments": ["-c", body], "input_data": [du],
                                  "shell": False}})
    victim = lab.agent("victim")
    cache_tmp = lab.root / "victim" / ".cache" / "tmp"
    deadline = time.monotonic() + 60
    while not any(cache_tmp.glob("*/data")):  # a fetch in progress: tmp/<key>.<token>/data until its rename
        if time.monotonic() > deadline:
            raise AssertionError(f"the victim never started fetching: {victim.log[-2000:]}")
        time.sleep(0.001)  # a fixed, tight poll: the fetch itself takes a fraction of a second here
    fault = time.time()
    victim.kill9()
    if not any(cache_tmp.glob("*")):
        raise AssertionError("the fetch ended before the kill: make the DataUnit larger")
    lab.agent("survivor")
    lab.wait_final(ids, timeout)
    _settle(lab)
    out = measure(lab, "agent kill -9 mid SFTP staging", ids, fault, _lost_pilot("victim"))
    try:
        servers.wait_until(lambda: not list(cache_tmp.glob("*")), 10, "the reaper to clean the cache")
    except AssertionError:
        out.notes.append(f"unfinished fetch left in the dead agent's cache: {list(cache_tmp.glob('**/*'))}")
    return out


def slurm_walltime(labs: Sequence[Lab], cluster: Any, timeout: float = 240) -> list[Outcome]:
    """A real SLURM pilot per lab (1 core, 1-minute walltime) runs one quick CU and one that would outlast
    the walltime; the agent hands the long one back before the limit, a fork pilot then finishes it."""
    from pilotdata import PilotCompute, PilotComputeService
    from pilotdata.session import Session

    def pilot_ended(pilot: PilotCompute) -> bool:
        return is_final(pilot.get_state())

    def job_ended(pcs: PilotComputeService, pilot: PilotCompute) -> bool:
        launcher = pcs._launcher("slurm://localhost", {"slurm_conf": str(cluster.conf)})
        return all(s.is_final for s in launcher.status([pilot.get_details()["launcher"]["job_id"]]).values())

    sessions, pcss, pilots, ids = [], [], [], []
    for lab in labs:
        session = Session(lab.url, namespace=lab.namespace)
        pcs = PilotComputeService(session=session, launcher_options={"slurm_conf": str(cluster.conf)})
        mine = lab.enqueue({**lab.workload(1, 2, prefix="quick"), **lab.workload(1, 600, again=1, prefix="long")})
        pilot = pcs.create_pilot({"service_url": "slurm://localhost", "number_of_processes": 1, "walltime": 1,
                                  "working_directory": str(lab.root / "slurm")})
        sessions.append(session)
        pcss.append(pcs)
        pilots.append(pilot)
        ids.append(mine)
    for pilot in pilots:
        servers.wait_until(partial(pilot_ended, pilot), 150, f"SLURM pilot {pilot.id} to end")
    outcomes: list[Outcome] = []
    for lab, pilot, pcs, mine in zip(labs, pilots, pcss, ids, strict=True):
        running_at = lab.coord.get(Kind.PILOT, pilot.id).times["Running"]
        walltime_at = running_at + 60.0
        long_cu = lab.coord.get(Kind.CU, mine[1])
        handed_back = (long_cu.state, long_cu.attempt) == ("Pending", 1)
        lab.agent("finisher")
        lab.wait_final(mine, timeout)
        servers.wait_until(partial(job_ended, pcs, pilot), 120, "the SLURM job to end")
        _settle(lab)
        out = measure(lab, "SLURM pilot at its 1-minute walltime", mine, walltime_at,
                      _handed_back(pilot.id), pilots=[pilot.id], detect_from=running_at)
        record = lab.coord.get(Kind.PILOT, pilot.id)
        if (record.state, record.detail.get("reason")) != ("Done", "walltime reached"):
            out.notes.append(f"SLURM pilot ended {record.state} ({record.detail.get('reason')})")
        if not handed_back:
            out.notes.append(f"the long CU was {long_cu.state} attempt {long_cu.attempt} after the pilot ended")
        outcomes.append(out)
    for session in sessions:
        session.close()
    return outcomes
