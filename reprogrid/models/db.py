"""Engines and sessions for SQLite and PostgreSQL, migrated to the latest schema on open.

A forked child never reuses its parent's pooled connections.
A PostgreSQL engine keeps at most one idle connection (``POOL_SIZE``): the
connections a busy worker's threads open besides it are closed as soon as
they are returned, so an idle worker or scheduler holds one connection. A
connection is checked before use (pre-ping) and replaced after
``POOL_RECYCLE_SECONDS``, so one that a server restart, ``idle_session_timeout``
or PgBouncer closed is reconnected, never an error. psycopg never prepares
statements on the server (``prepare_threshold=None``), which PgBouncer's
transaction pooling would hand to another client's connection, and a pooler
that refuses the ``options`` startup parameter gets connections without it.
SQLite runs in WAL mode with a busy timeout and ``BEGIN IMMEDIATE`` transactions,
so several local processes (the CLI, workers, a scheduler) can share one file:
a writer waits for the lock instead of failing half-way through a transaction.
Sessions from ``Database.reads`` begin deferred instead: a long read (``query``,
``export``) never holds the write lock that workers wait for.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, inspect, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Revision ids are the numbers the migration files' names start with ("0008_...").
REVISION_FILES = "[0-9][0-9][0-9][0-9]_*.py"
SQLITE_BUSY_TIMEOUT_MS = 60_000
READ_ONLY_OPTION = "reprogrid_read_only"
BULK_CHUNK = 20_000
BULK_CACHE_KIB = 64 * 1024
# An arbitrary constant: the PostgreSQL advisory lock taken while migrating.
MIGRATION_LOCK_ID = 7_346_221_901
POOL_SIZE = 1
POOL_RECYCLE_SECONDS = 300
STARTUP_PARAMETER_REFUSED = "unsupported startup parameter"


# Every engine open_database made and something still holds: their pools are forgotten
# in a forked child, and closed before an exit without the interpreter's teardown.
_opened: weakref.WeakSet[Engine] = weakref.WeakSet()


class DatabaseUnavailable(RuntimeError):
    """The database cannot be opened: unreachable, refused, damaged, or of a newer schema."""


@dataclass(frozen=True)
class Database:
    """An engine and the session factory bound to it."""

    engine: Engine
    sessions: sessionmaker[Session]
    reads: sessionmaker[Session]  # for transactions that only read

    @property
    def is_sqlite(self) -> bool:
        """True when the store is a SQLite file."""
        return self.engine.dialect.name == "sqlite"

    def dispose(self) -> None:
        """Close pooled connections (call after fork, in the child, and at exit)."""
        self.engine.dispose()


def normalize_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs that name no driver."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str) -> Engine:
    """An engine for ``url`` with reprogrid's connection settings."""
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        # PostgreSQL JIT-compiles any query it expects to be costly, such as a query
        # streaming a million rows: 100-200 ms before the first row, never paid back
        # by reprogrid's queries. Off, unless the URL sets its own options.
        options = {} if "options" in make_url(url).query else {"options": "-c jit=off"}
        engine = create_engine(
            url,
            pool_size=POOL_SIZE,
            pool_recycle=POOL_RECYCLE_SECONDS,
            pool_pre_ping=True,
            connect_args={**options, "prepare_threshold": None},
        )
        event.listen(engine, "do_connect", _connect_without_refused_options)
        return engine
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _connect_without_refused_options(
    dialect: Dialect, _record: object, cargs: list[Any], cparams: dict[str, Any]
) -> Any:
    """Connect; if a pooler refuses the ``options`` startup parameter (PgBouncer does,
    unless told to ignore it), connect without it, JIT then as the server has it."""
    try:
        return dialect.connect(*cargs, **cparams)
    except dialect.loaded_dbapi.OperationalError as exc:
        if "options" not in cparams or STARTUP_PARAMETER_REFUSED not in str(exc):
            raise
        del cparams["options"]  # the engine's own parameters: later connections too
        return dialect.connect(*cargs, **cparams)


def _configure_sqlite_connection(dbapi_connection, _record) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own
    # transaction handling would defer it past the first read).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_sqlite_transaction(connection) -> None:
    read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def open_database(url: str, migrate: bool = True) -> Database:
    """Connect to ``url`` and, unless told not to, bring its schema up to date.

    Raises :class:`DatabaseUnavailable`, with a one-line reason naming the
    database (password hidden), when it cannot be used.
    """
    try:
        engine = create_db_engine(url)
        _opened.add(engine)
        if migrate:
            upgrade(engine)
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseUnavailable(f"database {_shown(url)}: {first_line(exc)}") from exc
    reader = engine.execution_options(**{READ_ONLY_OPTION: True})
    return Database(
        engine,
        sessionmaker(engine, expire_on_commit=False),
        sessionmaker(reader, expire_on_commit=False),
    )


def dispose_all() -> None:
    """Close the pooled connections of every database this process opened and still
    holds (before an exit without the interpreter's teardown, which would close them):
    SQLite folds its write-ahead log into the file as its last connection closes."""
    for engine in list(_opened):
        engine.dispose()


def _forget_pools_in_child() -> None:
    """Give a forked child its own connections: a pool is never shared across a fork."""
    for engine in list(_opened):
        engine.dispose(close=False)  # drop the parent's connections without closing them


os.register_at_fork(after_in_child=_forget_pools_in_child)


def alembic_config() -> Config:
    """Alembic configuration pointing at reprogrid's migrations."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest migration's revision, read from the file names (no Alembic import)."""
    return max(path.name[:4] for path in (MIGRATIONS_DIR / "versions").glob(REVISION_FILES))


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return repr(url)


def first_line(exc: BaseException) -> str:
    """The driver's own message when there is one, on one line."""
    reason = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    return lines[0] if lines else type(reason).__name__


def upgrade(engine: Engine) -> None:
    """Apply pending migrations; a no-op (one cheap query, no Alembic import) when up to date."""
    with engine.connect() as connection:
        current = current_revision(connection)
    if current == head_revision():
        return
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config()
    if current is not None:
        known = {s.revision for s in ScriptDirectory.from_config(config).walk_revisions()}
        if current not in known:
            raise DatabaseUnavailable(
                f"database {_shown(engine.url.render_as_string(hide_password=False))}: its"
                f" schema (revision {current}) is newer than this reprogrid knows; upgrade"
                " reprogrid"
            )
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def current_revision(connection: Connection) -> str | None:
    """The database's schema revision (Alembic's ``alembic_version``); None when new."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def bulk_insert(
    connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Insert many rows through the driver, inside the connection's transaction.

    PostgreSQL gets one ``COPY``; SQLite one prepared ``INSERT`` run by
    ``executemany`` per chunk of rows. Values must already be in their stored
    form (what the column types would write: a signed seed, JSON as text),
    which is what makes this several times faster than a Core insert of dicts.
    """
    names = ", ".join(columns)
    driver = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    statement = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(columns))})"
    cursor = driver.cursor()
    (cache_size,) = cursor.execute("PRAGMA cache_size").fetchone()
    # Indexes on random keys (hashes) touch pages all over their B-tree: keep them in memory.
    cursor.execute(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
    try:
        iterator = iter(rows)
        while chunk := list(itertools.islice(iterator, BULK_CHUNK)):
            cursor.executemany(statement, chunk)
    finally:
        cursor.execute(f"PRAGMA cache_size={cache_size}")
        cursor.close()
