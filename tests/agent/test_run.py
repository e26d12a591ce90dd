"""CU behaviour on a real agent process (``python -m agent``), on SQLite and on Redis.

The tests of this module share one 4-slot agent per backend (see ``shared_agent``); each submits its
own CUs (unique ids) and waits, bounded, for their final states.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from pilotdata.states import Kind
from tests.agent.conftest import SharedAgent
from tests.agent.harness import cu_events, process_alive, sh, submit, wait_final, wait_state
from tests.servers import require_binary, wait_until


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_arguments_expand_variables_from_the_cu_environment(shared_agent: SharedAgent) -> None:
    coord, cu = shared_agent.coord, _id("echo")
    submit(
        coord,
        cu,
        {
            "executable": "/bin/echo",
            "arguments": ["$GREETING", "${NAME}!", "home=$HOME", r"\$GREETING", "[$UNDEFINED_VAR_X]"],
            "environment": ["GREETING=hello", "NAME=world"],
            "output": "out/echo.txt",
        },
    )
    assert wait_final(coord, cu, agent=shared_agent.agent) == "Done"
    record = coord.get(Kind.CU, cu)
    assert record.data["exit_code"] == 0
    assert record.pilot == shared_agent.pilot
    sandbox = Path(record.data["sandbox"])
    assert sandbox == shared_agent.workdir.resolve() / cu
    text = (sandbox / "out" / "echo.txt").read_text()
    assert text == f"hello world! home={os.environ['HOME']} $GREETING []\n"
    assert (sandbox / "stderr").read_text() == ""
    moves = [(e.from_state, e.to_state) for e in cu_events(coord, cu)]
    # no input or output DataUnits: the staging states are skipped (two round trips less per CU)
    assert moves[-2:] == [("Pending", "Running"), ("Running", "Done")]
    assert all(e.pilot == shared_agent.pilot for e in cu_events(coord, cu)[-2:])
    assert cu not in coord.claimed(shared_agent.pilot)


def test_exit_255_is_failed_with_the_exit_code(shared_agent: SharedAgent) -> None:
    coord, cu = shared_agent.coord, _id("exit")
    submit(coord, cu, sh("echo boom >&2; exit 255"))
    assert wait_final(coord, cu, agent=shared_agent.agent) == "Failed"
    record = coord.get(Kind.CU, cu)
    assert record.data["exit_code"] == 255
    assert record.data["reason"] == "exit code 255"
    assert record.detail["exit_code"] == 255
    last = cu_events(coord, cu)[-1]
    assert (last.from_state, last.to_state) == ("Running", "Failed")
    assert last.detail == {"exit_code": 255, "reason": "exit code 255"}
    assert (Path(record.data["sandbox"]) / "stderr").read_text() == "boom\n"
    assert cu not in coord.claimed(shared_agent.pilot)


def test_missing_executable_fails_with_its_name(shared_agent: SharedAgent) -> None:
    coord, cu = shared_agent.coord, _id("missing")
    submit(coord, cu, {"executable": "no-such-program-4711", "arguments": ["x"]})
    assert wait_final(coord, cu, agent=shared_agent.agent) == "Failed"
    record = coord.get(Kind.CU, cu)
    assert record.data["reason"] == "executable not found: no-such-program-4711"
    assert "exit_code" not in record.data
    assert cu_events(coord, cu)[-1].detail["reason"] == "executable not found: no-such-program-4711"


def test_bad_working_directory_fails_with_the_path(shared_agent: SharedAgent, tmp_path: Path) -> None:
    coord, cu = shared_agent.coord, _id("badwd")
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("x")
    submit(coord, cu, {"executable": "/bin/true", "working_directory": str(not_a_dir)})
    assert wait_final(coord, cu, agent=shared_agent.agent) == "Failed"
    reason = coord.get(Kind.CU, cu).data["reason"]
    assert reason == f"working_directory {str(not_a_dir)!r} is not a directory"


def test_working_directory_is_created_and_used(shared_agent: SharedAgent, tmp_path: Path) -> None:
    coord, cu = shared_agent.coord, _id("wd")
    wd = tmp_path / "new" / "dir"
    submit(coord, cu, {"executable": "/bin/pwd", "working_directory": str(wd)})
    assert wait_final(coord, cu, agent=shared_agent.agent) == "Done"
    assert (wd / "stdout").read_text().strip() == str(wd)


def test_timeout_kills_the_process_group_and_fails(shared_agent: SharedAgent, tmp_path: Path) -> None:
    coord, cu = shared_agent.coord, _id("timeout")
    script = "sleep 60 & echo \\$! > child.pid; wait"
    submit(coord, cu, sh(script, timeout=0.5, working_directory=str(tmp_path)))
    assert wait_final(coord, cu, timeout=15, agent=shared_agent.agent) == "Failed"
    record = coord.get(Kind.CU, cu)
    assert record.data["reason"] == "timeout"
    assert cu_events(coord, cu)[-1].detail["reason"] == "timeout"
    child = int((tmp_path / "child.pid").read_text())
    wait_until(lambda: not process_alive(child), 10, "the CU's background child to be killed")


def test_cancel_kills_the_process_group(shared_agent: SharedAgent, tmp_path: Path) -> None:
    coord, cu = shared_agent.coord, _id("cancel")
    script = "sleep 60 & echo \\$! > child.pid; echo \\$\\$ > sh.pid; wait"
    submit(coord, cu, sh(script, working_directory=str(tmp_path)))
    wait_state(coord, cu, "Running")
    wait_until(lambda: (tmp_path / "child.pid").exists() and (tmp_path / "sh.pid").exists(), 10, "pid files")
    pids = [int((tmp_path / name).read_text()) for name in ("child.pid", "sh.pid")]
    assert all(process_alive(p) for p in pids)
    coord.transition(Kind.CU, cu, "Canceled", detail={"reason": "user"})
    wait_until(lambda: not any(process_alive(p) for p in pids), 10, "the canceled CU's processes to die")
    wait_until(lambda: cu not in coord.claimed(shared_agent.pilot), 10, "the canceled CU to be released")
    assert coord.get(Kind.CU, cu).state == "Canceled"
    assert cu_events(coord, cu)[-1].to_state == "Canceled"  # the agent wrote nothing after the cancel


def test_cu_larger_than_the_pilot_fails(shared_agent: SharedAgent) -> None:
    coord, cu = shared_agent.coord, _id("huge")
    submit(coord, cu, {"executable": "/bin/true", "number_of_processes": 99})
    assert wait_final(coord, cu, agent=shared_agent.agent) == "Failed"
    reason = coord.get(Kind.CU, cu).data["reason"]
    assert reason == f"needs 99 slots (number_of_processes) but pilot {shared_agent.pilot} has 4"


def test_cu_wider_than_the_free_slots_waits_for_them(shared_agent: SharedAgent, tmp_path: Path) -> None:
    coord = shared_agent.coord
    small, wide = _id("small"), _id("wide")
    gate = tmp_path / "gate"
    submit(coord, small, sh(f"while [ ! -e {gate} ]; do sleep 0.05; done"))
    wait_state(coord, small, "Running")
    submit(coord, wide, {"executable": "/bin/true", "number_of_processes": 4})
    wait_until(lambda: wide in coord.claimed(shared_agent.pilot), 10, "the wide CU to be claimed (held)")
    assert coord.get(Kind.CU, wide).state == "Pending"  # held: 1 of 4 slots is busy
    gate.write_text("go")
    assert wait_final(coord, small, agent=shared_agent.agent) == "Done"
    assert wait_final(coord, wide, agent=shared_agent.agent) == "Done"
    small_rec, wide_rec = coord.get(Kind.CU, small), coord.get(Kind.CU, wide)
    assert wide_rec.times["Running"] >= small_rec.times["Done"]


def test_failed_run_is_retried_up_to_max_retries(shared_agent: SharedAgent, tmp_path: Path) -> None:
    coord = shared_agent.coord
    flaky, hopeless = _id("flaky"), _id("hopeless")
    script = "test -e marker || { touch marker; exit 7; }"
    submit(coord, flaky, sh(script, max_retries=2, working_directory=str(tmp_path)))
    submit(coord, hopeless, sh("exit 3", max_retries=1))
    assert wait_final(coord, flaky, agent=shared_agent.agent) == "Done"
    assert wait_final(coord, hopeless, agent=shared_agent.agent) == "Failed"
    rec = coord.get(Kind.CU, flaky)
    assert rec.attempt == 1
    assert rec.data["exit_code"] == 0 and "reason" not in rec.data
    retry = [e for e in cu_events(coord, flaky) if e.to_state == "Pending" and e.from_state == "Running"]
    assert len(retry) == 1 and retry[0].detail["exit_code"] == 7
    rec = coord.get(Kind.CU, hopeless)
    assert rec.attempt == 1
    assert rec.data["exit_code"] == 3
    assert [e.to_state for e in cu_events(coord, hopeless)].count("Running") == 2


def test_pilot_record_describes_the_agent(shared_agent: SharedAgent) -> None:
    record = shared_agent.coord.get(Kind.PILOT, shared_agent.pilot)
    assert record.state == "Running"
    assert record.data["slots"] == 4
    assert record.data["workdir"] == str(shared_agent.workdir.resolve())
    assert record.data["cached_dus"] == []
    assert isinstance(record.data["pid"], int) and record.data["pid"] == shared_agent.agent.process.pid
    assert record.data["host"]
    assert shared_agent.coord.is_alive(shared_agent.pilot)


def test_cu_environment_hides_the_coordination_url(shared_agent: SharedAgent) -> None:
    coord, cu = shared_agent.coord, _id("env")
    submit(coord, cu, {"executable": "/usr/bin/env", "environment": {"MY_VAR": "mine"}})
    assert wait_final(coord, cu, agent=shared_agent.agent) == "Done"
    env = dict(
        line.split("=", 1)
        for line in (Path(coord.get(Kind.CU, cu).data["sandbox"]) / "stdout").read_text().splitlines()
        if "=" in line
    )
    assert "PDATA_URL" not in env
    assert env["MY_VAR"] == "mine"
    assert env["PDATA_CU_ID"] == cu
    assert env["PDATA_PILOT_ID"] == shared_agent.pilot


@pytest.fixture(scope="module")
def mpi_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny C MPI program that prints its rank and the communicator size, built with mpicc."""
    mpicc = require_binary("mpicc", "libopenmpi-dev")
    require_binary("mpirun", "openmpi-bin")
    directory = tmp_path_factory.mktemp("mpi")
    source = directory / "ranks.c"
    source.write_text(
        "#include <mpi.h>\n#include <stdio.h>\n"
        "int main(int argc, char **argv) { int rank, size; MPI_Init(&argc, &argv);\n"
        "  MPI_Comm_rank(MPI_COMM_WORLD, &rank); MPI_Comm_size(MPI_COMM_WORLD, &size);\n"
        '  printf("rank %d of %d\\n", rank, size); MPI_Finalize(); return 0; }\n'
    )
    subprocess.run([mpicc, "-o", str(directory / "ranks"), str(source)], check=True, timeout=120)
    return directory / "ranks"


