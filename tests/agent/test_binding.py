"""CPU binding of the agent node's CUs (:mod:`agent.binding`): the rule, the slot accounting, the masks
the processes really get, and what a real agent does with each ``cpu_binding``."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agent.binding import Bound, CoreBinding, _ranges, allowed_cpus
from pilotdata.coordination import Coordination
from pilotdata.descriptions import PilotComputeDescription
from pilotdata.errors import DescriptionError
from pilotdata.states import Kind
from tests.agent.conftest import Backend
from tests.agent.harness import AgentProcess, sh, submit, wait_final
from tests.servers import wait_until

CPUS = allowed_cpus()


def _in_thread(fn: Any) -> Any:
    """Run ``fn`` on a new thread (affinity is per thread) and return its result."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(30)
    assert out, "the thread did not finish"
    return out[0]


def _mask_of(text: str) -> set[int]:
    """CPUs of a ``Cpus_allowed_list`` value such as ``0-2,5``."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


# ------------------------------------------------------------------------------------------- the rule
@pytest.mark.parametrize(
    ("mode", "slots", "cpus", "active"),
    [
        ("auto", 2, (0, 1), True),  # the pilot owns every CPU it may use
        ("auto", 4, (0, 1), True),  # more slots than CPUs: still every CPU
        ("auto", 1, (0, 1), False),  # a share of a larger host: the kernel places the CUs
        ("auto", 2, (4, 5, 6, 7), False),
        ("cores", 1, (0, 1, 2, 3), True),
        ("none", 8, (0, 1), False),
    ],
)
def test_auto_binds_only_a_pilot_that_covers_its_cpus(mode: str, slots: int, cpus: tuple[int, ...],
                                                      active: bool) -> None:
    binding = CoreBinding(slots, mode, cpus)
    assert binding.active is active
    assert (binding.take(1) is not None) is active
    assert ("not bound" not in binding.describe()) is active


def test_an_unknown_mode_or_no_slot_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu_binding must be one of auto, cores, none, got 'all'"):
        CoreBinding(2, "all", (0, 1))
    with pytest.raises(ValueError, match="at least one slot"):
        CoreBinding(0, "cores", (0, 1))


def test_slots_map_to_cpus_round_robin_and_come_back_lowest_first() -> None:
    binding = CoreBinding(4, "auto", (2, 5))
    a, b, c = binding.take(1), binding.take(1), binding.take(2)
    assert a == Bound((0,), frozenset({2}))
    assert b == Bound((1,), frozenset({5}))
    assert c == Bound((2, 3), frozenset({2, 5}))
    assert binding.take(1) is None  # every slot is held (the agent's core accounting never asks this)
    binding.release(b)
    binding.release(a)
    assert binding.take(1) == Bound((0,), frozenset({2}))
    assert binding.take(1) == Bound((1,), frozenset({5}))
    binding.release(None)  # an unbound CU gives nothing back


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs")
def test_a_thread_gets_its_last_slots_back_when_they_are_free() -> None:
    """Two slot threads whose CUs end in either order keep their CPUs (no move, no second mask change)."""
    binding = CoreBinding(2, "cores", CPUS[:2])
    with ThreadPoolExecutor(1) as a, ThreadPoolExecutor(1) as b:

        def cycle(pool: ThreadPoolExecutor) -> Bound:
            def step() -> Bound:
                bound = binding.take(1)
                assert bound is not None
                binding.bind(bound)  # and stays bound after its process ends, as a slot thread does
                return bound
            return pool.submit(step).result(30)

        first_a, first_b = cycle(a), cycle(b)
        assert (first_a.slots, first_b.slots) == ((0,), (1,))
        binding.release(first_a)
        binding.release(first_b)  # both free now: b's lowest free slot would be a's
        again_b, again_a = cycle(b), cycle(a)
        assert (again_a, again_b) == (first_a, first_b)


def test_concurrent_takes_never_share_a_slot() -> None:
    binding = CoreBinding(64, "cores", tuple(range(64)))
    got: list[Bound] = []
    lock = threading.Lock()

    def take_many() -> None:
        for _ in range(16):
            bound = binding.take(1)
            assert bound is not None
            with lock:
                got.append(bound)

    threads = [threading.Thread(target=take_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(s for b in got for s in b.slots) == list(range(64))


def test_ranges_are_printed_as_the_kernel_prints_them() -> None:
    assert _ranges([0, 1, 2, 3, 8]) == "0-3,8"
    assert _ranges([5]) == "5"
    assert _ranges([1, 3, 4]) == "1,3-4"


# ----------------------------------------------------------------------------- the masks themselves
def test_bind_confines_the_calling_thread_and_the_process_it_starts_until_unbind() -> None:
    binding = CoreBinding(len(CPUS), "cores", CPUS)
    bound = binding.take(1)
    assert bound is not None

    def start() -> tuple[set[int], set[int], set[int], set[int]]:
        binding.bind(bound)
        mine = os.sched_getaffinity(0)
        child = subprocess.run(["grep", "Cpus_allowed_list", "/proc/self/status"], capture_output=True,
                               text=True, check=True).stdout.split(":")[1]
        binding.unbind()  # the CU's process has ended: staging and its threads get every CPU
        helper = _in_thread(lambda: os.sched_getaffinity(0))  # a thread started now inherits that
        return mine, _mask_of(child), os.sched_getaffinity(0), helper

    mine, child, after, helper = _in_thread(start)
    assert mine == child == set(bound.cpus) == {CPUS[0]}
    assert after == helper == set(CPUS)
    assert os.sched_getaffinity(0) == set(CPUS)  # other threads were never touched


def test_a_thread_started_by_a_bound_thread_is_reset_at_its_first_unbind() -> None:
    """A pool thread started by a bound slot thread inherits its mask, unknown to the binding: its first
    unbind (before staging, or a CU that is not bound) must still give it every CPU."""
    binding = CoreBinding(len(CPUS), "cores", CPUS)

    def parent() -> tuple[set[int], set[int]]:
        binding.bind(binding.take(1))

        def child() -> tuple[set[int], set[int]]:
            inherited = os.sched_getaffinity(0)
            binding.unbind()
            return inherited, os.sched_getaffinity(0)

        masks: tuple[set[int], set[int]] = _in_thread(child)
        return masks

    inherited, after = _in_thread(parent)
    assert inherited == {CPUS[0]}
    assert after == set(CPUS)


def test_an_unbound_cu_changes_nothing() -> None:
    binding = CoreBinding(1, "auto", (0, 1))  # not active: take gives None

    def run() -> set[int]:
        binding.bind(binding.take(1))
        binding.unbind()
        return os.sched_getaffinity(0)

    assert _in_thread(run) == set(CPUS)


def test_a_refused_mask_is_logged_once_and_leaves_the_thread_unbound(caplog: pytest.LogCaptureFixture) -> None:
    binding = CoreBinding(2, "cores", CPUS)
    gone = Bound((0,), frozenset({max(CPUS) + 4096}))  # a CPU the job does not have (any more)

    def twice() -> set[int]:
        binding.bind(gone)
        during = os.sched_getaffinity(0)
        binding.unbind()
        binding.bind(gone)
        binding.unbind()
        return during

    with caplog.at_level(logging.WARNING, logger="agent.binding"):
        assert _in_thread(twice) == set(CPUS)
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert str(max(CPUS) + 4096) in refusals[0].getMessage()


# ----------------------------------------------------------------------------------- the description
def test_the_pilot_description_checks_cpu_binding() -> None:
    desc = PilotComputeDescription.from_dict({"service_url": "fork://localhost", "cpu_binding": "Cores"})
    assert desc.cpu_binding == "cores"
    assert PilotComputeDescription.from_dict({"service_url": "fork://localhost"}).cpu_binding is None  # auto
    with pytest.raises(DescriptionError, match="cpu_binding"):
        PilotComputeDescription.from_dict({"service_url": "fork://localhost", "cpu_binding": "all"})


# ------------------------------------------------------------------------------------ a real agent
MASK_SCRIPT = (
    'grep Cpus_allowed_list /proc/self/status | cut -f2 > "$MASKS/$PDATA_CU_ID"; '
    # hold the slot until every CU of the run has written its mask (bounded: 20 s)
    'n=0; while [ "$(ls "$MASKS" | wc -l)" -lt "$WANT" ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done'
)


def _agent(backend: Backend, tmp_path: Path, description: dict[str, Any], slots: int,
           *, prefix: list[str] | None = None) -> tuple[AgentProcess, str, Path]:
    coord = backend.coord
    pilot = "pilot-" + uuid.uuid4().hex[:8]
    coord.create(Kind.PILOT, pilot, {"slots": slots, "description": description})
    coord.transition(Kind.PILOT, pilot, "Pending")
    workdir = tmp_path / "work"
    agent = AgentProcess(backend.url, backend.namespace, pilot, workdir, "--heartbeat-ttl", "3",
                         env={"PDATA_HOME": str(tmp_path / "home")}, prefix=prefix or ())
    wait_until(lambda: coord.get(Kind.PILOT, pilot).state == "Running", 20, f"agent {pilot} to register")
    return agent, pilot, workdir


def _run_masks(coord: Coordination, agent: AgentProcess, workdir: Path,
               processes: list[int]) -> dict[str, set[int]]:
    """Run one CU per entry (its number_of_processes) at once; their masks, by CU id."""
    ids = [f"mask-{i}-{uuid.uuid4().hex[:6]}" for i in range(len(processes))]
    where = workdir.parent / f"masks-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    env = {"WANT": str(len(ids)), "MASKS": str(where)}
    for cu, n in zip(ids, processes, strict=True):
        submit(coord, cu, sh(MASK_SCRIPT, number_of_processes=n, environment=env))
    for cu in ids:
        assert wait_final(coord, cu, agent=agent, timeout=60) == "Done", agent.log
    masks = {p.name: _mask_of(p.read_text()) for p in where.iterdir()}
    assert sorted(masks) == sorted(ids)  # each CU ran, once
    return masks


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs")
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_agent_that_owns_its_cpus_runs_each_cu_on_its_own(backend: Backend, tmp_path: Path) -> None:
    agent, pilot, workdir = _agent(backend, tmp_path, {"service_url": "fork://localhost"}, len(CPUS))
    try:
        masks = _run_masks(backend.coord, agent, workdir, [1] * len(CPUS))
        assert sorted(min(m) for m in masks.values()) == list(CPUS)  # one CPU each, every CPU once
        assert all(len(m) == 1 for m in masks.values())
        assert backend.coord.get(Kind.PILOT, pilot).data["cpu_binding"] == list(CPUS)
        assert f"CUs bound to CPUs (cpu_binding auto): {len(CPUS)} slots" in agent.log
        # a CU of two processes next to one of one: two CPUs and the third slot's one, never shared
        if len(CPUS) >= 3:
            masks = _run_masks(backend.coord, agent, workdir, [2, 1])
            two, one = sorted(masks.values(), key=len, reverse=True)
            assert len(two) == 2 and len(one) == 1 and not two & one
        else:
            masks = _run_masks(backend.coord, agent, workdir, [2])
            assert list(masks.values()) == [set(CPUS)]
        assert agent.terminate(30) == 0, agent.log
    finally:
        agent.stop()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_cpu_binding_none_leaves_every_cu_every_cpu(backend: Backend, tmp_path: Path) -> None:
    desc = {"service_url": "fork://localhost", "cpu_binding": "none"}
    agent, pilot, workdir = _agent(backend, tmp_path, desc, 2)
    try:
        masks = _run_masks(backend.coord, agent, workdir, [1, 1])
        assert list(masks.values()) == [set(CPUS), set(CPUS)]
        assert backend.coord.get(Kind.PILOT, pilot).data.get("cpu_binding") is None
        assert "CUs not bound to CPUs (cpu_binding none)" in agent.log
        assert agent.terminate(30) == 0, agent.log
    finally:
        agent.stop()


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs")
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_agent_confined_to_one_cpu_binds_within_it(backend: Backend, tmp_path: Path) -> None:
    """As in a batch job whose cpuset is one core: the agent's mask, not the machine's, is what it owns."""
    last = CPUS[-1]
    agent, pilot, workdir = _agent(backend, tmp_path, {"service_url": "fork://localhost"}, 2,
                                   prefix=["taskset", "-c", str(last)])
    try:
        masks = _run_masks(backend.coord, agent, workdir, [1, 1])
        assert list(masks.values()) == [{last}, {last}]
        assert backend.coord.get(Kind.PILOT, pilot).data["cpu_binding"] == [last]
        assert agent.terminate(30) == 0, agent.log
    finally:
        agent.stop()


def test_a_shared_host_is_not_bound(backend: Backend, tmp_path: Path) -> None:
    """One slot on a machine of two or more CPUs (auto): the CU may run on any of them."""
    if len(CPUS) < 2:
        pytest.skip("needs two CPUs")
    agent, pilot, workdir = _agent(backend, tmp_path, {"service_url": "fork://localhost"}, 1)
    try:
        masks = _run_masks(backend.coord, agent, workdir, [1])
        assert list(masks.values()) == [set(CPUS)]
        assert "the pilot does not own them all" in agent.log
        assert agent.terminate(30) == 0, agent.log
    finally:
        agent.stop()


def test_an_agent_refuses_a_pilot_record_with_an_unknown_binding(backend: Backend, tmp_path: Path) -> None:
    """A record written without the description's check (another client, an old script) fails the pilot
    before its agent starts anything, with the field and the value in its log."""
    coord = backend.coord
    pilot = "pilot-" + uuid.uuid4().hex[:8]
    coord.create(Kind.PILOT, pilot, {"slots": 2, "description": {"cpu_binding": "sockets"}})
    coord.transition(Kind.PILOT, pilot, "Pending")
    submit(coord, "untouched", {"executable": "/bin/true"})
    agent = AgentProcess(backend.url, backend.namespace, pilot, tmp_path / "work")
    try:
        assert agent.wait(30) == 3
    finally:
        agent.stop()
    assert f"pilot {pilot!r}: cpu_binding must be one of auto, cores, none, got 'sockets'" in agent.log
    assert coord.get(Kind.PILOT, pilot).state == "Failed"  # it cannot run as described
    assert coord.queued() == ["untouched"]  # and it took nothing
