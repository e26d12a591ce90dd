"""SQLite-only behaviour: URL forms, file and schema creation, WAL, refusing foreign schema versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pilotdata.coordination import connect
from pilotdata.coordination.sqlite_backend import SCHEMA_VERSION, SQLiteCoordination
from pilotdata.errors import CoordinationError, DescriptionError


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


def test_an_unopenable_path_is_a_coordination_error(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    with pytest.raises(CoordinationError, match="adir"):
        SQLiteCoordination(f"sqlite:///{tmp_path / 'adir'}", "ns").ping()
