"""Embedded SQLite: the coordination conformance suite on a file of each test, and what only SQLite has
(URL forms, file and schema creation, WAL, refusing foreign schema versions)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pilotdata.coordination import connect
from pilotdata.coordination.sqlite_backend import SCHEMA_VERSION, SQLiteCoordination
from pilotdata.errors import CoordinationError, DescriptionError
from tests.backends import BackendURLs
from tests.coordination.conformance import CoordinationConformance


@pytest.fixture
def backend_url(backend_urls: BackendURLs, tmp_path: Path) -> str:
    """A fresh SQLite file of this test."""
    return backend_urls.coordination("sqlite", tmp_path)


class TestSQLiteConformance(CoordinationConformance):
    """The shared coordination behaviour on the embedded SQLite backend."""


def test_relative_and_absolute_urls_create_parent_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with connect("sqlite:///rel/dir/c.sqlite", "ns") as coord:
        coord.create("cu", "a", {})
    assert (tmp_path / "rel" / "dir" / "c.sqlite").is_file()
    target = tmp_path / "abs" / "deeper" / "c.sqlite"
    with connect(f"sqlite:///{target}", "ns") as coord:
        assert coord.url == f"sqlite:///{target}"
        coord.ping()
    assert target.is_file()


def test_default_url_is_the_embedded_file_under_pdata_home(tmp_path: Path) -> None:
    with connect() as coord:  # conftest points PDATA_HOME at tmp_path / "pdata-home"
        assert isinstance(coord, SQLiteCoordination)
        assert coord.namespace == "default"
        coord.create("pilot", "p", {})
    assert (tmp_path / "pdata-home" / "coordination.sqlite").is_file()


def test_nothing_is_created_before_first_use(tmp_path: Path) -> None:
    coord = SQLiteCoordination(f"sqlite:///{tmp_path / 'later' / 'c.sqlite'}", "ns")
    assert not (tmp_path / "later").exists()
    coord.close()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:memory", "postgres:///x"])
def test_bad_urls_are_description_errors(url: str) -> None:
    with pytest.raises(DescriptionError, match="sqlite:///"):
        SQLiteCoordination(url, "ns")


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with SQLiteCoordination(f"sqlite:///{path}", "ns") as coord:
        coord.ping()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def test_a_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(CoordinationError, match="schema version 99"):
        SQLiteCoordination(f"sqlite:///{path}", "ns").list_ids("cu")


def test_a_version_1_file_is_upgraded_in_place_and_keeps_its_work(tmp_path: Path) -> None:
    """Version 2 only adds the unbound CUs and binder leases: a file written by version 1 carries on."""
    path = tmp_path / "c.sqlite"
    with SQLiteCoordination(f"sqlite:///{path}", "ns") as coord:
        coord.create("cu", "old", {"description": {"executable": "/bin/true"}})
        coord.transition("cu", "old", "Pending")
        coord.enqueue(["old"])
    with sqlite3.connect(path) as raw:  # back to version 1: without the tables version 2 added
        raw.executescript("DROP TABLE unbound; DROP TABLE leases; PRAGMA user_version = 1;")
    raw.close()
    with SQLiteCoordination(f"sqlite:///{path}", "ns") as coord:
        assert coord.queued() == ["old"]
        coord.create_many("cu", [("new", {})], binder="b")
        assert coord.unbound() == ["new"]
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    raw.close()


def test_an_unopenable_path_is_a_coordination_error(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    with pytest.raises(CoordinationError, match="adir"):
        SQLiteCoordination(f"sqlite:///{tmp_path / 'adir'}", "ns").ping()


def test_a_push_reads_one_end_of_the_queue_not_all_of_it(tmp_path: Path) -> None:
    """A push costs the same on a queue of 20,000 as on one of 10 (it once scanned the whole queue, so a
    million-CU submission was quadratic). Counted in SQLite virtual-machine steps, not timed."""
    coord = connect(f"sqlite:///{tmp_path / 'c.sqlite'}", "ns")
    assert isinstance(coord, SQLiteCoordination)
    coord.enqueue([f"long{i}" for i in range(20_000)])
    coord.enqueue([f"short{i}" for i in range(10)], pilot="p")
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    with coord._connection() as conn:  # the pool's one connection: the pushes below use it
        conn.set_progress_handler(step, 1)

    def cost(pilot: str | None, front: bool) -> int:
        steps[0] = 0
        coord.enqueue(["x", "y"], pilot=pilot, front=front)
        return steps[0]

    for front in (False, True):
        assert cost(None, front) <= cost("p", front) + 50
    assert coord.queued()[:2] == ["x", "y"] and coord.queued()[-2:] == ["x", "y"]
    assert coord.queued("p")[:2] == ["x", "y"] and len(coord.queued()) == 20_004
    coord.close()
