"""A client killed with SIGKILL part-way through a bulk submit strands nothing (its lease lapses and the
agents adopt what it recorded); several clients at once on the embedded SQLite file."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.conftest import make_lab
from tests.chaos.scenarios import Lab, client_killed_mid_submit, many_sqlite_clients


def test_client_killed_mid_bulk_submit(lab: Lab) -> None:
    outcome = client_killed_mid_submit(lab, n=400, lease=1.5)
    assert outcome.problems() == [], outcome.row()
    assert outcome.cus >= 250


def test_several_clients_at_once_on_the_embedded_sqlite(tmp_path: Path) -> None:
    lab = make_lab("sqlite", tmp_path / "lab")
    try:
        outcome = many_sqlite_clients(lab, clients=4, n_each=40)
    finally:
        lab.close()
    assert outcome.problems() == [], outcome.row()
    assert outcome.cus == 160
