"""States and replica statuses are spelled once: in :mod:`pilotdata.states` and :mod:`pilotdata.records`.

Everywhere else asks the enums (``ComputeUnitState.DONE``, ``is_final``, ``ReplicaStatus.COMPLETE``),
so a renamed or added state cannot be missed in a forgotten ``== "Done"``. Docstrings may name states
in prose; code may not compare against, index with or build one from a literal.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata.records import ReplicaStatus
from pilotdata.states import ComputeUnitState, DataUnitState, PilotState

ROOT = Path(__file__).resolve().parent.parent
STATES = {s.value for enum in (ComputeUnitState, PilotState, DataUnitState) for s in enum}
CHECKED = ("pilotdata/services", "pilotdata/data", "pilotdata/cli", "pilotdata/history", "pilotdata/records.py",
           "agent")


def _literals(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstrings.update(id(s.value) for s in node.body
                              if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def _files() -> list[Path]:
    out: list[Path] = []
    for name in CHECKED:
        path = ROOT / name
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return out


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_state_is_spelled_outside_the_states_module(path: Path) -> None:
    found = [f"{path.relative_to(ROOT)}:{line}: {text!r}" for line, text in _literals(path) if text in STATES]
    assert found == []


def test_replica_statuses_are_spelled_only_in_the_records_module() -> None:
    statuses = {s.value for s in ReplicaStatus} - {"failed"}  # "failed" is also a JSON count: {"failed": 3}
    found = [f"{path.relative_to(ROOT)}:{line}: {text!r}" for path in _files() if path.name != "records.py"
             for line, text in _literals(path) if text in statuses]
    assert found == []


def test_the_check_sees_a_literal_state_in_code_but_not_in_a_docstring(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""Moves a CU to Done."""\n\ndef f(s):\n    """Is it "Done"?"""\n    return s == "Done"\n')
    assert [text for _, text in _literals(sample) if text in STATES] == ["Done"]