def test_mpi_cu_runs_n_ranks(shared_agent: SharedAgent, mpi_program: Path) -> None:
    coord, cu = shared_agent.coord, _id("mpi")
    submit(coord, cu, {"executable": str(mpi_program), "number_of_processes": 2, "spmd_variation": "mpi"})
    assert wait_final(coord, cu, timeout=60, agent=shared_agent.agent) == "Done"
    out = (Path(coord.get(Kind.CU, cu).data["sandbox"]) / "stdout").read_text().splitlines()
    assert sorted(out) == ["rank 0 of 2", "rank 1 of 2"]
    running = next(e for e in cu_events(coord, cu) if e.to_state == "Running")
    assert running.detail["slots"] == 2
    assert running.detail["launcher"] == "mpirun"  # not inside a SLURM allocation


def test_mpi_launcher_passes_the_cu_environment_to_ranks(shared_agent: SharedAgent) -> None:
    coord, cu = shared_agent.coord, _id("mpienv")
    python = shutil.which("python3") or "python3"
    script = (
        "import os; e = os.environ; rank = e['OMPI_COMM_WORLD_RANK']\n"
        "open(f'rank{rank}.txt', 'w').write(e['OMPI_COMM_WORLD_SIZE'] + ' ' + e['COLOR'])"
    )
    submit(
        coord,
        cu,
        {
            "executable": python,
            "arguments": ["-c", script],
            "environment": {"COLOR": "blue"},
            "number_of_processes": 3,
            "spmd_variation": "mpi",
        },
    )
    assert wait_final(coord, cu, timeout=60, agent=shared_agent.agent) == "Done"
    sandbox = Path(coord.get(Kind.CU, cu).data["sandbox"])
    assert [(sandbox / f"rank{r}.txt").read_text() for r in range(3)] == ["3 blue"] * 3
