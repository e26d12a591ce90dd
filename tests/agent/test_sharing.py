"""Two pilots drain one shared queue of short CUs: each runs a fair part, every CU exactly once.

The prefetch (CUs an agent holds beyond its free slots) grows for CUs that take milliseconds. Sized from
the first CU's run time alone, an agent whose first CU was quick took nearly the whole queue and the
other pilot starved (CI once saw one of two 4-slot agents run 8 of 200 CUs).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from pilotdata.states import Kind
from tests.agent.conftest import Backend
from tests.agent.harness import AgentProcess, all_events, sh, submit_many, wait_registered
from tests.servers import wait_until

N_CUS = 200
PILOTS = ("left", "right")


def test_two_pilots_share_a_queue_of_short_cus_fairly(backend: Backend, tmp_path: Path) -> None:
    coord = backend.coord
    rng = random.Random(4711)
    descriptions = {
        f"cu{i:03d}": sh(f"sleep 0.0{rng.randint(0, 5)}; echo $PDATA_CU_ID >> out.txt") for i in range(N_CUS)
    }
    for pilot in PILOTS:
        coord.create(Kind.PILOT, pilot, {})
        coord.transition(Kind.PILOT, pilot, "Pending")
    common = ("--slots", "4", "--heartbeat-ttl", "5", "--kill-grace", "1")
    agents = [AgentProcess(backend.url, backend.namespace, p, tmp_path / p, *common) for p in PILOTS]
    try:
        wait_registered(coord, PILOTS)
        submit_many(coord, descriptions)

        def all_done() -> bool:
            return all(state == "Done" for state in coord.states(Kind.CU, list(descriptions)))

        wait_until(all_done, 120, "every CU to be Done")
        for agent in agents:
            assert agent.terminate(30) == 0, agent.log
    finally:
        for agent in agents:
            agent.stop()

    done_events = [e for e in all_events(coord) if e.entity == "cu" and e.to_state == "Done"]
    per_cu = Counter(e.id for e in done_events)
    assert set(per_cu) == set(descriptions) and set(per_cu.values()) == {1}
    by_pilot = Counter(e.pilot for e in done_events)
    # equal agents on one machine: about half each; a starved pilot ran a single claim's worth (8)
    assert min(by_pilot[p] for p in PILOTS) >= N_CUS // 4, by_pilot
    ran = {p: len(list((tmp_path / p).glob("cu*"))) for p in PILOTS}
    assert ran == dict(by_pilot), ran  # a sandbox per CU run, no CU started twice
