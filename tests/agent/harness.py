"""Helpers for the agent tests: run ``python -m agent`` as a real subprocess, submit CUs, read events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pilotdata.coordination import Coordination, Event
from pilotdata.states import Kind, is_final
from tests.servers import process_alive as process_alive  # the agent tests import it from here
from tests.servers import wait_until

REPO = Path(__file__).resolve().parents[2]


class AgentProcess:
    """One ``python -m agent`` subprocess; its stderr (the log) goes to ``<workdir>.log``."""

    def __init__(
        self,
        url: str,
        namespace: str,
        pilot: str,
        workdir: Path,
        *extra: str,
        env: Mapping[str, str] | None = None,
        url_in_env: bool = True,
        prefix: Sequence[str] = (),
    ) -> None:
        self.pilot = pilot
        self.workdir = workdir
        self.log_path = workdir.with_name(workdir.name + ".log")
        full_env = dict(os.environ)
        full_env.pop("PDATA_URL", None)
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
        full_env.update(env or {})
        argv = [*prefix, sys.executable, "-m", "agent", "--pilot", pilot, "--namespace", namespace]
        argv += ["--workdir", str(workdir)]
        if url_in_env:
            full_env["PDATA_URL"] = url
        else:
            argv += ["--url", url]
        argv += list(extra)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()/wait()
        self.process = subprocess.Popen(
            argv, env=full_env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def log(self) -> str:
        """What the agent logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """Wait for the agent to exit (bounded); return its exit status."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            message = f"agent {self.pilot} still running after {timeout}s; log:\n{self.log}"
            raise AssertionError(message) from None
        self._log.close()
        return code

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (the clean stop) and wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill9(self) -> None:
        """SIGKILL the agent process only (not its CUs: their fate is the agent's business)."""
        self.process.kill()
        self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


def submit(
    coord: Coordination, cu_id: str, description: Mapping[str, Any], *, pilot: str | None = None
) -> None:
    """Create a CU, move it to Pending and enqueue it (on ``pilot``'s queue, or the shared one)."""
    coord.create(Kind.CU, cu_id, {"description": dict(description)})
    coord.transition(Kind.CU, cu_id, "Pending")
    coord.enqueue([cu_id], pilot)


def submit_many(coord: Coordination, descriptions: Mapping[str, Mapping[str, Any]]) -> None:
    """Create, move to Pending and enqueue (shared queue) many CUs in few round trips."""
    from pilotdata.coordination import TransitionRequest

    ids = list(descriptions)
    coord.create_many(Kind.CU, [(i, {"description": dict(d)}) for i, d in descriptions.items()])
    results = coord.transition_many(Kind.CU, [TransitionRequest(i, "Pending") for i in ids])
    assert all(r.ok for r in results)
    coord.enqueue(ids)


def wait_final(
    coord: Coordination, cu_id: str, timeout: float = 20.0, agent: AgentProcess | None = None
) -> str:
    """Wait for a CU to reach a final state; return it."""

    def final() -> str | None:
        state = coord.get(Kind.CU, cu_id).state
        return state if is_final(state) else None

    try:
        return str(wait_until(final, timeout, f"CU {cu_id} to end"))
    except AssertionError as exc:
        log = f"\nagent log:\n{agent.log}" if agent else ""
        raise AssertionError(f"{exc}; CU is {coord.get(Kind.CU, cu_id)}{log}") from None


def wait_state(coord: Coordination, cu_id: str, state: str, timeout: float = 20.0) -> None:
    """Wait until a CU is in ``state``."""
    wait_until(lambda: coord.get(Kind.CU, cu_id).state == state, timeout, f"CU {cu_id} to be {state}")


def wait_registered(coord: Coordination, pilots: Sequence[str], timeout: float = 30.0) -> None:
    """Wait (bounded) until every pilot's agent has registered (the pilot is Running)."""
    wait_until(lambda: all(coord.get(Kind.PILOT, p).state == "Running" for p in pilots), timeout,
               f"the agents of {', '.join(pilots)} to register")


def all_events(coord: Coordination) -> list[Event]:
    """Every event in the stream, oldest first."""
    events: list[Event] = []
    cursor: str | None = None
    while True:
        batch = coord.events_after(cursor, limit=1000)
        if not batch:
            return events
        events.extend(batch)
        cursor = batch[-1].cursor


def cu_events(coord: Coordination, cu_id: str) -> list[Event]:
    """The events of one CU."""
    return [e for e in all_events(coord) if e.entity == "cu" and e.id == cu_id]


def sh(script: str, **extra: Any) -> dict[str, Any]:
    """A CU description running ``/bin/sh -c script`` (the CU's own shell, not the agent's)."""
    return {"executable": "/bin/sh", "arguments": ["-c", script], "shell": False, **extra}


def lines(path: Path) -> Sequence[str]:
    """The lines of a text file."""
    return path.read_text().splitlines()
