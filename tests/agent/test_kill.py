"""THE KILL TEST: two agents share 200 short CUs; one is killed with SIGKILL mid-run.

The survivor detects the expired heartbeat (lost task max reassign), requeues the dead pilot's
claimed work and runs it. Every CU must end Done exactly once: one ``-> Done`` event per CU, and the
sandbox of the pilot that recorded the Done holds exactly one output line. The dead agent's CU
processes must not outlive it (the orphan reaper kills them).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

from pilotdata.states import Kind
from tests.agent.conftest import Backend
from tests.agent.harness import AgentProcess, all_events, sh, submit_many, wait_registered
from tests.servers import wait_until

N_CUS = 200


def _processes_of(pilot: str) -> list[int]:
    """Live processes whose environment says they are CUs of ``pilot``."""
    marker = f"PDATA_PILOT_ID={pilot}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ.split(b"\0") and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def test_kill_9_of_an_agent_loses_no_cu_and_completes_none_twice(backend: Backend, tmp_path: Path) -> None:
    coord = backend.coord
    rng = random.Random(4711)
    descriptions = {
        f"cu{i:03d}": sh(f"sleep 0.0{rng.randint(0, 5)}; echo $PDATA_CU_ID >> out.txt") for i in range(N_CUS)
    }
    for pilot in ("victim", "survivor"):
        coord.create(Kind.PILOT, pilot, {})
        coord.transition(Kind.PILOT, pilot, "Pending")
    common = ("--slots", "4", "--heartbeat-ttl", "2", "--max-reassign", "3", "--kill-grace", "1")
    victim = AgentProcess(backend.url, backend.namespace, "victim", tmp_path / "victim", *common)
    survivor = AgentProcess(backend.url, backend.namespace, "survivor", tmp_path / "survivor", *common)
    try:
        # both agents up before any work: the run lasts about a second, so an agent that started late
        # would find most CUs done by the other (see also tests/agent/test_sharing.py)
        wait_registered(coord, ("victim", "survivor"))
        submit_many(coord, descriptions)

        def victim_busy() -> bool:
            done = sum(1 for r in coord.get_many(Kind.CU, list(descriptions)) if r and r.state == "Done")
            running = [
                r for r in coord.get_many(Kind.CU, coord.claimed("victim")) if r and r.state == "Running"
            ]
            return done >= 40 and len(running) >= 2

        wait_until(victim_busy, 60, "the victim to run CUs after 40 are done")
        victim.kill9()
        lost = coord.claimed("victim")
        assert lost, "the victim held no work when it was killed"
        # its CU processes die with it (the reaper), long before anyone requeues them
        wait_until(lambda: not _processes_of("victim"), 10, "the victim's CU processes to be killed")

        def all_final() -> bool:
            records = coord.get_many(Kind.CU, list(descriptions))
            return all(r is not None and r.state in ("Done", "Failed", "Canceled") for r in records)

        wait_until(all_final, 120, "every CU to end")
        assert survivor.process.poll() is None, survivor.log
    finally:
        victim.stop()
        survivor.terminate(30)
        survivor.stop()

    records = coord.get_many(Kind.CU, list(descriptions))
    assert Counter(r.state for r in records if r) == {"Done": N_CUS}
    events = all_events(coord)
    done_events = [e for e in events if e.entity == "cu" and e.to_state == "Done"]
    per_cu = Counter(e.id for e in done_events)
    assert set(per_cu) == set(descriptions) and set(per_cu.values()) == {1}
    for event in done_events:
        out = tmp_path / event.pilot / event.id / "out.txt" if event.pilot else None
        assert out is not None and out.read_text() == f"{event.id}\n", event
    by_pilot = Counter(e.pilot for e in done_events)
    assert by_pilot["victim"] >= 1 and by_pilot["survivor"] >= 1
    # the lost work was taken back by the survivor and finished there
    lost_done = {e.id: e.pilot for e in done_events if e.id in lost}
    assert set(lost_done.values()) == {"survivor"}
    started_lost = [r for r in coord.get_many(Kind.CU, lost) if r and r.attempt >= 1]
    assert started_lost, "no started CU of the victim was requeued with attempt+1"
    victim_events = [e for e in events if e.entity == "pilot" and e.id == "victim"]
    assert victim_events[-1].to_state == "Failed"
    assert victim_events[-1].detail["reason"] == "heartbeat expired"
    assert victim_events[-1].detail["detected_by"] == "survivor"
    assert coord.get(Kind.PILOT, "survivor").state == "Done"
    assert coord.claimed("victim") == [] and coord.claimed("survivor") == []
    assert os.path.exists(survivor.log_path)
