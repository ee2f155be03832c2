"""The SQL liveness backend's database: its engine and its errors as tooz's.

The engine (bounds on every call, SQLite transactions that serialize
writers, retries of deadlocks and dropped connections, fork safety) is
:mod:`servicegroup.sqlengine`'s, shared with the records repository. What is
this backend's own:

- which database a ``sql+<dialect>://`` URL names, and its query options
  that belong to the DBAPI rather than to the driver (``sslmode`` ...);
- translation of database errors into tooz errors that name host:port
  but never a password;
- running a transaction with a tooz-shaped answer to a primary-key clash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
import contextlib
import threading
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
import tooz
from tooz import coordination

from servicegroup import sqlengine
from servicegroup import urls
from servicegroup.drivers import _base

T = TypeVar("T")

#: The ``sql+<dialect>`` schemes this backend registers.
DIALECTS = ("sqlite", "postgresql", "mysql")

#: Pool of the one engine per URL that every coordinator of a process
#: shares: a process's connections to the server stay at most this many
#: whatever the number of members it runs (each beat holds one briefly).
POOL_SIZE = 2
MAX_OVERFLOW = 14

#: What the server says when it has no connection slot left (PostgreSQL's
#: "too many clients", "remaining connection slots are reserved";
#: MySQL/MariaDB error 1040 "Too many connections").
_NO_SLOTS = ("too many clients", "remaining connection slots", "too many connections")
_NO_SLOTS_HINT = (
    " (the server's max_connections is used up: raise it, or pool the fleet's "
    "connections through PgBouncer in transaction mode, see docs/scale.md)"
)

_SHARED_LOCK = threading.Lock()
#: Engine key -> [engine, number of open Databases using it].
_SHARED: dict[tuple[Any, ...], list[Any]] = {}


class Database:
    """One backend URL: its engine and a way to run transactions on it."""

    def __init__(self, parsed_url: Any, connect_timeout: float, dbapi_options: Mapping[str, str] | None = None) -> None:
        """*dbapi_options*: the URL's query options that are not the driver's
        own (``sslmode``, ``sslrootcert``, ``charset`` ...). They go to the
        DBAPI as they would from a SQLAlchemy URL: liveness connections must
        honour what the operator asked of the records database (TLS above
        all), not silently drop it."""
        self.dialect = parsed_url.scheme.split("+", 1)[1].lower()
        if self.dialect not in DIALECTS:
            raise _base.InvalidOption(f"unsupported SQL dialect {self.dialect!r}")
        self.url = sa.engine.make_url(
            f"{sqlengine.drivername(self.dialect)}://{parsed_url.netloc}{parsed_url.path}"
        ).update_query_dict(dict(dbapi_options or {}))
        self._connect_timeout = connect_timeout
        self._password = self.url.password
        if self.dialect == "sqlite":
            self.where = f"SQLite database {self.url.database or ':memory:'}"
        else:
            host = self.url.host or "localhost"
            port = self.url.port or sqlengine.DEFAULT_PORTS[self.dialect]
            self.where = f"{self.dialect} server {host}:{port} database {self.url.database}"
        self.engine: sa.Engine | None = None

    def __repr__(self) -> str:
        return urls.redact(self.url.render_as_string(hide_password=True))

    def open(self) -> sa.Engine:
        """This process's engine for the URL, shared by every coordinator
        opened on it (connections are made lazily, on first use).

        One engine per URL, not per member: a process running 1,000
        members with an engine each needed more connections than
        PostgreSQL's default ``max_connections`` (100) allows.
        """
        if self.engine is not None:
            return self.engine
        key = self._key()
        with _SHARED_LOCK:
            entry = _SHARED.get(key)
            if entry is None:
                entry = _SHARED[key] = [self._make_engine(), 0]
            entry[1] += 1
            self.engine = entry[0]
        return self.engine

    def close(self) -> None:
        """Stop using the shared engine; the last user disposes of it."""
        engine, self.engine = self.engine, None
        if engine is None:
            return
        key = self._key()
        with _SHARED_LOCK:
            entry = _SHARED.get(key)
            if entry is None or entry[0] is not engine:
                last = True  # not shared (made before a fork, or replaced)
            else:
                entry[1] -= 1
                last = entry[1] <= 0
                if last:
                    del _SHARED[key]
        if last:
            engine.dispose()

    def _key(self) -> tuple[Any, ...]:
        return (self.url.render_as_string(hide_password=False), self._connect_timeout)

    def server_connect_args(self) -> dict[str, Any]:
        """The DBAPI arguments that bound every call (the URL's own win).

        Our calls run synchronously (see ``_base.SyncResult``): a result's
        ``get(timeout)`` cannot interrupt them, so the connection bounds
        them. Without this, a half-open TCP connection (a partition, a
        server that vanished) holds a heartbeat for the kernel's keepalive
        time, hours.
        """
        return sqlengine.connect_args(self.url, self._connect_timeout)

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
            return sqlengine.make_engine(self.url, connect_timeout=self._connect_timeout)
        # A checkout waits no longer than a connect may: a pool held by
        # stuck calls fails the beat in bounded time, like a dead server.
        kwargs: dict[str, Any] = {
            "pool_size": POOL_SIZE,
            "max_overflow": MAX_OVERFLOW,
            "pool_timeout": self._connect_timeout,
        }
        if self.dialect == "mysql":
            # REPEATABLE READ's gap locks deadlock concurrent joins for nothing.
            kwargs["isolation_level"] = "READ COMMITTED"
        return sqlengine.make_engine(self.url, connect_timeout=self._connect_timeout, **kwargs)

    def describe(self, exc: BaseException) -> str:
        """One line naming the server and the database's own complaint
        (not SQLAlchemy's, which quotes statements and parameters)."""
        orig = getattr(exc, "orig", None) or exc
        text = str(orig).strip()
        detail = text.splitlines()[0] if text else type(orig).__name__
        if self._password:
            detail = detail.replace(self._password, "***")
        if any(phrase in detail.lower() for phrase in _NO_SLOTS):
            detail += _NO_SLOTS_HINT
        return f"{self.where}: {detail}"

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        """Database errors as tooz errors: cannot talk to the server (down,
        unknown database, bad credentials) -> ToozConnectionError naming
        host:port; anything else from the database -> ToozError."""
        with _base.translate((sa.exc.DBAPIError, sa.exc.ArgumentError), self.describe, tooz.ToozError):
            with _base.translate(
                (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError, sa.exc.TimeoutError),
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
        for attempt in range(1, sqlengine.ATTEMPTS + 1):
            with self.translated():
                try:
                    with engine.connect() as conn:
                        if readonly:
                            sqlengine.readonly(conn)
                        with conn.begin():
                            return fn(conn)
                except sa.exc.IntegrityError as exc:
                    if conflict is None:
                        raise
                    raise conflict() from exc
                except sa.exc.DBAPIError as exc:
                    if attempt < sqlengine.ATTEMPTS and sqlengine.retryable(exc):
                        sqlengine.pause(attempt)
                        continue
                    raise
        raise AssertionError("unreachable")  # pragma: no cover
