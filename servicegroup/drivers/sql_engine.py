"""The SQL backend's connection layer: engine, transactions, errors.

Kept apart from the coordination logic in :mod:`.sql` because everything
here is about talking to a database safely, whatever is stored:

- which DBAPI each ``sql+<dialect>`` URL uses, with a connect timeout so an
  unreachable server fails in bounded time;
- SQLite transaction handling that actually serializes writers;
- retries of deadlocks and dropped pooled connections;
- translation of database errors into tooz errors that name host:port but
  never a password;
- fork safety: a child process never reuses its parent's pooled sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
import contextlib
import random
import time
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
import tooz
from tooz import coordination

from servicegroup import forksafe
from servicegroup import urls
from servicegroup.drivers import _base

T = TypeVar("T")

#: ``sql+<this>`` -> the SQLAlchemy driver whose DBAPI we install.
DIALECTS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
}
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}

#: Deadlocks / serialization failures (PostgreSQL SQLSTATEs, MySQL error
#: codes) that re-running the whole transaction resolves.
_RETRY_PGCODES = frozenset({"40P01", "40001"})
_RETRY_MYSQL = frozenset({1205, 1213})
_ATTEMPTS = 3


def _drop_pool_in_child(engine: sa.Engine) -> None:
    """Two processes interleaving on one socket corrupt both sessions:
    drop the parent's pooled connections from the child's pool without
    closing them under the parent."""
    engine.dispose(close=False)


#: Seconds any one statement (or a silent network) may take on PostgreSQL
#: and MySQL before the call fails and the heartbeat counts a failure.
STATEMENT_TIMEOUT = 30


class Database:
    """One backend URL: its engine and a way to run transactions on it."""

    def __init__(self, parsed_url: Any, connect_timeout: float,
                 dbapi_options: Mapping[str, str] | None = None) -> None:
        """*dbapi_options*: the URL's query options that are not the driver's
        own (``sslmode``, ``sslrootcert``, ``charset`` ...). They go to the
        DBAPI as they would from a SQLAlchemy URL: liveness connections must
        honour what the operator asked of the records database (TLS above
        all), not silently drop it."""
        self.dialect = parsed_url.scheme.split("+", 1)[1].lower()
        if self.dialect not in DIALECTS:
            raise _base.InvalidOption(f"unsupported SQL dialect {self.dialect!r}")
        self.url = sa.engine.make_url(
            f"{DIALECTS[self.dialect]}://{parsed_url.netloc}{parsed_url.path}"
        ).update_query_dict(dict(dbapi_options or {}))
        self._connect_timeout = connect_timeout
        self._password = self.url.password
        if self.dialect == "sqlite":
            self.where = f"SQLite database {self.url.database or ':memory:'}"
        else:
            host = self.url.host or "localhost"
            port = self.url.port or _DEFAULT_PORTS[self.dialect]
            self.where = f"{self.dialect} server {host}:{port} database {self.url.database}"
        self.engine: sa.Engine | None = None

    def __repr__(self) -> str:
        return urls.redact(self.url.render_as_string(hide_password=True))

    def open(self) -> sa.Engine:
        """Create the engine (connections are made lazily, on first use)."""
        self.engine = self._make_engine()
        forksafe.register(self.engine, _drop_pool_in_child)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
        self.engine = None

    def _connect_args(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """Our connect defaults, minus any the URL sets itself (its value wins)."""
        return {k: v for k, v in defaults.items() if k not in self.url.query}

    def server_connect_args(self) -> dict[str, Any]:
        """DBAPI arguments for PostgreSQL and MySQL connections.

        Our calls run synchronously (see ``_base.SyncResult``): a result's
        ``get(timeout)`` cannot interrupt them, so the connection bounds
        them. Without this, a half-open TCP connection (a partition, a
        server that vanished) holds a heartbeat for the kernel's keepalive
        time, hours. The bounds are generous (:data:`STATEMENT_TIMEOUT`):
        they catch hangs, not slow beats. The URL's own values win.
        """
        ct = max(1, round(self._connect_timeout))
        if self.dialect == "mysql":
            return self._connect_args({
                "connect_timeout": ct, "charset": "utf8mb4",
                "read_timeout": STATEMENT_TIMEOUT, "write_timeout": STATEMENT_TIMEOUT,
            })
        return self._connect_args({
            "connect_timeout": ct, "application_name": "servicegroup",
            "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
            "tcp_user_timeout": STATEMENT_TIMEOUT * 1000,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT * 1000}",
        })

    def _make_engine(self) -> sa.Engine:
        if self.dialect == "sqlite":
            if self.url.host or self.url.port:
                raise coordination.ToozConnectionError(
                    f"{self.where}: a SQLite URL names a file, not a host "
                    f"({self.url.host}:{self.url.port}); use sql+sqlite:///path"
                )
            if self.url.database in (None, "", ":memory:"):
                raise _base.InvalidOption(
                    "an in-memory SQLite database is private to one connection; "
                    "give a file path (sql+sqlite:///path) every member can open"
                )
            engine = sa.create_engine(
                self.url, connect_args=self._connect_args({"timeout": 30, "check_same_thread": False})
            )
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        kwargs: dict[str, Any] = {"pool_size": 2, "max_overflow": 16, "pool_recycle": 3600,
                                  "connect_args": self.server_connect_args()}
        if self.dialect == "mysql":
            # REPEATABLE READ's gap locks deadlock concurrent joins for nothing.
            kwargs["isolation_level"] = "READ COMMITTED"
        return sa.create_engine(self.url, **kwargs)

    def describe(self, exc: BaseException) -> str:
        """One line naming the server and the database's own complaint
        (not SQLAlchemy's, which quotes statements and parameters)."""
        orig = getattr(exc, "orig", None) or exc
        text = str(orig).strip()
        detail = text.splitlines()[0] if text else type(orig).__name__
        if self._password:
            detail = detail.replace(self._password, "***")
        return f"{self.where}: {detail}"

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        """Database errors as tooz errors: cannot talk to the server (down,
        unknown database, bad credentials) -> ToozConnectionError naming
        host:port; anything else from the database -> ToozError."""
        with _base.translate((sa.exc.DBAPIError, sa.exc.ArgumentError), self.describe, tooz.ToozError):
            with _base.translate(
                (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError),
                self.describe,
            ):
                yield

    def run(
        self,
        fn: Callable[[Connection], T],
        *,
        readonly: bool = False,
        conflict: Callable[[], tooz.ToozError] | None = None,
    ) -> T:
        """Run *fn* in one transaction, retrying deadlocks and dropped
        connections; *conflict* builds the error for a primary-key clash.

        Exceptions that are not database errors propagate untouched (after
        the rollback), which lets *fn* abort with its own.
        """
        engine = self.engine
        if engine is None:
            raise tooz.ToozError(f"{self.where}: the coordinator is not started")
        for attempt in range(_ATTEMPTS):
            with self.translated():
                try:
                    with engine.connect() as conn:
                        if readonly:
                            conn.execution_options(servicegroup_readonly=True)
                        with conn.begin():
                            return fn(conn)
                except sa.exc.IntegrityError as exc:
                    if conflict is None:
                        raise
                    raise conflict() from exc
                except sa.exc.DBAPIError as exc:
                    if attempt + 1 < _ATTEMPTS and _retryable(exc):
                        time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
                        continue
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    """Worth re-running the whole transaction: a deadlock, a serialization
    failure, or a pooled connection the server had dropped."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if getattr(orig, "pgcode", None) in _RETRY_PGCODES:
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] in _RETRY_MYSQL


def _sqlite_on_connect(dbapi_conn: Any, record: Any) -> None:
    # Let SQLAlchemy's "begin" event (below) issue BEGIN itself: pysqlite's
    # own deferred BEGIN lets two writers both read, then fail to upgrade.
    dbapi_conn.isolation_level = None
    try:
        dbapi_conn.execute("PRAGMA journal_mode=WAL")  # readers never block the heartbeat
    except Exception:  # noqa: BLE001 - a busy file keeps its mode; harmless
        pass


def _sqlite_on_begin(conn: Connection) -> None:
    # Writes take the database write lock up front (waiting up to the busy
    # timeout), which serializes check-then-insert transactions; a read is
    # one autocommitted SELECT and needs no transaction.
    if not conn.get_execution_options().get("servicegroup_readonly"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
