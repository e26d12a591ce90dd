"""Opening history databases: default URL, SQLite WAL, PostgreSQL, and clear errors without passwords."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from pilotdata.config import default_history_url
from pilotdata.errors import HistoryError, PilotDataError
from pilotdata.history import History, redact_url
from tests.servers import PostgresServer, free_port


def test_schema_tables_and_indexes(history_url: str) -> None:
    with History(history_url) as history:
        insp = inspect(history.engine)
        assert {"history_events", "history_transfers", "history_marks"} <= set(insp.get_table_names())
        event_indexes = {tuple(ix["column_names"]) for ix in insp.get_indexes("history_events")}
        assert {("entity", "entity_id"), ("time",)} <= event_indexes
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("history_events")}
        assert ("source", "cursor") in uniques
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("history_transfers")}
        assert ("source", "cursor") in uniques
    with History(history_url) as again:  # opening an existing database changes nothing
        assert again.dialect in ("sqlite", "postgresql")


def test_default_url_is_a_wal_sqlite_file_in_the_data_dir() -> None:
    with History() as history:
        assert history.url == default_history_url()
        assert Path(history.url.removeprefix("sqlite:///")).is_file()
        with history.read() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"


def test_history_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "elsewhere.sqlite"
    monkeypatch.setenv("PDATA_HISTORY_URL", f"sqlite:///{target}")
    with History() as history:
        assert history.url == f"sqlite:///{target}"
    assert target.is_file()


def test_plain_postgresql_url_uses_psycopg(postgres_server: PostgresServer) -> None:
    url = postgres_server.url.replace("postgresql+psycopg://", "postgresql://")
    with History(url) as history:
        assert history.dialect == "postgresql"
        assert history.url.startswith("postgresql+psycopg://")


def test_unreachable_postgres_names_url_without_password() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(HistoryError) as info:
        History(f"postgresql+psycopg://pdata:Sup3rSecret@127.0.0.1:{port}/history")
    message = str(info.value)
    assert f"postgresql+psycopg://pdata:***@127.0.0.1:{port}/history" in message
    assert "Sup3rSecret" not in message
    assert isinstance(info.value, PilotDataError)


def test_wrong_database_on_a_real_postgres(postgres_server: PostgresServer) -> None:
    url = f"postgresql+psycopg://postgres:pw-xyz@127.0.0.1:{postgres_server.port}/no_such_db"
    with pytest.raises(HistoryError, match="no_such_db") as info:
        History(url)
    assert "pw-xyz" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://root:topsecret@127.0.0.1/h", "unsupported database 'mysql'"),
        ("this is not a url user:topsecret@", "is not a database URL"),
        ("sqlite:////nonexistent-dir/sub/history.sqlite", "nonexistent-dir"),
    ],
)
def test_bad_urls_raise_history_error(url: str, expected: str) -> None:
    with pytest.raises(HistoryError, match=expected) as info:
        History(url)
    assert "topsecret" not in str(info.value)


def test_errors_after_open_are_history_errors(tmp_path: Path) -> None:
    with History(f"sqlite:///{tmp_path / 'h.sqlite'}") as history:
        with pytest.raises(HistoryError, match="cannot probe") as info, history.read("probe") as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
        assert history.url in str(info.value)


def test_redact_url() -> None:
    assert redact_url("s3://AKIA:secretkey@host/bucket") == "s3://AKIA:***@host/bucket"
    assert redact_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("file:///data/x") == "file:///data/x"
    assert redact_url("ssh://user@host/path") == "ssh://user@host/path"
