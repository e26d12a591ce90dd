"""The Pilot-API example scripts in examples/ run on the embedded default and do what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

CASES = {
    "compute_data_coplacement.py": ["compute unit: Done", "output files: ['count.out', 'upper.out']",
                                    "lines counted: 100"],
    "labelled_pilots.py": ["CUs reading site-a data ran at site-a: 5", "CUs reading site-b data ran at site-b: 5",
                           "followed their data: 10/10"],
    "replication.py": ["replicas: 2", "verified replicas: 2 of 2", "after removing the first replica: True",
                       "exported files: 5"],
    "chained_ensemble.py": ["B results: [0, 10, 20, 30]"],
    "coupled_ensemble.py": ["C outputs: [['a0', 'b0'], ['a1', 'b1'], ['a2', 'b2']]"],
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs_and_reports(script: str, tmp_path: Path) -> None:
    env = {**os.environ, "PDATA_HOME": str(tmp_path / "home")}
    env.pop("PDATA_URL", None)
    out = subprocess.run([sys.executable, str(EXAMPLES / script), str(tmp_path / "work")], env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    for line in CASES[script]:
        assert line in out.stdout.splitlines(), f"{line!r} missing from:\n{out.stdout}"
    # embedded default: the coordination file was created under PDATA_HOME, nothing else was needed
    assert (tmp_path / "home" / "coordination.sqlite").exists()
