"""The SQL schema of the history (SQLAlchemy 2.x typed declarative) and :class:`History`, the handle
that opens a history database (SQLite file in WAL mode, or PostgreSQL), creates the schema and turns
SQLAlchemy errors into :class:`~pilotdata.errors.HistoryError`.

Three append-only tables; nothing in pilot-data deletes their rows (the only update: a transfer row
written before byte categories existed gets its ``category`` filled in once, see :func:`migrate`):

``history_events`` (:class:`Event`)
    One row per coordination event that is not a transfer record: state transitions (``from_state`` ->
    ``to_state``) and other recorded events (both states ``None``).
``history_transfers`` (:class:`Transfer`)
    One row per transfer record (coordination events with ``entity == "transfer"``).
``history_marks`` (:class:`DrainMark`)
    One row per stored batch that added rows: the cursor of the batch's last event. The newest mark of
    a source is where the writer resumes; cursors are opaque strings, so they are never compared in SQL.

Every row carries ``source`` (coordination namespace + redacted backend URL, see
:func:`pilotdata.history.writer.source_id`) and the coordination ``cursor``; ``UNIQUE(source, cursor)``
on the events and transfers tables is what makes draining idempotent.

Derived from them, and rebuilt from them when needed, the *index* tables of
:mod:`pilotdata.history.index` hold the current view of every ComputeUnit, pilot and run for fast
listing and counting (:mod:`pilotdata.inspect` queries them).

Times are ``float`` epoch seconds (UTC), exactly as the coordination backends stamp them
(:func:`pilotdata.coordination.base.now`): no time-zone conversion, differences are durations.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    select,
    text,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool

from pilotdata.config import default_history_url
from pilotdata.errors import HistoryError
from pilotdata.records import transfer_category
from pilotdata.redaction import redact_url, scrub

__all__ = ["Base", "DrainMark", "Event", "History", "Transfer", "migrate"]

_JSON = JSON().with_variant(JSONB(), "postgresql")
# BIGINT on PostgreSQL; INTEGER on SQLite, where only "INTEGER PRIMARY KEY" is the autoincrementing rowid.
_PK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of the history schema (its ``metadata`` holds every history table)."""


class Event(Base):
    """A coordination event: an entity's state transition, or another recorded event."""

    __tablename__ = "history_events"
    __table_args__ = (
        UniqueConstraint("source", "cursor", name="uq_history_events_source_cursor"),
        Index("ix_history_events_entity", "entity", "entity_id"),
        Index("ix_history_events_time", "time"),
    )

    id: Mapped[int] = mapped_column(_PK, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String)
    """Coordination namespace + redacted backend URL the event was drained from."""
    cursor: Mapped[str] = mapped_column(String)
    """The event's coordination cursor (opaque, unique per source)."""
    entity: Mapped[str] = mapped_column(String)
    """Entity kind (``cu``, ``pilot``, ``du``) or record type."""
    entity_id: Mapped[str] = mapped_column(String)
    from_state: Mapped[str | None] = mapped_column(String)
    """State before the transition; ``None`` for a creation or a non-transition event."""
    to_state: Mapped[str | None] = mapped_column(String)
    """State after the transition; ``None`` for a non-transition event."""
    time: Mapped[float] = mapped_column(Double)
    """Epoch seconds (UTC) stamped by the coordination backend."""
    pilot: Mapped[str | None] = mapped_column(String)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[dict[str, Any]] = mapped_column(_JSON, default=dict)

    def __repr__(self) -> str:
        return (
            f"Event({self.entity} {self.entity_id!r}: {self.from_state} -> {self.to_state} "
            f"at {self.time}, cursor={self.cursor!r})"
        )


