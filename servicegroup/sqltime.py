"""The database server's clock, as SQL expressions.

Liveness must not depend on the clocks of the hosts that write heartbeats:
two hosts whose clocks disagree by a minute must still agree on who is up.
So every timestamp that decides liveness is taken by the database server,
inside the statement that writes it, through these two expressions:

- :class:`server_epoch` - seconds since the Unix epoch as a float, for TTL
  arithmetic (``expires_at > server_epoch()``) that is portable across
  SQLite, PostgreSQL and MySQL without dialect-specific interval types;
- :class:`server_utcnow` - the current UTC time as a naive ``DATETIME``,
  for human-facing columns such as ``last_seen_up``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import types
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import expression


class server_epoch(expression.FunctionElement[float]):
    """``now`` on the database server, in seconds since the epoch."""

    type = types.Float()
    inherit_cache = True


class server_utcnow(expression.FunctionElement[Any]):
    """``now`` on the database server, as naive UTC ``DATETIME``."""

    type = types.DateTime()
    inherit_cache = True


@compiles(server_epoch, "sqlite")
def _epoch_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    # julianday has sub-millisecond resolution; unixepoch() only seconds.
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(server_epoch, "postgresql")
def _epoch_pg(element: Any, compiler: Any, **kw: Any) -> str:
    # clock_timestamp(), not now(): now() is frozen at transaction start.
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


@compiles(server_epoch, "mysql")
@compiles(server_epoch, "mariadb")
def _epoch_mysql(element: Any, compiler: Any, **kw: Any) -> str:
    return "CAST(UNIX_TIMESTAMP(SYSDATE(6)) AS DOUBLE)"


@compiles(server_utcnow, "sqlite")
def _now_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


@compiles(server_utcnow, "postgresql")
def _now_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return "(clock_timestamp() AT TIME ZONE 'UTC')"


@compiles(server_utcnow, "mysql")
@compiles(server_utcnow, "mariadb")
def _now_mysql(element: Any, compiler: Any, **kw: Any) -> str:
    return "UTC_TIMESTAMP(6)"
