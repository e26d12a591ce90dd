"""benchmarks/throughput.py at a small size, with the slot-cycle timing of ``--phases``.

Runs the real script (a redis-server it starts, the embedded SQLite, fork pilots, ``xargs``) and checks
what it prints: the host line (processor, Python's speed), every runner's row with its ratio and target,
every CU event in the history, the CPU profile, and an agent slot cycle whose spans add up to the rate the
run measured.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"
N = 200


def test_the_throughput_benchmark_prints_rates_profile_and_the_slot_cycle(tmp_path: Path) -> None:
    env = {**os.environ, "PDATA_HOME": str(tmp_path / "home")}
    argv = [sys.executable, str(BENCH), "--n", str(N), "--peers", "xargs", "--workdir", str(tmp_path), "--phases",
            "--settle", "0"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    runners = [f"pilot-data {b} {m}" for b in ("redis", "sqlite") for m in ("bulk", "one-by-one")]
    rates: dict[str, float] = {}
    for name in runners:
        row = next(line for line in lines if line.startswith(name) and "target >=" in line)
        assert f"{4 * N} CU events in history" in row  # New, Pending, Running, Done of each CU stored
        rates[name] = float(row[len(name):].split()[0])
    assert any(line.startswith("xargs -P2") and " 1.00 " in line for line in lines)
    assert any(line.startswith("where the time goes") for line in lines)
    # the host's processor and its Python's speed, next to the header and the results
    hosts = [line for line in lines if line.startswith("host: ")]
    assert len(hosts) == 2 and hosts[0] == hosts[1], hosts
    assert re.search(r"parses a stored CU description in \d+\.\d us", hosts[0]), hosts[0]
    header = next(i for i, line in enumerate(lines) if line.startswith("an agent slot's cycle"))
    assert "start -> spawn" in lines[header + 1] and "end -> start" in lines[header + 1]
    cycles = {line[:34].strip(): line for line in lines[header + 2: header + 2 + len(runners)]}
    assert set(cycles) == set(runners)
    for name, line in cycles.items():
        spans = re.findall(r"(\d+) / (\d+)", line)
        assert len(spans) == 7, line  # every span measured
        cycle = float(line.split()[-1])
        assert abs(cycle - sum(int(mean) for _, mean in spans)) <= 7  # the printed means are rounded
        # two slots cycle at once: their mean cycle bounds the measured rate (start-up and the tail aside)
        assert rates[name] <= 2 / (cycle * 1e-6) * 1.05, (name, rates[name], cycle)
    assert "phases in" not in proc.stdout  # every agent wrote its spans (read_phases warns otherwise)