class Transfer(Base):
    """A transfer record: ``bytes`` moved from ``source_url`` to ``destination_url`` in ``seconds``."""

    __tablename__ = "history_transfers"
    __table_args__ = (
        UniqueConstraint("source", "cursor", name="uq_history_transfers_source_cursor"),
        Index("ix_history_transfers_du", "du"),
        Index("ix_history_transfers_time", "time"),
        Index("ix_history_transfers_pair", "source_url", "destination_url"),
        Index("ix_history_transfers_run", "source", "run", "category"),
        Index("ix_history_transfers_cu", "source", "cu"),
    )

    id: Mapped[int] = mapped_column(_PK, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String)
    """Coordination namespace + redacted backend URL (not the transfer's origin: see ``source_url``)."""
    cursor: Mapped[str] = mapped_column(String)
    du: Mapped[str] = mapped_column(String)
    """The DataUnit id."""
    bytes: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Double)
    source_url: Mapped[str | None] = mapped_column(String)
    """Where the data came from (PD URL or id, password removed)."""
    destination_url: Mapped[str | None] = mapped_column(String)
    """Where the data went (PD URL or id, password removed)."""
    pilot: Mapped[str | None] = mapped_column(String)
    time: Mapped[float] = mapped_column(Double)
    ok: Mapped[bool]
    category: Mapped[str | None] = mapped_column(String, nullable=True)
    """The byte category (:class:`pilotdata.records.ByteCategory` value): uploaded, replicated, staged,
    linked, cache_hit or output."""
    cu: Mapped[str | None] = mapped_column(String, nullable=True)
    """The ComputeUnit the bytes were moved for (its inputs and outputs), if any."""
    run: Mapped[str | None] = mapped_column(String, nullable=True)
    """The run the bytes belong to (from the record, else from the CU's run)."""
    detail: Mapped[dict[str, Any]] = mapped_column(_JSON, default=dict)
    """Any further keys of the record (``reason``, ``files``, ``source_pd``, ...)."""

    def __repr__(self) -> str:
        return (
            f"Transfer({self.du!r}: {self.bytes} B in {self.seconds} s, {self.source_url} -> "
            f"{self.destination_url}, ok={self.ok})"
        )


class DrainMark(Base):
    """The cursor of the last event of a stored batch: where a writer of ``source`` resumes."""

    __tablename__ = "history_marks"
    __table_args__ = (Index("ix_history_marks_source", "source", "id"),)

    id: Mapped[int] = mapped_column(_PK, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String)
    cursor: Mapped[str] = mapped_column(String)
    time: Mapped[float] = mapped_column(Double)
    """When the batch was stored (epoch seconds)."""
    rows: Mapped[int] = mapped_column(Integer)
    """How many new rows the batch added."""


# ------------------------------------------------------------------------------ the database handle
SUPPORTED_DIALECTS = ("sqlite", "postgresql")
SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another writer's lock before failing."""
POSTGRES_CONNECT_TIMEOUT_S = 10
"""Default ``connect_timeout`` for PostgreSQL (a URL query parameter overrides it)."""
_SCHEMA_LOCK_KEY = 0x70646174  # "pdat": serialises concurrent schema creation on PostgreSQL
_WRITE_LOCK_KEY = 0x70647772  # "pdwr": serialises history writers on PostgreSQL (see History.lock)

