"""Embedded SQLite: the coordination conformance suite on a file of each test, and what only SQLite has
(URL forms, file and schema creation, WAL, refusing foreign schema versions and libraries, the batch
statements, how write transactions wait for each other)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata.coordination import TransitionRequest, connect
from pilotdata.coordination.sqlite_backend import SCHEMA_VERSION, SQLiteCoordination
from pilotdata.coordination.sqlite_backend import backend as sqlite_backend
from pilotdata.coordination.sqlite_backend import schema as sqlite_schema
from pilotdata.errors import CoordinationError, CoordinationUnavailableError, DescriptionError
from tests.backends import BackendURLs
from tests.coordination.conformance import CoordinationConformance
from tests.servers import wait_until


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

    coord._writer_connection().set_progress_handler(step, 1)  # the pushes below are write transactions

    def cost(pilot: str | None, front: bool) -> int:
        steps[0] = 0
        coord.enqueue(["x", "y"], pilot=pilot, front=front)
        return steps[0]

    for front in (False, True):
        assert 0 < cost(None, front) <= cost("p", front) + 50
    assert coord.queued()[:2] == ["x", "y"] and coord.queued()[-2:] == ["x", "y"]
    assert coord.queued("p")[:2] == ["x", "y"] and len(coord.queued()) == 20_004
    coord.close()


# ----------------------------------------------------------------- the library
def test_an_sqlite_library_older_than_upserts_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 23, 1))
    with pytest.raises(CoordinationError, match=r"needs 3\.24\.0 or later"):
        SQLiteCoordination(f"sqlite:///{tmp_path / 'c.sqlite'}", "ns").ping()


def test_an_sqlite_library_without_json_functions_is_refused() -> None:
    class NoJSON:
        def execute(self, sql: str) -> None:
            raise sqlite3.OperationalError("no such table: json_each")

    with pytest.raises(CoordinationError, match=r"without its JSON functions \(no such table: json_each\)"):
        sqlite_schema.check_library(NoJSON())  # type: ignore[arg-type]


# ----------------------------------------------------------- batch statements
ODD_IDS = ['quote"d', "back\\slash", "caf\u00e9 \u2603", "tab\tand\nnewline", "[1, 2]", "{}", "null", "00"]


def test_ids_json_would_quote_or_read_as_other_types_pass_every_batch_statement(tmp_path: Path) -> None:
    """A batch is bound as one JSON text: ids with quotes, escapes, non-ASCII text or the look of JSON
    arrays, objects, null and numbers come back as the same strings, in order, from every step."""
    with SQLiteCoordination(f"sqlite:///{tmp_path / 'c.sqlite'}", "ns") as coord:
        coord.create_many("cu", [(i, {"n": n}) for n, i in enumerate(ODD_IDS)], binder="b")
        assert coord.unbound("b") == ODD_IDS
        cursor = coord.last_cursor()
        moved = coord.transition_many("cu", [TransitionRequest(i, "Pending", queue="") for i in ODD_IDS])
        assert all(r.ok for r in moved) and coord.unbound() == []
        assert [e.id for e in coord.events_after(cursor)] == ODD_IDS
        assert coord.queued() == ODD_IDS
        assert coord.claim("p", limit=100) == ODD_IDS == coord.claimed("p")
        done = [TransitionRequest(i, "Running", pilot="p", owner="p", data={"seen": i}) for i in ODD_IDS]
        done += [TransitionRequest(i, "Done", pilot="p", owner="p", release=True) for i in ODD_IDS]
        assert all(r.ok for r in coord.transition_many("cu", done))
        assert coord.claimed("p") == []
        for n, record in enumerate(coord.get_many("cu", ODD_IDS)):
            assert record is not None and record.state == "Done" and record.data == {"n": n, "seen": ODD_IDS[n]}
        with pytest.raises(Exception, match="already exists"):
            coord.create_many("cu", [("fresh", {}), (ODD_IDS[1], {})])
        assert coord.get_many("cu", ["fresh"]) == [None]


# --------------------------------------------------- how write transactions wait
@pytest.fixture
def coord(tmp_path: Path) -> Iterator[SQLiteCoordination]:
    opened = SQLiteCoordination(f"sqlite:///{tmp_path / 'c.sqlite'}", "ns")
    opened.ping()
    yield opened
    opened.close()


def test_threads_of_one_process_take_turns_on_a_mutex_not_on_sqlites_sleeps(coord: SQLiteCoordination) -> None:
    """While one thread is inside a write transaction, another's write waits for it (the process's write
    mutex) and goes on when it commits; SQLite itself is never asked to wait in the write connection."""
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with coord._write("hold") as conn:
            conn.execute("INSERT INTO queue (ns, qname, pos, cu_id) VALUES ('ns', '', 0, 'first')")
            inside.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(30)
    second = threading.Thread(target=coord.enqueue, args=(["second"],))
    second.start()
    wait_until(lambda: sqlite_backend._WRITE_LOCKS[coord._key].locked() and second.is_alive(), 5, "the wait")
    assert coord.queued() == []  # nothing committed yet
    release.set()
    holder.join(30)
    second.join(30)
    assert coord.queued() == ["first", "second"]
    assert coord._writer_connection().execute("PRAGMA busy_timeout").fetchone()[0] == 0


def test_a_write_inside_a_write_of_the_same_thread_fails_at_once(coord: SQLiteCoordination) -> None:
    with coord._write("outer"), pytest.raises(CoordinationError, match="a write transaction inside another one"):
        coord.enqueue(["x"])
    coord.enqueue(["y"])  # the mutex was not left held
    assert coord.queued() == ["y"]


def test_a_write_waits_for_another_process_then_goes_on(coord: SQLiteCoordination) -> None:
    """Another process's write transaction (here a raw connection) is waited for by trying ``BEGIN
    IMMEDIATE`` again; once it commits, the write goes on, after what the other one wrote."""
    tries: list[str] = []
    coord._writer_connection().set_trace_callback(lambda sql: tries.append(sql) if "BEGIN" in sql else None)
    other = sqlite3.connect(coord.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO queue (ns, qname, pos, cu_id) VALUES ('ns', '', 0, 'other')")
    writer = threading.Thread(target=coord.enqueue, args=(["mine"],))
    writer.start()
    wait_until(lambda: len(tries) >= 3, 10, "three tries of BEGIN IMMEDIATE")
    assert writer.is_alive() and coord.queued() == []
    other.execute("COMMIT")
    other.close()
    writer.join(30)
    assert not writer.is_alive()
    assert coord.queued() == ["other", "mine"]


def test_a_write_blocked_by_another_process_past_the_busy_timeout_is_an_outage(
    coord: SQLiteCoordination, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT", 0.3)
    other = sqlite3.connect(coord.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(CoordinationUnavailableError, match=f"enqueue: SQLite coordination at {coord.path}.*locked"):
            coord.enqueue(["x"])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert coord.queued() == []
    coord.enqueue(["y"])
    assert coord.queued() == ["y"]


def test_a_forked_child_writes_while_a_parent_thread_held_the_mutex(coord: SQLiteCoordination) -> None:
    """The write mutexes do not cross a fork: a thread of the parent holding one cannot block the child."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with sqlite_backend._write_lock(coord._key):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        pid = os.fork()
        if pid == 0:  # the child: its own connections, its own mutexes
            code = 1
            try:
                with SQLiteCoordination(f"sqlite:///{coord.path}", "ns") as child:
                    child.enqueue(["from-child"])
                code = 0
            finally:
                os._exit(code)
        status: list[int] = []

        def reaped() -> bool:
            got, code = os.waitpid(pid, os.WNOHANG)
            if got == pid:
                status.append(code)
            return got == pid

        wait_until(reaped, 30, "the child to exit")
        assert os.waitstatus_to_exitcode(status[0]) == 0
    finally:
        release.set()
        holder.join(30)
    assert coord.queued() == ["from-child"]


def test_records_read_back_exactly_through_the_batch_read(coord: SQLiteCoordination) -> None:
    """Records are read as one JSON row: times keep every bit (SQLite's JSON renders a REAL with 15
    digits, so they come through quote()), and data keeps big integers, nesting and text as stored."""
    data = {"big": 2**70, "neg": -(2**63), "f": 0.1 + 0.2, "text": "caf\u00e9 \u2603 \"q\" \\",
            "nested": [{"a": [1, None]}]}
    coord.create_many("cu", [("a", data), ("b", {})])
    created, updated = 1764944000.1234567, 5e-324
    with sqlite3.connect(coord.path) as raw:
        raw.execute("UPDATE entities SET created = ?, updated = ? WHERE id = 'a'", (created, updated))
    raw.close()
    record = coord.get("cu", "a")
    assert (record.created, record.updated) == (created, updated)
    assert record.data == data and record.times == {"New": record.times["New"]}
    assert [r.id if r else None for r in coord.get_many("cu", ["b", "missing", "a", "b"])] == ["b", None, "a", "b"]
    assert coord.states("cu", ["a", "missing", "a"]) == ["New", None, "New"]
