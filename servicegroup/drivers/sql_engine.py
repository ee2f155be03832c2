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
        """Create the engine (connections are made lazily, on first use)."""
        self.engine = self._make_engine()
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
        self.engine = None

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
        kwargs: dict[str, Any] = {"pool_size": 2, "max_overflow": 16}
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