class History:
    """One history database: SQLite file (WAL) or PostgreSQL, chosen by SQLAlchemy URL.

    ``History()`` opens :func:`pilotdata.config.default_history_url` (``PDATA_HISTORY_URL`` or a SQLite
    file in the data directory). ``postgresql://`` URLs use the psycopg 3 driver
    (``postgresql+psycopg://user:password@host:port/db``). The schema is created on open (idempotent,
    safe when several processes open the same database at once).

    Every database failure surfaces as :class:`~pilotdata.errors.HistoryError` naming :attr:`url`, which
    never shows a password. Thread-safe: each operation takes its own pooled connection.
    """

    def __init__(self, url: str | None = None, *, echo: bool = False) -> None:
        raw = url or default_history_url()
        self._sa_url = self._parse(raw)
        self.url: str = self._sa_url.render_as_string(hide_password=True)
        """The database URL with the password hidden."""
        self.dialect: str = self._sa_url.get_backend_name()
        """``"sqlite"`` or ``"postgresql"``."""
        self.engine: Engine = self._make_engine(echo)
        try:
            self.create_schema()
        except HistoryError:
            self.engine.dispose()
            raise

    # ------------------------------------------------------------------ opening
    @staticmethod
    def _parse(raw: str) -> URL:
        try:
            sa_url = make_url(raw)
        except (SQLAlchemyError, ValueError) as exc:
            shown = redact_url(raw)
            raise HistoryError(
                f"history URL {shown!r} is not a database URL; expected sqlite:///path or "
                "postgresql+psycopg://user@host:port/db"
            ) from exc
        backend = sa_url.get_backend_name()
        if backend not in SUPPORTED_DIALECTS:
            shown = sa_url.render_as_string(hide_password=True)
            raise HistoryError(
                f"history URL {shown!r}: unsupported database {backend!r}; supported: "
                "sqlite:///path, postgresql+psycopg://user@host:port/db"
            )
        if sa_url.drivername == "postgresql":  # SQLAlchemy's default would be psycopg2
            sa_url = sa_url.set(drivername="postgresql+psycopg")
        return sa_url

    def _make_engine(self, echo: bool) -> Engine:
        kwargs: dict[str, Any] = {"echo": echo}
        memory = self.dialect == "sqlite" and self._sa_url.database in (None, "", ":memory:")
        if memory:
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        elif self.dialect == "postgresql":
            kwargs["pool_pre_ping"] = True
            if "connect_timeout" not in self._sa_url.query:
                kwargs["connect_args"] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
        try:
            engine = create_engine(self._sa_url, **kwargs)
        except ImportError as exc:
            raise HistoryError(
                f"history URL {self.url!r}: database driver missing ({exc}); "
                "for PostgreSQL install pilot-data[postgres] (psycopg)"
            ) from exc
        except SQLAlchemyError as exc:
            raise HistoryError(f"history URL {self.url!r}: {self._reason(exc)}") from exc
        if self.dialect == "sqlite":
            _configure_sqlite(engine, wal=not memory)
        return engine

    def create_schema(self) -> None:
        """Create the history tables and indexes that do not exist yet (idempotent, concurrency-safe)."""
        with self.write("create the schema") as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            Base.metadata.create_all(conn)
            migrate(conn)

    def lock(self, conn: Connection) -> None:
        """Serialise writers of this database for the rest of ``conn``'s transaction.

        SQLite's ``BEGIN IMMEDIATE`` already does; on PostgreSQL an advisory transaction lock makes the
        history writers commit one after another, so the index tables are folded in stream order.
        """
        if self.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITE_LOCK_KEY})

    # ------------------------------------------------------------------ access
    def _reason(self, exc: BaseException) -> str:
        """A one-line reason for ``exc`` without SQL text, parameters or password."""
        orig = exc.orig if isinstance(exc, DBAPIError) else None
        reason = str(orig if orig is not None else exc).strip().splitlines()
        message = reason[0] if reason else type(exc).__name__
        password = self._sa_url.password
        return scrub(message, [str(password)] if password else [])

    @contextmanager
    def guard(self, action: str) -> Iterator[None]:
        """Convert SQLAlchemy errors raised inside into :class:`HistoryError` naming :attr:`url`."""
        try:
            yield
        except SQLAlchemyError as exc:
            raise HistoryError(f"history {self.url}: cannot {action}: {self._reason(exc)}") from exc

    @contextmanager
    def read(self, action: str = "read") -> Iterator[Connection]:
        """A connection in a read transaction; errors become :class:`HistoryError`."""
        with self.guard(action), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self, action: str = "write") -> Iterator[Connection]:
        """A connection in a write transaction, committed on exit (``BEGIN IMMEDIATE`` on SQLite)."""
        with self.guard(action), self.engine.connect() as conn:
            conn.execution_options(pdata_write=True)
            with conn.begin():
                yield conn

    def close(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"History({self.url!r})"


def migrate(conn: Connection) -> None:
    """Bring a history database written by an older pilot-data up to this schema (idempotent).

    Adds the nullable columns and the indexes that tables created earlier lack (``ALTER TABLE ... ADD
    COLUMN``, on SQLite and PostgreSQL alike), then fills in the ``category`` of transfer rows stored
    before categories existed (:func:`pilotdata.records.transfer_category`). Runs inside the schema
    transaction, so concurrent openers do it once.
    """
    added: set[tuple[str, str]] = set()
    inspector = sa_inspect(conn)
    preparer = conn.dialect.identifier_preparer
    for table in Base.metadata.sorted_tables:
        existing = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c for c in table.columns if c.name not in existing and c.nullable]
        for column in missing:
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {preparer.quote(table.name)} "
                                 f"ADD COLUMN {preparer.quote(column.name)} {kind}")
            added.add((table.name, column.name))
        if missing:
            for index in table.indexes:
                index.create(conn, checkfirst=True)
    if (Transfer.__tablename__, "category") in added:
        rows = conn.execute(select(Transfer.id, Transfer.source_url, Transfer.destination_url,
                                   Transfer.detail).where(Transfer.category.is_(None))).all()
        for row in rows:
            category = transfer_category(dict(row.detail or {}), row.source_url, row.destination_url)
            conn.execute(update(Transfer).where(Transfer.id == row.id).values(category=category.value))


def _ensure_wal(cursor: Any) -> None:
    """Switch a new database file to WAL once. Two processes opening a new history at the same moment
    both try; the switch needs the file to itself and does not wait out the busy timeout, so the loser
    retries (bounded) and then finds WAL already set."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    """Busy timeout, WAL, and explicit transactions (``BEGIN IMMEDIATE`` for writes) on pysqlite."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            if wal:
                _ensure_wal(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("pdata_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
