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
import zlib

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from servicegroup import errors

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
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            with conn.begin():
                yield
        finally:
            _release(conn, text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    elif name in ("mysql", "mariadb"):
        lock = f"servicegroup.records.{conn.engine.url.database}"[:64]
        got = conn.execute(
            text("SELECT GET_LOCK(:n, :t)"), {"n": lock, "t": LOCK_TIMEOUT}
        ).scalar()
        conn.commit()  # no snapshot may predate the other process's migration
        if got != 1:
            raise errors.BackendUnavailable(
                f"timed out after {LOCK_TIMEOUT}s waiting for another process "
                "to finish migrating the records database"
            )
        try:
            with conn.begin():
                yield
        finally:
            _release(conn, text("SELECT RELEASE_LOCK(:n)"), {"n": lock})
    else:
        with conn.begin():
            if name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield


def _lock_key(conn: Connection) -> int:
    # Stable across processes (hash() is salted); per database name.
    return zlib.crc32(f"servicegroup.records.{conn.engine.url.database}".encode())


def _release(conn: Connection, stmt: object, params: dict[str, object]) -> None:
    with contextlib.suppress(Exception):  # a dead connection released it already
        if conn.in_transaction():
            conn.rollback()
        conn.execute(stmt, params)  # type: ignore[call-overload]
        conn.commit()
