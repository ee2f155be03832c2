"""Every SQL engine the library opens: bounded, retried, fork-safe.

Two parts of the library talk SQL: the records repository
(:mod:`servicegroup.records`) and the SQL liveness backend
(:mod:`servicegroup.drivers.sql`), often on the same database. What makes
talking to a database safe does not depend on what is stored, so it is
decided here once, for both; each caller keeps only its own error
translation (records -> :mod:`servicegroup.errors`, liveness -> tooz errors).

- **Bounds.** Every connection gets a connect timeout and a bound on each
  statement, read and write (:data:`STATEMENT_TIMEOUT`), plus TCP
  keepalives on PostgreSQL: a database host that freezes leaves a
  half-open connection, and without these a call on it waits for the
  kernel's keepalive time, hours. The URL's own value of any of these
  options wins (``?options=-c statement_timeout=5000``, ``?read_timeout=5``).
- **SQLite serializes writers.** pysqlite's implicit ``BEGIN`` is
  deferred: two writers that both read first cannot both upgrade to a
  write lock and fail at once instead of waiting. Here every transaction
  begins ``BEGIN IMMEDIATE`` (waiting up to the busy timeout), except on
  connections marked :func:`readonly`, whose statements autocommit.
- **Retries.** Deadlocks, serialization failures, lock-wait timeouts and
  pooled connections the server dropped are resolved by re-running the
  whole transaction (:func:`retryable`, :data:`ATTEMPTS`, :func:`pause`).
- **Fork safety.** A forked child drops the parent's pooled connections
  without closing them (:mod:`servicegroup.forksafe`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool

from servicegroup import errors
from servicegroup import forksafe
from servicegroup.urls import redact

LOG = logging.getLogger(__name__)

#: Dialects the library is built and tested for.
SUPPORTED_DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb")

#: DBAPI used when a URL names none: the ones this project installs.
DEFAULT_DBAPI = {"postgresql": "psycopg2", "mysql": "pymysql", "mariadb": "pymysql"}

#: Server ports when a URL names none (for messages naming host:port).
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}

#: Seconds to wait for a connection to PostgreSQL or MySQL.
CONNECT_TIMEOUT = 5.0

#: Seconds any one statement (or a silent network) may take before the
#: call fails; SQLite's busy timeout too. Generous: it catches hangs, not
#: slow calls.
STATEMENT_TIMEOUT = 30

#: How many times a transaction is run before a retryable error is final.
ATTEMPTS = 3

#: Execution option of connections whose statements need no write lock.
_READONLY = "servicegroup_readonly"

#: Deadlocks and serialization failures (PostgreSQL SQLSTATEs) and
#: deadlocks and lock-wait timeouts (MySQL error codes).
_RETRY_PGCODES = frozenset({"40P01", "40001"})
_RETRY_MYSQL = frozenset({1205, 1213})


def check_dialect(dialect: str, url: str) -> None:
    """InvalidURL (URL redacted) unless *dialect* is one of
    :data:`SUPPORTED_DIALECTS`: the one place that list is enforced, for the
    records database and the ``db`` liveness URL derived from it."""
    if dialect not in SUPPORTED_DIALECTS:
        raise errors.InvalidURL(
            f"records database dialect {dialect!r} is not supported in {redact(url)}: "
            "use sqlite, postgresql or mysql/mariadb"
        )


def drivername(dialect: str) -> str:
    """SQLAlchemy's ``dialect+dbapi`` for a bare dialect name."""
    return f"{dialect}+{DEFAULT_DBAPI[dialect]}" if dialect in DEFAULT_DBAPI else dialect


def connect_args(
    url: URL, connect_timeout: float = CONNECT_TIMEOUT, statement_timeout: float = STATEMENT_TIMEOUT
) -> dict[str, Any]:
    """The DBAPI arguments that bound every call on *url* (see module
    docstring), minus those the URL sets itself: its own value wins."""
    dialect = url.get_backend_name()
    whole = max(1, math.ceil(connect_timeout))  # libpq and PyMySQL take whole seconds
    bound = max(1, math.ceil(statement_timeout))
    defaults: dict[str, Any]
    if dialect == "postgresql":
        defaults = {
            "connect_timeout": whole,
            "application_name": "servicegroup",
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": bound * 1000,
            "options": f"-c statement_timeout={bound * 1000}",
        }
    elif dialect in ("mysql", "mariadb"):
        defaults = {"connect_timeout": whole, "charset": "utf8mb4", "read_timeout": bound, "write_timeout": bound}
    else:
        defaults = {"timeout": bound, "check_same_thread": False}
    return {k: v for k, v in defaults.items() if k not in url.query}


def make_engine(
    url: URL, *, connect_timeout: float = CONNECT_TIMEOUT, statement_timeout: float = STATEMENT_TIMEOUT, **kwargs: Any
) -> Engine:
    """An engine for *url* (already validated, DBAPI named) with the bounds,
    the SQLite hooks and fork safety; *kwargs* go to ``create_engine``
    (pool sizes, isolation level). Raises SQLAlchemy's and the DBAPI's own
    errors: each caller translates them."""
    dialect = url.get_backend_name()
    if dialect == "sqlite":
        if url.database in (None, "", ":memory:"):
            # One shared in-memory database for every thread, not one each.
            kwargs.setdefault("poolclass", StaticPool)
    else:
        kwargs.setdefault("pool_recycle", 3600)  # below MySQL's default wait_timeout
    engine = sa.create_engine(url, connect_args=connect_args(url, connect_timeout, statement_timeout), **kwargs)
    if dialect == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    forksafe.register(engine, _drop_pool_in_child)
    return engine


def readonly(conn: Connection, value: bool = True) -> Connection:
    """Mark *conn* as needing no write lock (on SQLite its statements then
    autocommit: readers never wait for writers). Returns *conn*."""
    conn.execution_options(**{_READONLY: value})
    return conn


def retryable(exc: sa_exc.DBAPIError) -> bool:
    """Worth re-running the whole transaction: a deadlock, a serialization
    failure, a lock-wait timeout, or a pooled connection the server dropped."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if getattr(orig, "pgcode", None) in _RETRY_PGCODES:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _RETRY_MYSQL


def pause(attempt: int) -> None:
    """Wait a little before retry number *attempt* (from 1), jittered, so
    two transactions that deadlocked do not collide again at once."""
    time.sleep(random.uniform(0.005, 0.05) * attempt)


def _drop_pool_in_child(engine: Engine) -> None:
    # close=False: the sockets belong to the parent; closing them here
    # would send a terminate message on the parent's live sessions.
    engine.dispose(close=False)


def _sqlite_on_connect(dbapi_conn: Any, record: Any) -> None:
    # Hand transaction control to SQLAlchemy's "begin" event (below):
    # pysqlite's own BEGIN is deferred (see module docstring).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        try:
            # Readers no longer block the heartbeat writers (and vice versa).
            cursor.execute("PRAGMA journal_mode=WAL")
        except Exception:  # busy or read-only: keep the current journal
            LOG.debug("could not switch SQLite to WAL", exc_info=True)
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # Writes take the database write lock up front (waiting up to the busy
    # timeout), which serializes check-then-insert transactions.
    if not conn.get_execution_options().get(_READONLY):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
