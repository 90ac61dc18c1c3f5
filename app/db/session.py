"""Engines and sessions from the settings (the routes' session dependencies are in app/deps.py).

SQLite needs two things to behave like a server database under several writers (API
threads, worker threads, worker processes): WAL journal with a busy timeout, and
transactions that take the write lock up front when they are going to write after
reading (``BEGIN IMMEDIATE``, see `begin_write`). Otherwise two readers that both decide
to write deadlock, and one of them fails with "database is locked".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings

WRITE_LOCK_OPTION = "retain_write_lock"


@lru_cache(maxsize=16)
def engine_for(url: str) -> Engine:
    """One engine (and connection pool) per URL per process."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)

    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below issues BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(WRITE_LOCK_OPTION)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def get_engine(settings: Settings) -> Engine:
    return engine_for(settings.database_url)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return sessionmaker(get_engine(settings), expire_on_commit=False)


def begin_write(session: Session) -> None:
    """Start the session's transaction holding the database write lock on SQLite (BEGIN IMMEDIATE).

    Call it first in a transaction that reads and then writes what it read (claiming a job,
    committing an update): writers then queue on the lock instead of failing. On Postgres it
    only begins the transaction; rows are locked there with SELECT ... FOR UPDATE.
    """
    if session.in_transaction():
        raise RuntimeError("begin_write must start the session's transaction; commit or roll back first")
    session.connection(execution_options={WRITE_LOCK_OPTION: True})


def write_locking(engine: Engine) -> Engine:
    """The engine whose every transaction starts with the write lock on SQLite (see `begin_write`)."""
    return engine.execution_options(**{WRITE_LOCK_OPTION: True}) if engine.dialect.name == "sqlite" else engine
