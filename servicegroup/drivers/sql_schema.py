"""Tables of the SQL tooz backend, and the few dialect differences they need.

Liveness is one row per coordinator in ``<prefix>sessions`` whose
``expires_at`` (database server clock, seconds since the epoch) is pushed
forward by each heartbeat. Every other row (membership, lock holder, leader)
points at a session and is alive exactly while its session is: a heartbeat
is therefore one ``UPDATE`` of one row, however many groups and locks the
coordinator holds.

No foreign keys: SQLite does not enforce them by default, and the reaper
(:func:`.sql_sessions.reap`) deletes orphans explicitly anyway.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Dialect

from servicegroup.drivers import _base

#: Length of a session id or lock-holder token (``uuid4().hex``).
TOKEN_LEN = 32

_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,30}$")


class Id(sa.types.TypeDecorator[bytes]):
    """A tooz id: bytes in Python, UTF-8 text in the database.

    MySQL/MariaDB get ``VARBINARY`` instead of ``VARCHAR``: their default
    collations are case-insensitive and (MariaDB) ignore trailing spaces, so
    ``b"Host"`` and ``b"host "`` would collide on the primary key. SQLite and
    PostgreSQL compare text byte-wise by default and keep it readable.
    """

    impl = sa.String(_base.MAX_ID_BYTES)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.VARBINARY(_base.MAX_ID_BYTES))
        return dialect.type_descriptor(sa.String(_base.MAX_ID_BYTES))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name in ("mysql", "mariadb"):
            return value
        return value.decode("utf-8")

    def process_result_value(self, value: str | bytes | None, dialect: Dialect) -> bytes | None:
        if value is None or isinstance(value, bytes):  # NULL, or MySQL's VARBINARY
            return value
        return value.encode("utf-8")


def _token() -> sa.String:
    return sa.String(TOKEN_LEN)


#: Epoch seconds need a double: MySQL's FLOAT is 32-bit (about 2 minutes of
#: resolution at today's epoch).
_Epoch = sa.Double

#: MySQL's plain BLOB stops at 64 KiB; capabilities may be larger.
_Blob = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")


@dataclasses.dataclass(frozen=True)
class Tables:
    """The backend's tables under one name prefix (one ``MetaData``)."""

    metadata: sa.MetaData
    groups: sa.Table
    sessions: sa.Table
    members: sa.Table
    lock_names: sa.Table
    locks: sa.Table
    leaders: sa.Table


def make_tables(prefix: str = "tooz_") -> Tables:
    """Build the table definitions; *prefix* lets two deployments share a
    database (and tests isolate themselves)."""
    if not _PREFIX.match(prefix):
        raise _base.InvalidOption(
            f"option table_prefix={prefix!r} must be a SQL identifier "
            f"(letters, digits, underscore; at most 31 characters)"
        )
    md = sa.MetaData()
    kw: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}
    groups = sa.Table(
        f"{prefix}groups",
        md,
        sa.Column("group_id", Id(), primary_key=True),
        sa.Column("created_at", _Epoch, nullable=False),
        **kw,
    )
    sessions = sa.Table(
        f"{prefix}sessions",
        md,
        sa.Column("session_id", _token(), primary_key=True),
        sa.Column("member_id", Id(), nullable=False),
        sa.Column("created_at", _Epoch, nullable=False),
        sa.Column("beat_at", _Epoch, nullable=False),
        sa.Column("expires_at", _Epoch, nullable=False, index=True),
        **kw,
    )
    members = sa.Table(
        f"{prefix}members",
        md,
        sa.Column("group_id", Id(), primary_key=True),
        sa.Column("member_id", Id(), primary_key=True),
        sa.Column("session_id", _token(), nullable=False, index=True),
        sa.Column("capabilities", _Blob, nullable=True),
        sa.Column("joined_at", _Epoch, nullable=False),
        **kw,
    )
    lock_names = sa.Table(
        f"{prefix}lock_names",
        md,
        sa.Column("name", Id(), primary_key=True),
        **kw,
    )
    locks = sa.Table(
        f"{prefix}locks",
        md,
        sa.Column("name", Id(), primary_key=True),
        sa.Column("holder", _token(), primary_key=True),
        sa.Column("session_id", _token(), nullable=False, index=True),
        sa.Column("shared", sa.Boolean(create_constraint=False), nullable=False),
        **kw,
    )
    leaders = sa.Table(
        f"{prefix}leaders",
        md,
        sa.Column("group_id", Id(), primary_key=True),
        sa.Column("member_id", Id(), nullable=False),
        sa.Column("session_id", _token(), nullable=False, index=True),
        **kw,
    )
    return Tables(md, groups, sessions, members, lock_names, locks, leaders)


def create_all(engine: sa.Engine, tables: Tables, attempts: int = 3) -> None:
    """Create missing tables, tolerating another process doing it at once.

    ``create_all`` checks then creates, so two processes starting together
    can both decide a table is missing; the loser gets "already exists"
    (an IntegrityError on PostgreSQL's catalog, an OperationalError on
    MySQL/SQLite). Trying again sees the winner's tables and does nothing.
    A failure to *connect* is not retried here: it propagates at once.
    """
    for attempt in range(attempts):
        with engine.connect() as conn:
            try:
                with conn.begin():
                    tables.metadata.create_all(conn, checkfirst=True)
                return
            except sa.exc.DBAPIError:
                if attempt == attempts - 1:
                    raise


def insert_ignore(conn: Connection, table: sa.Table, values: dict[str, Any]) -> None:
    """Insert a row unless one with the same primary key exists.

    Dialect-specific because there is no portable form; MySQL's
    ``INSERT IGNORE`` would also swallow unrelated errors, so it gets a
    no-op ``ON DUPLICATE KEY UPDATE`` instead.
    """
    name = conn.dialect.name
    stmt: Any
    if name == "postgresql":
        stmt = postgresql.insert(table).values(values).on_conflict_do_nothing()
    elif name == "sqlite":
        stmt = sqlite.insert(table).values(values).on_conflict_do_nothing()
    elif name in ("mysql", "mariadb"):
        pk = table.primary_key.columns.values()[0]
        stmt = mysql.insert(table).values(values).on_duplicate_key_update({pk.name: pk})
    else:  # pragma: no cover - only the three dialects are registered
        raise NotImplementedError(name)
    conn.execute(stmt)
