"""Running the alembic migrations, programmatically and under a lock.

Every service runs the migrations on first use, so a fleet that starts at
once runs them many times concurrently. Without a lock two processes both
see an empty version table and both ``CREATE TABLE``: one of them fails.
The whole upgrade therefore runs under a database-wide lock:
``pg_advisory_lock`` on PostgreSQL, ``GET_LOCK`` on MySQL/MariaDB and a
``BEGIN IMMEDIATE`` transaction on SQLite. The loser waits, then finds the
schema at head and does nothing.

No ``alembic.ini`` is needed at runtime: the configuration is built here
and the scripts ship inside the package (``migrations/``).
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
from pathlib import Path
import time
from typing import Any
import zlib

from alembic import command
from alembic.config import Config
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import TextClause

from servicegroup import errors
from servicegroup import sqlengine

#: Where the migration scripts live (shipped as package data).
SCRIPT_LOCATION = Path(__file__).resolve().parent / "migrations"

#: Our own version table: the database may be shared with other alembic
#: users (the SQL liveness driver, the operator's own apps).
VERSION_TABLE = "servicegroup_records_version"

#: Seconds to wait for another process's migration to finish.
LOCK_TIMEOUT = 120


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic Config pointing at the packaged scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(conn: Connection, revision: str = "head") -> None:
    """Upgrade the records schema to *revision* on *conn*, under the lock."""
    with locked_transaction(conn):
        command.upgrade(alembic_config(conn), revision)


def current(engine: Engine) -> str | None:
    """The revision the database is at (``None`` before the first upgrade)."""
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        sqlengine.readonly(conn)
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def head() -> str | None:
    """The newest revision shipped with this package."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@contextlib.contextmanager
def locked_transaction(conn: Connection) -> Iterator[None]:
    """Hold the migration lock and one transaction on *conn* for the block.

    The transaction is begun here, so alembic sees an external transaction
    and leaves committing to us (PostgreSQL and SQLite then apply the whole
    upgrade atomically; MySQL commits each DDL statement regardless).
    """
    name = conn.dialect.name
    if name == "postgresql":
        key = _lock_key(conn)
        # Every statement is bounded (servicegroup.sqlengine); this wait may
        # take longer, for this one transaction (the lock is the session's).
        conn.execute(text(f"SET LOCAL statement_timeout = {LOCK_TIMEOUT * 1000}"))
        try:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        except sa_exc.OperationalError as exc:
            if getattr(exc.orig, "pgcode", None) == "57014":  # query_canceled: the timeout
                raise _lock_timeout() from None
            raise
        conn.commit()
        try:
            with conn.begin():
                yield
        finally:
            _release(conn, text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    elif name in ("mysql", "mariadb"):
        lock = f"servicegroup.records.{conn.engine.url.database}"[:64]
        # Waited for in short server-side waits: the client's read timeout
        # (servicegroup.sqlengine) would cut one long GET_LOCK short.
        deadline = time.monotonic() + LOCK_TIMEOUT
        got = None
        while got != 1 and time.monotonic() < deadline:
            got = conn.execute(text("SELECT GET_LOCK(:n, 1)"), {"n": lock}).scalar()
        conn.commit()  # no snapshot may predate the other process's migration
        if got != 1:
            raise _lock_timeout()
        try:
            with conn.begin():
                yield
        finally:
            _release(conn, text("SELECT RELEASE_LOCK(:n)"), {"n": lock})
    else:
        # SQLite: the engine's BEGIN IMMEDIATE (servicegroup.sqlengine) is the
        # lock; a connection marked read-only would skip it.
        sqlengine.readonly(conn, False)
        with conn.begin():
            yield


def _lock_timeout() -> errors.BackendUnavailable:
    return errors.BackendUnavailable(
        f"timed out after {LOCK_TIMEOUT}s waiting for another process to finish migrating the records database"
    )


def _lock_key(conn: Connection) -> int:
    # Stable across processes (hash() is salted); per database name.
    return zlib.crc32(f"servicegroup.records.{conn.engine.url.database}".encode())


def _release(conn: Connection, stmt: TextClause, params: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):  # a dead connection released it already
        if conn.in_transaction():
            conn.rollback()
        conn.execute(stmt, params)
        conn.commit()
